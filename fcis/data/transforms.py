"""Joint image/target transforms on ``torchvision.transforms.v2``.

Targets are the dicts of :class:`~fcis.data.CocoInstances`: ``boxes`` ``float32[N, 4]`` xyxy pixels,
``labels`` ``int64[N]``, ``masks`` ``uint8[N, H, W]`` (other keys pass through unchanged).

Training samples leave :func:`build_transforms` at the network's input size (``resized_size`` of
the model's ``min_size``/``max_size``), whatever the augmentation: the model's own transform
(``RCNNTransform``) then scales them by exactly 1, so what the augmentation did to the content
(its scale jitter above all) is what the network sees. See :class:`ScaleJitterKeepSize`.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

#: The widest content-scale range :class:`ScaleJitterKeepSize` accepts: the "large scale jitter" of
#: Ghiasi et al. (CVPR 2021, Simple Copy-Paste), 0.1x to 2x.
SCALE_JITTER_LIMITS = (0.1, 2.0)
#: Keys of a target with one entry per instance (kept or removed together).
PER_INSTANCE_KEYS = ("boxes", "labels", "masks", "area", "iscrowd")


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


class ScaleJitterKeepSize(v2.Transform):
    """Scale the content by a random factor ``r ~ U(low, high)`` and keep the sample's size ``(H, W)``.

    The scale jitter of Ghiasi et al. (CVPR 2021), whose images are resized by ``r`` and then
    cropped or padded to one fixed canvas, with the canvas here being the sample's own size:

    - ``r > 1``: a random window of ``(round(H / r), round(W / r))`` pixels is cropped first and
      resized to ``(H, W)``, so the sample never grows beyond its size (torchvision's
      ``ScaleJitter`` followed by ``RandomCrop`` would first make an ``r² x`` larger image and
      masks);
    - ``r < 1``: the sample is resized to ``(round(H r), round(W r))`` and padded to ``(H, W)`` at a
      random offset, images with ``fill`` (per channel; the model's ``image_mean`` makes the
      padding 0 after normalisation, as the batch padding is), masks with 0.

    Kept at its size, a sample at the network's input size stays there, and the model's resize
    (which would bring a resized image back to ``min_size``) leaves it as it is: the jitter
    reaches the network. Boxes follow torchvision's kernels (translated, scaled, clamped); use
    :func:`boxes_from_masks` afterwards for the tight boxes of the cropped masks (as
    :func:`build_transforms` does). ``r`` is drawn from torch's RNG.
    """

    def __init__(self, scale_range: tuple[float, float], fill: tuple[float, ...] | float = 0.0) -> None:
        super().__init__()
        low, high = (float(v) for v in scale_range)
        if not SCALE_JITTER_LIMITS[0] <= low <= high <= SCALE_JITTER_LIMITS[1]:
            raise ValueError(f"scale_range must satisfy {SCALE_JITTER_LIMITS[0]} <= low <= high <= "
                             f"{SCALE_JITTER_LIMITS[1]}, got {scale_range}")
        self.scale_range = (low, high)
        self.fill = list(fill) if isinstance(fill, (tuple, list)) else float(fill)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        low, high = self.scale_range
        r = low + (high - low) * float(torch.rand(()))
        if r >= 1.0:   # crop a window of the size that r scales to (h, w)
            ch, cw = max(1, min(h, round(h / r))), max(1, min(w, round(w / r)))
            top = int(torch.randint(h - ch + 1, ()))
            left = int(torch.randint(w - cw + 1, ()))
            return {"crop": (top, left, ch, cw), "size": [h, w], "pad": None}
        nh, nw = max(1, round(h * r)), max(1, round(w * r))
        top = int(torch.randint(h - nh + 1, ()))
        left = int(torch.randint(w - nw + 1, ()))
        return {"crop": None, "size": [nh, nw], "pad": [left, top, w - nw - left, h - nh - top]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["crop"] is not None:
            top, left, ch, cw = params["crop"]
            inpt = self._call_kernel(F.crop, inpt, top=top, left=left, height=ch, width=cw)
        inpt = self._call_kernel(F.resize, inpt, params["size"], antialias=True)
        if params["pad"] is not None:
            fill = self.fill if isinstance(inpt, tv_tensors.Image) else 0
            inpt = self._call_kernel(F.pad, inpt, padding=params["pad"], fill=fill)
        return inpt


def has_pixels(masks: torch.Tensor) -> torch.Tensor:
    """``bool[N]``: which of the masks ``[N, H, W]`` have at least one pixel."""
    return masks.flatten(1).ne(0).any(1)


def select_instances(target: dict[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    """``target`` with only the instances where ``keep`` (``bool[N]``) is True (every key of
    ``PER_INSTANCE_KEYS`` it has; other keys unchanged)."""
    return {k: (v[keep] if k in PER_INSTANCE_KEYS and isinstance(v, torch.Tensor) else v) for k, v in target.items()}


def tight_boxes(masks: torch.Tensor, boxes: torch.Tensor,
                had_pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes that agree with ``masks`` (``[N, H, W]``) after a geometric change, and which instances to keep.

    Returns ``(float32[N, 4] boxes, bool[N] keep)``. Each instance whose mask has pixels gets the
    tight box of its mask (pixel edges: ``x2`` = last column + 1, as
    :class:`~fcis.data.CocoInstances` makes them). An instance whose mask is empty is not kept
    when it had pixels before (``had_pixels``, ``bool[N]``; None: all had), because it was cut or
    covered to nothing; one whose mask was empty from the start (a polygon thinner than a pixel:
    its box is the COCO box) keeps ``boxes``' box, clamped to the image. Boxes narrower or lower
    than 1 pixel are not kept, as in ``v2.SanitizeBoundingBoxes``.
    """
    h, w = masks.shape[-2:]
    out = boxes.to(torch.float32).clone()
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    nonempty = has_pixels(masks)
    if nonempty.any():
        tight = masks_to_boxes(masks[nonempty]).to(torch.float32)
        tight[:, 2:] += 1   # masks_to_boxes gives the last pixel's index
        out[nonempty] = tight
    had = torch.ones_like(nonempty) if had_pixels is None else had_pixels.to(torch.bool)
    wide = (out[:, 2] - out[:, 0] >= 1) & (out[:, 3] - out[:, 1] >= 1)
    return out, (nonempty | ~had) & wide


