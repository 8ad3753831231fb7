"""COCO-format instance segmentation dataset and its collate function."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from ..image_io import ImageReadError, read_rgb
from .cocofile import check_annotation, load_coco_json
from .errors import DataWarning, data_error

Target = dict[str, Any]
_PYCOCOTOOLS_NUMPY2 = "__array__ implementation doesn't accept a copy keyword"
Transforms = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


def read_image(path: str | os.PathLike) -> tuple[np.ndarray | None, str | None]:
    """Read an image file as RGB ``uint8[H, W, 3]``; returns ``(array, None)`` or ``(None, reason)``.

    The picture as displayed: EXIF orientation applied (annotations refer to the rotated picture),
    16-bit images scaled to 8 bits; see :func:`fcis.image_io.read_rgb`, the one reader of the package.
    """
    try:
        return read_rgb(path), None
    except ImageReadError as e:
        return None, e.reason


def _tight_box(mask: np.ndarray) -> list[float] | None:
    """xyxy pixel-edge box of a non-empty ``[H, W]`` mask (x2 = last column + 1), else None."""
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    if cols.size == 0:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


class CocoInstances(Dataset):
    """Instance segmentation samples from a COCO instances JSON file.

    Each item is ``(image, target)`` or ``None`` for an unreadable image in ``"skip"`` mode:

    - ``image``: ``float32[3, H, W]`` RGB in [0, 1];
    - ``target["boxes"]``: ``float32[N, 4]`` xyxy absolute pixels, the tight box of the decoded
      mask (pixel edges, so ``x2 = last column + 1``), or the COCO ``bbox`` when the mask is empty;
    - ``target["labels"]``: ``int64[N]`` contiguous labels in ``1..num_classes``;
    - ``target["masks"]``: ``uint8[N, H, W]`` in {0, 1};
    - ``target["image_id"]``: ``int``, the COCO image id.

    Crowd annotations (``iscrowd=1``) are left out of the target (COCOeval handles them from
    :attr:`coco`). Images without annotations are kept and give N = 0. Category ids (any integers,
    any order) map to labels ``1..C`` in increasing id order.

    Args:
        json_path: COCO instances JSON (``images``, ``annotations``, ``categories``).
        image_root: folder of the images; default: the JSON's folder. Image path =
            ``image_root / file_name``.
        transforms: ``(image, target) -> (image, target)``, applied last (see ``build_transforms``).
        on_bad_sample: ``"skip"`` drops bad annotations at construction and returns ``None`` for bad
            images (recorded in :attr:`bad_samples`, warned once); ``"raise"`` raises
            :class:`DataError`. A structurally broken file (unknown category...) always raises.

    :attr:`coco` is a ``pycocotools`` COCO object built from the file minus the dropped
    annotations (use it as ground truth for COCOeval). With DataLoader workers, images found bad
    inside a worker are recorded in that worker's copy of the dataset only.
    """

    def __init__(
        self,
        json_path: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        transforms: Transforms | None = None,
        on_bad_sample: str = "skip",
    ) -> None:
        if on_bad_sample not in ("skip", "raise"):
            raise ValueError(f"on_bad_sample must be 'skip' or 'raise', got {on_bad_sample!r}")
        self.json_path = Path(json_path)
        self.image_root = Path(image_root) if image_root is not None else self.json_path.parent
        self.transforms = transforms
        self.on_bad_sample = on_bad_sample
        self.bad_samples: list[tuple[str, str]] = []
        self._bad_images: set[int] = set()  # image ids

        data = load_coco_json(self.json_path)
        sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
        kept, dropped = [], []
        for ann in data["annotations"]:
            clean, reason = check_annotation(ann, *sizes[ann["image_id"]])
            if clean is not None:
                kept.append(clean)
                continue
            reason = f"annotation {ann['id']}: {reason}"
            if on_bad_sample == "raise":
                raise data_error(self.json_path, reason)
            dropped.append((str(self.json_path), reason))
        if dropped:
            self.bad_samples.extend(dropped)
            shown = "; ".join(r for _, r in dropped[:3]) + ("; ..." if len(dropped) > 3 else "")
            warnings.warn(f"{self.json_path}: dropped {len(dropped)} bad annotation(s): {shown}",
                          DataWarning, stacklevel=2)

        self.coco = COCO()
        self.coco.dataset = {**data, "annotations": kept}
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()

        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.num_classes: int = len(cats)
        self.class_names: list[str] = [str(c["name"]) for c in cats]
        self.label_to_cat_id: dict[int, int] = {i + 1: c["id"] for i, c in enumerate(cats)}
        self.cat_id_to_label: dict[int, int] = {c: lab for lab, c in self.label_to_cat_id.items()}
        self.image_ids: list[int] = [img["id"] for img in data["images"]]

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> Path:
        """Path of the image of sample ``index``."""
        return self.image_root / self.coco.imgs[self.image_ids[index]]["file_name"]

    def _bad_image(self, image_id: int, path: Path, reason: str) -> None:
        if self.on_bad_sample == "raise":
            raise data_error(path, reason)
        if image_id not in self._bad_images:
            self._bad_images.add(image_id)
            self.bad_samples.append((str(path), reason))
            warnings.warn(f"{path}: {reason}; sample skipped", DataWarning, stacklevel=3)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target] | None:
        image_id = self.image_ids[index]
        if image_id in self._bad_images:  # found bad before: skip without re-reading or re-warning
            return None
        info = self.coco.imgs[image_id]
        path = self.image_path(index)
        array, reason = read_image(path)
        if array is None:
            assert reason is not None  # read_image says why it read nothing
            self._bad_image(image_id, path, reason)
            return None
        h, w = info["height"], info["width"]
        if array.shape[:2] != (h, w):
            got = f"{array.shape[1]}x{array.shape[0]}"
            self._bad_image(image_id, path, f"image size {got} does not match the annotation file ({w}x{h})")
            return None
        image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255)
        target = self.target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def target(self, index: int) -> Target:
        """The target of sample ``index`` without reading its image (see the class docstring)."""
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        h, w = info["height"], info["width"]
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        masks = np.zeros((len(anns), h, w), dtype=np.uint8)
        boxes = np.zeros((len(anns), 4), dtype=np.float32)
        for k, ann in enumerate(anns):
            with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 DeprecationWarning
                warnings.filterwarnings("ignore", _PYCOCOTOOLS_NUMPY2, DeprecationWarning)
                masks[k] = self.coco.annToMask(ann)
            box = _tight_box(masks[k])
            if box is None:  # polygon too thin to cover a pixel centre: fall back to the COCO box
                x, y, bw, bh = ann["bbox"]
                box = [max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)]
            boxes[k] = box
        labels = [self.cat_id_to_label[a["category_id"]] for a in anns]
        return {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "image_id": int(image_id),
        }


def collate(batch: list[tuple[torch.Tensor, Target] | None]) -> tuple[list[torch.Tensor], list[Target]]:
    """DataLoader ``collate_fn``: drop ``None`` samples, return ``(images, targets)`` lists.

    Images keep their own sizes (``float32[3, H_i, W_i]``); the batch may be empty.
    """
    kept = [s for s in batch if s is not None]
    return [s[0] for s in kept], [s[1] for s in kept]
