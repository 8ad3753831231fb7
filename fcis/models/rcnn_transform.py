"""torchvision's ``GeneralizedRCNNTransform`` (normalise, resize, batch), safe for very thin images."""

from __future__ import annotations

import math

from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform, _resize_image_and_masks, resize_boxes

__all__ = ["RCNNTransform"]


class RCNNTransform(GeneralizedRCNNTransform):
    """``GeneralizedRCNNTransform`` whose resize keeps at least one pixel per side.

    torchvision scales an image by ``min(min_size / short side, max_size / long side)``; for a very
    thin image (2×900 at ``max_size=320``) the short side becomes 0 pixels and ``interpolate``
    raises. Here such a side becomes 1 pixel (image, target masks and boxes alike). Every other
    image is resized exactly as torchvision does (same sizes, same random draw in training).
    """

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        h, w = image.shape[-2:]
        if (self.fixed_size is not None or (self.training and self._skip_resize)
                or self.max_size * min(h, w) >= 2 * max(h, w)):   # the short side keeps >= 2 pixels
            return super().resize(image, target)
        size = self.torch_choice(self.min_size) if self.training else self.min_size[-1]
        scale = min(size / min(h, w), self.max_size / max(h, w))
        out_wh = (max(1, math.floor(w * scale)), max(1, math.floor(h * scale)))
        image, target = _resize_image_and_masks(image, size, self.max_size, target, out_wh)
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
        return image, target
