"""Joint image/target transforms on ``torchvision.transforms.v2``.

Targets are the dicts of :class:`~fcis.data.CocoInstances`: ``boxes`` ``float32[N, 4]`` xyxy pixels,
``labels`` ``int64[N]``, ``masks`` ``uint8[N, H, W]`` (other keys pass through unchanged).
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


def resized_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Size ``(h', w')`` with short side ``min_size`` unless that makes the long side exceed
    ``max_size``, in which case the long side is ``max_size`` (aspect ratio kept, rounded)."""
    short, long = min(h, w), max(h, w)
    new_short, new_long = min_size, round(long * min_size / short)
    if new_long > max_size:
        new_short, new_long = max(1, round(short * max_size / long)), max_size
    return (new_short, new_long) if h <= w else (new_long, new_short)


class ResizeShortSide(v2.Transform):
    """Resize so the short side is ``min_size`` and the long side at most ``max_size``.

    Images are resized bilinearly with antialiasing, masks with nearest neighbour, boxes scaled.
    """

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        if min_size <= 0 or max_size <= 0:
            raise ValueError(f"min_size and max_size must be positive, got {min_size}, {max_size}")
        self.min_size, self.max_size = min_size, max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        return {"size": list(resized_size(h, w, self.min_size, self.max_size))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


class InstanceTransform:
    """Apply a v2 transform to ``(image, target)``; plain tensors in, plain tensors out.

    The image (``float32[3, H, W]``) is wrapped as ``tv_tensors.Image``, boxes as
    ``tv_tensors.BoundingBoxes`` (XYXY, canvas ``(H, W)``) and masks as ``tv_tensors.Mask``; the result
    is unwrapped with boxes ``float32``, labels ``int64`` and masks ``uint8``.
    """

    def __init__(self, transform: v2.Transform) -> None:
        self.transform = transform

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        h, w = image.shape[-2:]
        t = dict(target)
        t["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
        t["masks"] = tv_tensors.Mask(target["masks"])
        img, t = self.transform(tv_tensors.Image(image), t)
        out = {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
        out["boxes"] = out["boxes"].to(torch.float32)
        out["labels"] = out["labels"].to(torch.int64)
        out["masks"] = out["masks"].to(torch.uint8)
        return img.as_subclass(torch.Tensor), out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


def _identity(image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    return image, target


def build_transforms(train: bool, *, min_size: int = 600, max_size: int = 1000, hflip_prob: float = 0.5):
    """The ``transforms`` callable for :class:`~fcis.data.CocoInstances`.

    ``train=True``: random horizontal flip (probability ``hflip_prob``), resize so the short side is
    ``min_size`` and the long side at most ``max_size``, then ``SanitizeBoundingBoxes`` removes
    boxes smaller than 1 pixel together with their labels and masks.

    ``train=False``: identity. The models resize their inputs internally and return predictions at
    the input size, so evaluation images stay at their original size (COCOeval compares at that
    size); ``min_size``/``max_size`` are then unused.
    """
    if not train:
        return _identity
    if not 0.0 <= hflip_prob <= 1.0:
        raise ValueError(f"hflip_prob must be in [0, 1], got {hflip_prob}")
    return InstanceTransform(v2.Compose([
        v2.RandomHorizontalFlip(p=hflip_prob),
        ResizeShortSide(min_size, max_size),
        v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter="default"),
    ]))
