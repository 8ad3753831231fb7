"""Overlay instance masks, boxes and "name score" labels on an image.

NumPy and Pillow only (no torch), so that ``fcis predict --onnx`` draws without PyTorch; the
pixels are those of torchvision's ``draw_segmentation_masks`` and ``draw_bounding_boxes``
(``fill_labels=True``) with the same colours (tests/test_deploy.py compares them).
"""

from __future__ import annotations

import colorsys
import os
import warnings
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcis.image_io import pil_to_rgb_array, read_rgb

__all__ = ["draw_predictions", "instance_colors"]


def instance_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct, saturated RGB colours (hues spread by the golden ratio)."""
    colors = []
    for i in range(n):
        h = (0.1 + i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95 if i % 2 == 0 else 0.75)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def _numpy(x: Any) -> np.ndarray:
    """A NumPy array of ``x`` (torch tensors are recognised without importing torch)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _uint8_image(image: Any) -> np.ndarray:
    """``uint8[H, W, 3]`` from a path, a PIL image, an ``HxW``/``HxWx3`` array (uint8 or float in
    [0, 1]) or a ``3xHxW`` tensor."""
    if isinstance(image, (str, os.PathLike)):
        image = read_rgb(image)                       # as displayed (EXIF orientation applied)
    if isinstance(image, Image.Image):
        image = pil_to_rgb_array(image)
    if hasattr(image, "detach"):                                        # a 3xHxW tensor
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError("image must be a path, PIL image, HxWx3 array or 3xHxW tensor")
        array = _numpy(image)
        if array.dtype != np.uint8:
            array = np.round(np.clip(array.astype(np.float32), 0, 1) * np.float32(255)).astype(np.uint8)
        return np.ascontiguousarray(array.transpose(1, 2, 0))
    if not isinstance(image, np.ndarray):
        raise ValueError("image must be a path, PIL image, HxWx3 array or 3xHxW tensor")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError("image must be a path, PIL image, HxWx3 array or 3xHxW tensor")
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(image[:, :, :3])


def _blend_masks(canvas: np.ndarray, masks: np.ndarray, colors: Sequence[tuple[int, int, int]],
                 alpha: float) -> np.ndarray:
    """torchvision's draw_segmentation_masks: each mask painted in its colour (pixels of several
    masks black), then ``image · (1 - alpha) + painted · alpha`` in float32, truncated to uint8."""
    painted = canvas.copy()
    for mask, color in zip(masks, colors):
        painted[mask] = color
    painted[masks.sum(0) > 1] = 0
    out = canvas.astype(np.float32) * np.float32(1 - alpha) + painted.astype(np.float32) * np.float32(alpha)
    return out.astype(np.uint8)


def _blend_rles(canvas: np.ndarray, rles: Sequence[dict], colors: list, alpha: float) -> np.ndarray:
    """``draw_segmentation_masks``' blend of COCO RLE masks, one mask at a time and only inside its
    extent (memory: one H×W uint8 mask, not N of them)."""
    from pycocotools import mask as mask_utils

    out = canvas.copy()                                                 # (H, W, 3) uint8
    h, w = out.shape[:2]
    for rle, color in zip(rles, colors):
        if list(rle["size"]) != [h, w]:
            raise ValueError(f"a mask is {tuple(rle['size'])} but the image is {(h, w)}")
        x, y, bw, bh = (int(v) for v in mask_utils.toBbox(rle))
        if bw == 0 or bh == 0:
            continue
        with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 DeprecationWarning
            warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
            m = mask_utils.decode(rle)[y:y + bh, x:x + bw].astype(bool)
        region = out[y:y + bh, x:x + bw]
        blended = region * (1 - alpha) + np.asarray(color, dtype=np.float64) * alpha
        region[m] = blended[m].astype(np.uint8)
    return out


def draw_predictions(image: Any, prediction: dict[str, Any], class_names: Sequence[str] | None = None, *,
                     alpha: float = 0.5, box_width: int = 2, mask_threshold: float = 0.5,
                     draw_boxes: bool = True) -> Image.Image:
    """Draw ``prediction`` (``boxes`` xyxy, ``labels``, ``scores``, ``masks`` ``[N, H, W]`` or
    ``[N, 1, H, W]``, bool or probabilities cut at ``mask_threshold``; NumPy arrays or tensors;
    or instead ``rles``: COCO RLEs, drawn one at a time inside their extent) on ``image``.

    Each instance gets its own colour; labels read ``"name 0.93"`` where ``name`` is
    ``prediction["class_names"][i]``, else ``class_names[label - 1]``, else the label number.
    Returns an RGB PIL image of the input's size.
    """
    canvas = _uint8_image(image)
    boxes = _numpy(prediction.get("boxes", np.zeros((0, 4)))).astype(np.float32).reshape(-1, 4)
    n = boxes.shape[0]
    if n == 0:
        return Image.fromarray(canvas)
    colors = instance_colors(n)
    masks = prediction.get("masks")
    if masks is None and prediction.get("rles") is not None:
        canvas = _blend_rles(canvas, prediction["rles"], colors, alpha)
    if masks is not None:
        masks = _numpy(masks)
        if masks.ndim == 4:
            masks = masks[:, 0]
        masks = masks if masks.dtype == np.bool_ else masks >= mask_threshold
        if masks.shape[-2:] != canvas.shape[:2]:
            raise ValueError(f"masks are {tuple(masks.shape[-2:])} but the image is {tuple(canvas.shape[:2])}")
        if len(masks):
            canvas = _blend_masks(canvas, masks, colors, alpha)
    out = Image.fromarray(canvas)
    if draw_boxes:
        labels = _numpy(prediction.get("labels", np.zeros(n, dtype=np.int64))).reshape(-1).tolist()
        scores = prediction.get("scores")
        scores = _numpy(scores).reshape(-1).tolist() if scores is not None else [None] * n
        names = prediction.get("class_names")
        texts = []
        for i in range(n):
            if names is not None:
                name = names[i]
            elif class_names is not None and 1 <= int(labels[i]) <= len(class_names):
                name = class_names[int(labels[i]) - 1]
            else:
                name = str(int(labels[i]))
            texts.append(name if scores[i] is None else f"{name} {scores[i]:.2f}")
        h, w = canvas.shape[:2]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h - 1)
        _draw_boxes(out, boxes.astype(np.int64).tolist(), texts, colors, box_width)
    return out


def _draw_boxes(image: Image.Image, boxes: list[list[int]], texts: list[str],
                colors: Sequence[tuple[int, int, int]], width: int) -> None:
    """torchvision's draw_bounding_boxes(fill_labels=True, label_colors="white"), in place: the
    box outline, then the label text in white on a tag of the box's colour at its top left."""
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    margin = width + 1
    for box, text, color in zip(boxes, texts, colors):
        draw.rectangle(box, width=width, outline=color, fill=None)
        left, top, right, bottom = draw.textbbox((box[0] + margin, box[1] + margin), text, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=color)
        draw.text((box[0] + margin, box[1] + margin), text, fill=(255, 255, 255), font=font)
