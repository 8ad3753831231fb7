"""Paste box-relative P×P masks into image space (bilinear, zero outside the box); and the
bounded-memory path: one detection at a time as a window of the image (:class:`MaskWindow`),
straight into COCO RLE (:func:`window_to_rle`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torch import Tensor

__all__ = ["paste_masks_in_frame", "paste_probabilities", "MaskWindow", "box_window", "paste_window", "window_to_rle",
           "mask_window_to_rle", "tight_window_box", "windows_from_outputs", "detect_windows"]


def paste_masks_in_frame(masks: Tensor, boxes: Tensor, frame: tuple[int, int, int, int]) -> Tensor:
    """Resample each mask into the pixel window ``frame`` = (x0, y0, x1, y1) of the image.

    Args:
        masks: (M, P, P) values on a regular grid over each box.
        boxes: (M, 4) xyxy boxes in image pixels (the masks' extents).
        frame: integer pixel window; output pixel (r, c) has centre (x0 + c + 0.5, y0 + r + 0.5).

    Returns:
        (M, y1 - y0, x1 - x0): bilinear samples of each mask, zero outside its box.
    """
    x0, y0, x1, y1 = frame
    m = masks.shape[0]
    if m == 0 or x1 <= x0 or y1 <= y0:
        return masks.new_zeros(m, max(y1 - y0, 0), max(x1 - x0, 0))
    xs = torch.arange(x0, x1, dtype=masks.dtype, device=masks.device) + 0.5
    ys = torch.arange(y0, y1, dtype=masks.dtype, device=masks.device) + 0.5
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    # grid_sample (align_corners=False): -1 and +1 are the outer edges of the P×P grid = the box.
    gx = (xs[None, :] - boxes[:, 0:1]) / w[:, None] * 2 - 1                  # (M, W')
    gy = (ys[None, :] - boxes[:, 1:2]) / h[:, None] * 2 - 1                  # (M, H')
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[:, 0]


# --- one detection at a time: a mask as a window of the image, straight into RLE ------------------

@dataclass
class MaskWindow:
    """One detection whose mask covers only a window of the image (memory: the window, not H×W).

    box (4,) xyxy image pixels, label in 1..C, score; ``window`` (h, w) mask probabilities of the
    image pixels ``[y0, y0 + h) × [x0, x0 + w)`` (inside the image; zero elsewhere);
    ``image_size`` (H, W)."""

    box: Tensor
    label: int
    score: float
    window: Tensor
    x0: int
    y0: int
    image_size: tuple[int, int]

    def full_mask(self, threshold: float) -> Tensor:
        """bool (H, W): the window ``>= threshold`` placed in an empty image."""
        out = torch.zeros(self.image_size, dtype=torch.bool, device=self.window.device)
        h, w = self.window.shape
        out[self.y0:self.y0 + h, self.x0:self.x0 + w] = self.window >= threshold
        return out


def box_window(box: Tensor, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer pixel window (x0, y0, x1, y1) of the pixels whose centres may lie in ``box``,
    clipped to the image (x1 > x0, y1 > y0 unless the box misses the image)."""
    height, width = image_size
    x0, y0, x1, y1 = (float(v) for v in box)
    fx0, fy0 = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
    return fx0, fy0, max(min(int(math.ceil(x1)), width), fx0), max(min(int(math.ceil(y1)), height), fy0)


def paste_probabilities(masks: Tensor, boxes: Tensor, frame: tuple[int, int, int, int]) -> Tensor:
    """:func:`paste_masks_in_frame` for masks of probabilities: the same values, clamped to [0, 1].
    Bilinear sampling is a convex combination in exact arithmetic, but ``grid_sample``'s float32
    weights can sum to 1 + 1 ulp (a mask of ones pastes to 1.0000001)."""
    return paste_masks_in_frame(masks, boxes, frame).clamp_(0.0, 1.0)


def paste_window(mask: Tensor, box: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, int, int]:
    """One (P, P) mask of probabilities over ``box`` resampled into its pixel window
    (:func:`paste_probabilities`, same values as pasting into the whole image):
    ``(window (h, w), x0, y0)``."""
    frame = box_window(box, image_size)
    return paste_probabilities(mask[None], box[None], frame)[0], frame[0], frame[1]


def window_to_rle(binary: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict:
    """COCO compressed RLE ``{"size": [H, W], "counts": str}`` of an H×W image that is empty but
    for the bool window ``binary`` (h, w) at (x0, y0), without building the H×W mask: the runs
    are found in the window (column-major, as COCO) and compressed by pycocotools."""
    binary = np.asarray(binary, dtype=bool)
    h, w = binary.shape
    if h == 0 or w == 0 or not binary.any():
        counts = [height * width]
    else:
        padded = np.zeros((h + 2, w), dtype=np.int8)
        padded[1:-1] = binary
        d = np.diff(padded, axis=0)                                   # (h + 1, w): +1 run start, -1 run end
        r_start, c_start = np.nonzero(d.T == 1)[::-1]                 # column-major order
        r_end, c_end = np.nonzero(d.T == -1)[::-1]
        starts = (x0 + c_start) * height + y0 + r_start               # global column-major index
        ends = (x0 + c_end) * height + y0 + r_end
        # a run reaching a column's bottom continues at the next column's top: merge those
        joined = np.flatnonzero(ends[:-1] == starts[1:])
        starts, ends = np.delete(starts, joined + 1), np.delete(ends, joined)
        edges = np.empty(2 * len(starts) + 2, dtype=np.int64)
        edges[0], edges[-1] = 0, height * width
        edges[1:-1:2], edges[2:-1:2] = starts, ends
        counts = np.diff(edges).tolist()
        if counts[-1] == 0:                                           # ends on a run of ones
            counts.pop()
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def mask_window_to_rle(det: MaskWindow, threshold: float) -> dict:
    """COCO compressed RLE of ``det``'s mask binarised at ``threshold`` (``>=``)."""
    binary = (det.window >= threshold).cpu().numpy()
    return window_to_rle(binary, det.x0, det.y0, *det.image_size)


def tight_window_box(binary: Tensor, x0: int, y0: int) -> Tensor | None:
    """xyxy pixel-edge box (float32) of a bool window at (x0, y0), or None when it is empty."""
    rows = torch.nonzero(binary.any(dim=1)).flatten()          # the set rows, then columns
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(binary.any(dim=0)).flatten()
    return torch.stack([cols[0] + x0, rows[0] + y0, cols[-1] + 1 + x0, rows[-1] + 1 + y0]).to(torch.float32)


def windows_from_outputs(output: dict[str, Tensor]) -> list[MaskWindow]:
    """MaskWindows of a torchvision-style output (``masks`` (N, 1, H, W)): each mask cropped to
    the pixel window of its box widened to every non-zero pixel. For models without
    ``detect_windows``; bounded memory needs ``detect_windows``."""
    masks = output["masks"]
    masks = masks[:, 0] if masks.ndim == 4 else masks
    size = (int(masks.shape[-2]), int(masks.shape[-1]))
    out = []
    for k in range(len(output["scores"])):
        ys, xs = torch.nonzero(masks[k] > 0, as_tuple=True)
        if ys.numel():
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        else:
            x0 = y0 = x1 = y1 = 0
        out.append(MaskWindow(output["boxes"][k], int(output["labels"][k]), float(output["scores"][k]),
                              masks[k, y0:y1, x0:x1], x0, y0, size))
    return out


def detect_windows(model: torch.nn.Module, images: list[Tensor], *, score_threshold: float = 0.0
                   ) -> list[Iterator[MaskWindow]]:
    """Per image, its detections with ``score >= score_threshold`` as MaskWindows, in
    descending score order, produced one at a time: ``model.detect_windows`` (the three model
    families: memory bounded by a box window, whatever the image size), else ``model(images)``
    cut into windows. The model must be in eval mode."""
    if hasattr(model, "detect_windows"):
        return model.detect_windows(images, score_threshold=score_threshold)  # type: ignore[operator]
    outputs = model(images)
    return [iter([d for d in windows_from_outputs(o) if d.score >= score_threshold]) for o in outputs]