def boxes_from_masks(target: dict[str, Any], had_pixels: torch.Tensor | None = None) -> dict[str, Any]:
    """``target`` with the boxes of :func:`tight_boxes` and only the instances it keeps (a new dict)."""
    boxes, keep = tight_boxes(target["masks"], target["boxes"], had_pixels)
    return select_instances({**target, "boxes": boxes}, keep)


class InstanceTransform:
    """Apply a v2 transform to ``(image, target)``; plain tensors in, plain tensors out.

    The image (``float32[3, H, W]``) is wrapped as ``tv_tensors.Image``, boxes as
    ``tv_tensors.BoundingBoxes`` (XYXY, canvas ``(H, W)``) and masks as ``tv_tensors.Mask``; the result
    is unwrapped with boxes ``float32``, labels ``int64`` and masks ``uint8``. With ``recompute_boxes``
    the boxes are then recomputed from the masks and instances cut to nothing are removed
    (:func:`boxes_from_masks`).
    """

    def __init__(self, transform: v2.Transform, recompute_boxes: bool = False) -> None:
        self.transform = transform
        self.recompute_boxes = recompute_boxes

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        h, w = image.shape[-2:]
        had_pixels = has_pixels(target["masks"]) if self.recompute_boxes else None
        t = dict(target)
        t["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
        t["masks"] = tv_tensors.Mask(target["masks"])
        img, t = self.transform(tv_tensors.Image(image), t)
        out = {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
        out["boxes"] = out["boxes"].to(torch.float32)
        out["labels"] = out["labels"].to(torch.int64)
        out["masks"] = out["masks"].to(torch.uint8)
        if self.recompute_boxes:
            out = boxes_from_masks(out, had_pixels)
        return img.as_subclass(torch.Tensor), out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r}, recompute_boxes={self.recompute_boxes})"


def _identity(image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    return image, target


#: ``v2.ColorJitter`` settings of the photometric augmentation: brightness, contrast and saturation
#: factors in [0.8, 1.2], in a random order. Mild on purpose: colour is a class cue in many data
#: sets, and no channel swap (``v2.RandomPhotometricDistort`` has one) is made for the same reason.
#: No hue shift: on a float image it costs 70 ms at 320x480 (an RGB-HSV round trip), 15x the rest.
PHOTOMETRIC = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2}


def build_transforms(train: bool, *, min_size: int = 600, max_size: int = 1000, hflip_prob: float = 0.5,
                     scale_jitter: tuple[float, ...] | None = None, photometric: bool = False,
                     fill: tuple[float, ...] | float = 0.0):
    """The ``transforms`` callable for :class:`~fcis.data.CocoInstances`.

    ``train=True``, in this order:

    1. random horizontal flip (probability ``hflip_prob``);
    2. resize so the short side is ``min_size`` and the long side at most ``max_size`` (the
       network's input size; a sample already at that size is left as it is);
    3. with ``scale_jitter = (low, high)`` (not ``(1, 1)``): :class:`ScaleJitterKeepSize`, content
       scaled by ``U(low, high)`` inside the same size (crop above 1, pad with ``fill`` below);
    4. with ``photometric``: ``v2.ColorJitter(**PHOTOMETRIC)`` on the image;
    5. ``SanitizeBoundingBoxes`` removes boxes smaller than 1 pixel together with their labels and
       masks; with scale jitter, boxes are first recomputed as the tight boxes of the transformed
       masks and instances cropped to nothing are removed (:func:`boxes_from_masks`).

    The output is always at the network's input size (see the module docstring).

    ``train=False``: identity. The models resize their inputs internally and return predictions at
    the input size, so evaluation images stay at their original size (COCOeval compares at that
    size); ``min_size``/``max_size`` are then unused.
    """
    if not train:
        return _identity
    if not 0.0 <= hflip_prob <= 1.0:
        raise ValueError(f"hflip_prob must be in [0, 1], got {hflip_prob}")
    steps: list[v2.Transform] = [v2.RandomHorizontalFlip(p=hflip_prob), ResizeShortSide(min_size, max_size)]
    jitter = scale_jitter is not None and tuple(scale_jitter) != (1.0, 1.0)
    if jitter:
        assert scale_jitter is not None
        low, high = scale_jitter
        steps.append(ScaleJitterKeepSize((low, high), fill=fill))
    if photometric:
        steps.append(v2.ColorJitter(**PHOTOMETRIC))
    if not jitter:   # with jitter, boxes_from_masks sanitises (after making the boxes tight)
        steps.append(v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter="default"))
    return InstanceTransform(v2.Compose(steps), recompute_boxes=jitter)
