"""Copy-paste augmentation: instances of one training image pasted onto another.

Ghiasi et al., "Simple Copy-Paste is a Strong Data Augmentation Method for Instance
Segmentation" (CVPR 2021), most useful with little data: both images are scale-jittered
independently (here: each is a sample of the same transformed dataset), a random subset of the
source's instances is pasted onto the target with hard edges (the paper found blending
unnecessary), the target's masks are cut where pasted objects cover them, their boxes are
recomputed from what is left, and target instances covered entirely are removed.

torchvision has no copy-paste; :class:`CopyPaste` wraps a dataset of ``(image, target)`` samples
(those of :class:`~fcis.data.CocoInstances` with its training transforms). Random draws use
torch's RNG, so under :class:`fcis.engine.data.SeededSamples` a sample (both of its images, the
subset) is the same in every run, DataLoader worker and resume.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from .transforms import has_pixels, select_instances, tight_boxes

Sample = tuple[torch.Tensor, dict[str, Any]]

__all__ = ["CopyPaste", "paste_instances"]


def paste_instances(target_sample: Sample, source_sample: Sample, chosen: torch.Tensor) -> Sample:
    """Paste the instances ``chosen`` (``int64[K]`` indices) of ``source_sample`` onto ``target_sample``.

    Both are ``(float32[3, H, W], target)`` samples (see :class:`~fcis.data.CocoInstances`); the
    result has the target's size and keys. The source is laid on the target's image at the
    top-left corner; the parts of it outside the target's ``(H, W)`` are dropped. Pixels under
    the union of the chosen masks take the source's values (no blending). Target masks lose the
    covered pixels; an instance whose box or mask changed gets the tight box of its mask, and one
    left without pixels is removed (as a pasted one cut to nothing by the border is); see
    :func:`~fcis.data.transforms.tight_boxes`. Instances: the target's kept ones first,
    then the pasted ones in ``chosen`` order.
    """
    image, target = target_sample
    src_image, source = source_sample
    h, w = image.shape[-2:]
    sh, sw = min(h, src_image.shape[-2]), min(w, src_image.shape[-1])
    pasted = torch.zeros((len(chosen), h, w), dtype=torch.uint8)
    pasted[:, :sh, :sw] = source["masks"][chosen, :sh, :sw]
    cover = pasted.ne(0).any(0)                                              # bool[H, W]
    out_image = image.clone()
    out_image[:, :sh, :sw] = torch.where(cover[:sh, :sw], src_image[:, :sh, :sw], image[:, :sh, :sw])

    old_masks = target["masks"]
    new_masks = old_masks * (~cover).to(old_masks.dtype)
    boxes, keep = target["boxes"].clone(), torch.ones(len(old_masks), dtype=torch.bool)
    changed = has_pixels(new_masks != old_masks)
    if changed.any():   # tight boxes of the occluded instances; the others keep theirs
        boxes[changed], keep[changed] = tight_boxes(new_masks[changed], boxes[changed],
                                                    has_pixels(old_masks[changed]))
    kept = select_instances({**target, "boxes": boxes, "masks": new_masks}, keep)
    src_boxes, src_keep = tight_boxes(pasted, source["boxes"][chosen], has_pixels(source["masks"][chosen]))
    out = dict(kept)
    out["boxes"] = torch.cat([kept["boxes"], src_boxes[src_keep]])
    out["labels"] = torch.cat([kept["labels"], source["labels"][chosen][src_keep]])
    out["masks"] = torch.cat([kept["masks"], pasted[src_keep]])
    return out_image, out


class CopyPaste(Dataset):
    """A dataset of samples with, at probability ``prob``, another sample's instances pasted on.

    ``dataset[index]`` is the target. With probability ``prob`` (one ``torch.rand`` draw per
    item), a second index is drawn uniformly among the others (the same one in a dataset of one
    image: a second, independently augmented view), and a uniformly random number ``K`` in
    ``1..N`` of its ``N`` instances, chosen at random, is pasted on (:func:`paste_instances`).
    ``None`` samples (unreadable images) come back as they are when they are the target and are
    ignored as the source, as is a source without instances. Memory: both samples are the
    dataset's, at its size (the network's input size in training), and the result has the
    target's size.
    """

    def __init__(self, dataset: Dataset, prob: float) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"copy-paste probability must be in [0, 1], got {prob}")
        self.dataset, self.prob = dataset, float(prob)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # a sized Dataset

    def __getitem__(self, index: int) -> Sample | None:
        sample = self.dataset[index]
        if sample is None or self.prob == 0.0 or float(torch.rand(())) >= self.prob:
            return sample
        n = len(self)
        other = int(torch.randint(n - 1, ())) if n > 1 else 0
        other += int(n > 1 and other >= index)   # any index but this one
        source = self.dataset[other]
        if source is None or len(source[1]["labels"]) == 0:
            return sample
        count = len(source[1]["labels"])
        k = int(torch.randint(1, count + 1, ()))
        chosen = torch.randperm(count)[:k]
        return paste_instances(sample, source, chosen)
