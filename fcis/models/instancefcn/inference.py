"""From objectness and assembled windows to ranked segment proposals: top windows, mask NMS,
pasting into the image, tight boxes."""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import Tensor

from ..mask_paste import MaskWindow, paste_masks_in_frame, paste_probabilities, paste_window, tight_window_box

__all__ = ["mask_nms", "tight_boxes", "rank_proposals", "select_proposals", "proposal_windows"]


def mask_nms(masks: Tensor, iou_threshold: float, limit: int) -> Tensor:
    """Greedy NMS on binary masks ranked best first.

    Args:
        masks: (K, H, W) bool, in score order (best first).
        iou_threshold: a mask whose IoU with a kept one exceeds this is dropped.
        limit: keep at most this many.

    Returns:
        (N,) int64 indices of the kept masks, in order. Empty masks are dropped.
    """
    flat = masks.flatten(1).to(torch.float32)
    area = flat.sum(1)
    inter = flat @ flat.T
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1.0)
    keep: list[int] = []
    suppressed = area <= 0
    for i in range(len(masks)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=masks.device)


def tight_boxes(masks: Tensor) -> Tensor:
    """(N, 4) xyxy pixel-edge boxes of (N, H, W) bool masks (zeros for an empty mask)."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, device=masks.device)
    rows, cols = masks.any(dim=2), masks.any(dim=1)                     # (N, H), (N, W)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).amin(1)
    y1 = torch.where(rows, ar_h + 1, 0).amax(1)
    x0 = torch.where(cols, ar_w, w).amin(1)
    x1 = torch.where(cols, ar_w + 1, 0).amax(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.float32)
    return torch.where((rows.any(1))[:, None], boxes, torch.zeros_like(boxes))


def rank_proposals(mask_probs: Tensor, nms_boxes: Tensor, nms_size: tuple[int, int], *, nms_iou: float,
                   nms_resolution: int, mask_threshold: float, limit: int) -> Tensor:
    """(N,) indices of the windows kept by mask NMS, best first: the masks are pasted on a grid of
    ``nms_resolution`` pixels per cell over an image of size ``nms_size`` (H, W) in which the
    windows are ``nms_boxes`` (K, 4) (the network input, so that the cost does not grow with the
    photo's size)."""
    height, width = nms_size
    r = float(nms_resolution)
    coarse = paste_masks_in_frame(mask_probs, nms_boxes / r, (0, 0, math.ceil(width / r), math.ceil(height / r)))
    return mask_nms(coarse >= mask_threshold, nms_iou, limit)


def select_proposals(scores: Tensor, boxes: Tensor, mask_probs: Tensor, image_size: tuple[int, int], *,
                     nms_iou: float, nms_resolution: int, mask_threshold: float, limit: int,
                     nms_boxes: Tensor | None = None, nms_size: tuple[int, int] | None = None) -> dict[str, Tensor]:
    """Segment proposals of one image from its candidate windows.

    Args:
        scores: (K,) objectness probabilities, descending.
        boxes: (K, 4) window boxes in output-image pixels (may extend past the image).
        mask_probs: (K, m, m) mask probabilities over each window.
        image_size: (H, W) of the output image.
        nms_iou, nms_resolution: mask NMS threshold, and the pixels per cell of the grid the
            NMS masks are pasted on.
        mask_threshold: binarisation of the probabilities.
        limit: detections kept.
        nms_boxes, nms_size: the windows and image size the NMS grid is laid over (default:
            ``boxes`` and ``image_size``; the model passes the network input's).

    Returns:
        torchvision's contract: boxes (N, 4) tight boxes of the binarised masks, labels (N,)
        all 1, scores (N,) descending, masks (N, 1, H, W) probabilities in [0, 1]. Windows whose
        mask is empty at ``mask_threshold`` are dropped.
    """
    height, width = image_size
    keep = rank_proposals(mask_probs, boxes if nms_boxes is None else nms_boxes,
                          image_size if nms_size is None else nms_size, nms_iou=nms_iou,
                          nms_resolution=nms_resolution, mask_threshold=mask_threshold, limit=limit)
    masks = paste_probabilities(mask_probs[keep], boxes[keep], (0, 0, width, height))
    binary = masks >= mask_threshold
    nonempty = binary.flatten(1).any(1)
    keep, masks, binary = keep[nonempty], masks[nonempty], binary[nonempty]
    return {"boxes": tight_boxes(binary).to(scores.dtype),
            "labels": torch.ones(len(keep), dtype=torch.int64, device=scores.device),
            "scores": scores[keep], "masks": masks[:, None]}


def proposal_windows(scores: Tensor, boxes: Tensor, mask_probs: Tensor, image_size: tuple[int, int],
                     keep: Tensor, *, mask_threshold: float, score_threshold: float = 0.0) -> Iterator[MaskWindow]:
    """:func:`select_proposals`' detections one at a time, as MaskWindows (each mask
    pasted in its box window only; same values): the kept windows (``keep``, from
    :func:`rank_proposals`) with ``score >= score_threshold``, empty masks dropped."""
    for k in keep[scores[keep] >= score_threshold].tolist():
        window, x0, y0 = paste_window(mask_probs[k], boxes[k], image_size)
        box = tight_window_box(window >= mask_threshold, x0, y0)
        if box is not None:
            yield MaskWindow(box.to(scores.dtype), 1, float(scores[k]), window, x0, y0, image_size)
