"""torchvision's ``GeneralizedRCNNTransform`` (normalise, resize, batch), safe for very thin images."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform, _resize_image_and_masks, resize_boxes

__all__ = ["RCNNTransform"]


class RCNNTransform(GeneralizedRCNNTransform):
    """``GeneralizedRCNNTransform`` whose resize keeps at least one pixel per side.

    torchvision scales an image by ``min(min_size / short side, max_size / long side)``; for a very
    thin image (2×900 at ``max_size=320``) the short side becomes 0 pixels and ``interpolate``
    raises. Here such a side becomes 1 pixel (image, target masks and boxes alike). Every other
    image is resized exactly as torchvision does (same sizes, same random draw in training).
    Normalisation gives the same values with one full-size temporary instead of two, and a large
    photo is resized one channel at a time at inference (no full-size copy inside ``interpolate``).
    ``postprocess`` (Mask R-CNN's) returns mask probabilities clamped to [0, 1].
    """

    def postprocess(self, result: list[dict[str, Tensor]], image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """torchvision's (boxes to the original size, masks pasted into it), with the pasted mask
        probabilities clamped to [0, 1], the output contract: the sigmoid and the bilinear paste
        stay in it in exact arithmetic, float rounding need not (FCIS's voting passed 1 by 2e-7)."""
        result = super().postprocess(result, image_shapes, original_image_sizes)
        if not self.training:
            for pred in result:
                if "masks" in pred:
                    pred["masks"] = pred["masks"].clamp_(0.0, 1.0)
        return result

    def normalize(self, image: Tensor) -> Tensor:
        """``(image - mean) / std`` as torchvision computes it, with one full-size temporary
        instead of two (a large photo is normalised before it is resized)."""
        if not image.is_floating_point():
            raise TypeError(f"Expected input images to be of floating type (in range [0, 1]), "
                            f"but found type {image.dtype} instead")
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return image.sub(mean[:, None, None]).div_(std[:, None, None])

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        h, w = image.shape[-2:]
        if self.fixed_size is not None or (self.training and self._skip_resize):
            return super().resize(image, target)
        thin = self.max_size * min(h, w) < 2 * max(h, w)              # the short side would keep < 2 pixels
        large = target is None and image.numel() > _CHANNELWISE_NUMEL
        if not (thin or large):
            return super().resize(image, target)
        size = self.torch_choice(self.min_size) if self.training else self.min_size[-1]
        scale = min(size / min(h, w), self.max_size / max(h, w))
        out_h, out_w = max(1, math.floor(h * scale)), max(1, math.floor(w * scale))
        if target is None:   # channel by channel: torch's bilinear kernel copies a 3-channel input whole
            channels = [F.interpolate(image[None, c:c + 1], size=(out_h, out_w), mode="bilinear", align_corners=False)
                        for c in range(image.shape[0])]
            return torch.cat(channels, dim=1)[0], None
        image, target = _resize_image_and_masks(image, size, self.max_size, target, (out_w, out_h))
        target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
        return image, target


#: Images with more values than this (3 x 3344 x 3344) are resized one channel at a time at
#: inference (same sizes; values equal to float rounding), so no full-size copy is made.
_CHANNELWISE_NUMEL = 1 << 25
