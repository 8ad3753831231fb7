"""Overlay instance masks, boxes and "name score" labels on an image."""

from __future__ import annotations

import colorsys
import os
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

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


def _uint8_image(image: Any) -> torch.Tensor:
    if isinstance(image, (str, os.PathLike)):
        image = read_rgb(image)                       # as displayed (EXIF orientation applied)
    if isinstance(image, Image.Image):
        image = pil_to_rgb_array(image)
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.dtype != np.uint8:
            image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        image = torch.from_numpy(np.ascontiguousarray(image[:, :, :3].transpose(2, 0, 1)))
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError("image must be a path, PIL image, HxWx3 array or 3xHxW tensor")
    image = image.detach().cpu()
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return image


def _blend_rles(canvas: torch.Tensor, rles: Sequence[dict], colors: list, alpha: float) -> torch.Tensor:
    """``draw_segmentation_masks``' blend of COCO RLE masks, one mask at a time and only inside its
    extent (memory: one H×W uint8 mask, not N of them)."""
    from pycocotools import mask as mask_utils

    out = canvas.permute(1, 2, 0).numpy().copy()                       # (H, W, 3) uint8
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
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()


def draw_predictions(image: Any, prediction: dict[str, Any], class_names: Sequence[str] | None = None, *,
                     alpha: float = 0.5, box_width: int = 2, mask_threshold: float = 0.5,
                     draw_boxes: bool = True) -> Image.Image:
    """Draw ``prediction`` (``boxes`` xyxy, ``labels``, ``scores``, ``masks`` ``[N, H, W]`` or
    ``[N, 1, H, W]``, bool or probabilities cut at ``mask_threshold``, or instead ``rles``: COCO
    RLEs, drawn one at a time inside their extent) on ``image``.

    Each instance gets its own colour; labels read ``"name 0.93"`` where ``name`` is
    ``prediction["class_names"][i]``, else ``class_names[label - 1]``, else the label number.
    Returns an RGB PIL image of the input's size.
    """
    canvas = _uint8_image(image)
    boxes = torch.as_tensor(prediction.get("boxes", torch.zeros(0, 4))).detach().cpu().float().reshape(-1, 4)
    n = boxes.shape[0]
    if n == 0:
        return Image.fromarray(canvas.permute(1, 2, 0).numpy())
    colors = instance_colors(n)
    masks = prediction.get("masks")
    if masks is None and prediction.get("rles") is not None:
        canvas = _blend_rles(canvas, prediction["rles"], colors, alpha)
    if masks is not None:
        masks = torch.as_tensor(masks).detach().cpu()
        if masks.ndim == 4:
            masks = masks[:, 0]
        if masks.dtype != torch.bool:
            masks = masks >= mask_threshold
        if masks.shape[-2:] != canvas.shape[-2:]:
            raise ValueError(f"masks are {tuple(masks.shape[-2:])} but the image is {tuple(canvas.shape[-2:])}")
        canvas = draw_segmentation_masks(canvas, masks, alpha=alpha, colors=colors)
    if draw_boxes:
        labels = torch.as_tensor(prediction.get("labels", torch.zeros(n, dtype=torch.int64))).reshape(-1).tolist()
        scores = prediction.get("scores")
        scores = torch.as_tensor(scores).reshape(-1).tolist() if scores is not None else [None] * n
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
        h, w = canvas.shape[-2:]
        boxes = boxes.clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
        # label text on a filled tag of the instance colour, readable on any background
        canvas = draw_bounding_boxes(canvas, boxes, labels=texts, colors=colors, width=box_width,
                                     fill_labels=True, label_colors="white")
    return Image.fromarray(canvas.permute(1, 2, 0).numpy())
