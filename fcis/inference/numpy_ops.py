"""The NumPy operations of ONNX inference (no torch), each the float32 twin of the PyTorch op that
the eager model uses, and tested against it in tests/test_numpy_ops.py:

============================  =================================================================
here                          PyTorch original
============================  =================================================================
:func:`resize_bilinear`       ``F.interpolate(mode="bilinear", align_corners=False)``
:func:`resized_size`          ``GeneralizedRCNNTransform``'s resizing rule
:func:`box_iou`               ``torchvision.ops.box_iou``
:func:`nms`                   ``torchvision.ops.nms``
:func:`batched_nms`           ``torchvision.ops.batched_nms`` (both of its code paths)
:func:`paste_masks_in_frame`  :func:`fcis.models.mask_paste.paste_masks_in_frame`
:func:`vote_masks`            :func:`fcis.models.fcis.mask_voting.vote_masks` (mask voting)
:func:`masks_to_boxes_or_keep` :func:`fcis.models.fcis.mask_voting.masks_to_boxes_or_keep`
============================  =================================================================

Boxes are float32 (N, 4) xyxy in pixels; masks are (K, P, P) grids over their boxes.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

__all__ = ["resize_bilinear", "resized_size", "box_iou", "nms", "batched_nms", "paste_masks_in_frame",
           "vote_in_frame", "voted_masks_in_frames", "vote_masks", "masks_to_boxes_or_keep", "Frame"]

#: An integer pixel window (x0, y0, x1, y1) of the image: columns x0..x1-1, rows y0..y1-1.
Frame = tuple[int, int, int, int]


# --- resizing --------------------------------------------------------------------------------------

def _linear_indices(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's bilinear (align_corners=False) source indices and weights along one axis, in
    float32 as its CPU kernel computes them."""
    scale = np.float32(in_size) / np.float32(out_size)
    real = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    real = np.maximum(real, np.float32(0))
    i0 = real.astype(np.int64)
    i1 = i0 + (i0 < in_size - 1)
    l1 = np.clip(real - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, i1, np.float32(1) - l1, l1


def resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``torch.nn.functional.interpolate(x[None], (out_h, out_w), mode="bilinear",
    align_corners=False)[0]`` for a float32 (C, H, W) array -> (C, out_h, out_w)."""
    _, h, w = x.shape
    y0, y1, wy0, wy1 = _linear_indices(h, out_h)
    x0, x1, wx0, wx1 = _linear_indices(w, out_w)
    top, bottom = x[:, y0], x[:, y1]                                      # (C, out_h, W)
    t = top[:, :, x0] * wx0 + top[:, :, x1] * wx1
    b = bottom[:, :, x0] * wx0 + bottom[:, :, x1] * wx1
    return (t * wy0[:, None] + b * wy1[:, None]).astype(np.float32)


def resized_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """GeneralizedRCNNTransform's resized (h, w): short side ``min_size``, long side <= ``max_size``,
    at least 1 pixel per side (``fcis.models.rcnn_transform.RCNNTransform``)."""
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return max(1, int(math.floor(float(h) * scale))), max(1, int(math.floor(float(w) * scale)))


# --- boxes -----------------------------------------------------------------------------------------

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """torchvision.ops.box_iou in float32: (N, 4), (M, 4) -> (N, M)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """torchvision.ops.nms: (N, 4), (N,) -> int64 indices kept, by decreasing score (greedy;
    a box is suppressed by a kept one whose IoU with it is > ``iou_threshold``)."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = np.arange(i + 1, len(order))
        rest = rest[~suppressed[rest]]
        if rest.size == 0:
            break
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[ovr.astype(np.float64) > iou_threshold]] = True
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, iou_threshold: float) -> np.ndarray:
    """torchvision.ops.batched_nms (NMS per value of ``idxs``), including its choice between the
    coordinate-offset trick (up to 1000 boxes) and one NMS per class, so that float rounding
    matches too. (N, 4), (N,), (N,) -> int64 indices kept, by decreasing score."""
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if boxes.size > 4000:
        keep_mask = np.zeros(len(scores), dtype=bool)
        for c in np.unique(idxs):
            where = np.nonzero(idxs == c)[0]
            keep_mask[where[nms(boxes[where], scores[where], iou_threshold)]] = True
        keep = np.nonzero(keep_mask)[0]
        return keep[np.argsort(-scores[keep], kind="stable")]
    offsets = idxs.astype(np.float32) * (boxes.max() + np.float32(1))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


# --- masks -----------------------------------------------------------------------------------------

def _sample_weights(coord: np.ndarray, size: int) -> np.ndarray:
    """(K, L) grid_sample coordinates (align_corners=False, zero padding) -> (K, L, size) bilinear
    weights over the ``size`` source positions."""
    ix = ((coord + np.float32(1)) * np.float32(size) - np.float32(1)) / np.float32(2)
    i0 = np.floor(ix)
    w1 = ix - i0
    w0 = (i0 + np.float32(1)) - ix
    i0 = i0.astype(np.int64)
    out = np.zeros(coord.shape + (size,), dtype=np.float32)
    grid: np.ndarray = np.indices(coord.shape)
    k, l = grid
    for idx, wt in ((i0, w0), (i0 + 1, w1)):
        ok = (idx >= 0) & (idx < size)
        out[k[ok], l[ok], idx[ok]] = wt[ok]
    return out


def _frame_weights(masks: np.ndarray, boxes: np.ndarray, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights of the frame's columns (K, w', P) and rows (K, h', P) over each mask's grid;
    pasted = wy @ mask @ wx.T (grid_sample's arithmetic, separated by axis)."""
    x0, y0, x1, y1 = frame
    xs = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5)
    ys = np.arange(y0, y1, dtype=np.float32) + np.float32(0.5)
    w = np.maximum(boxes[:, 2] - boxes[:, 0], np.float32(1e-3))
    h = np.maximum(boxes[:, 3] - boxes[:, 1], np.float32(1e-3))
    gx = (xs[None, :] - boxes[:, 0:1]) / w[:, None] * np.float32(2) - np.float32(1)
    gy = (ys[None, :] - boxes[:, 1:2]) / h[:, None] * np.float32(2) - np.float32(1)
    return _sample_weights(gx, masks.shape[-1]), _sample_weights(gy, masks.shape[-2])


def paste_masks_in_frame(masks: np.ndarray, boxes: np.ndarray, frame: Frame) -> np.ndarray:
    """fcis.models.mask_paste.paste_masks_in_frame: (K, P, P) masks over (K, 4) boxes, bilinear,
    zero outside the box -> (K, y1 - y0, x1 - x0) in the pixel window ``frame``."""
    x0, y0, x1, y1 = frame
    k = masks.shape[0]
    if k == 0 or x1 <= x0 or y1 <= y0:
        return np.zeros((k, max(y1 - y0, 0), max(x1 - x0, 0)), dtype=np.float32)
    wx, wy = _frame_weights(masks, boxes, frame)
    return np.matmul(np.matmul(wy, masks), wx.transpose(0, 2, 1))


def vote_in_frame(masks: np.ndarray, boxes: np.ndarray, weights: np.ndarray, frame: Frame) -> np.ndarray:
    """The ``weights``-weighted average of :func:`paste_masks_in_frame` over the K masks, (h', w'),
    as one matrix product: [w_k · wy_k @ mask_k]_k (h', K·P) @ [wx_k.T]_k (K·P, w')."""
    x0, y0, x1, y1 = frame
    k, p = masks.shape[0], masks.shape[-1]
    if k == 0 or x1 <= x0 or y1 <= y0:
        return np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=np.float32)
    wx, wy = _frame_weights(masks, boxes, frame)
    left = np.matmul(wy, masks) * weights[:, None, None]                   # (K, h', P)
    left = left.transpose(1, 0, 2).reshape(y1 - y0, k * p)
    right = wx.transpose(0, 2, 1).reshape(k * p, x1 - x0)
    return (left @ right) / max(weights.sum(dtype=np.float32), np.float32(1e-12))


def _frame(boxes: np.ndarray, height: int, width: int) -> Frame:
    """Smallest integer pixel window holding every box, clipped to the image."""
    return (max(int(math.floor(float(boxes[:, 0].min()))), 0), max(int(math.floor(float(boxes[:, 1].min()))), 0),
            min(int(math.ceil(float(boxes[:, 2].max()))), width), min(int(math.ceil(float(boxes[:, 3].max()))), height))


def voted_masks_in_frames(kept_boxes: np.ndarray, kept_labels: np.ndarray, cand_boxes: np.ndarray,
                          cand_scores: np.ndarray, cand_masks: np.ndarray, image_size: tuple[int, int], *,
                          iou: float, min_score: float, voting: bool = True,
                          kept_index: np.ndarray | None = None,
                          binarize_at: float | None = None) -> Iterator[tuple[Frame, np.ndarray]]:
    """Mask voting, one kept detection at a time: yields ``(frame, voted)`` where ``voted``
    (y1 - y0, x1 - x0) is the detection's mask inside ``frame`` (zero outside it).

    kept_boxes (N, 4), kept_labels (N,) in 1..C: the detections after NMS, in image pixels.
    cand_boxes (M, 4), cand_scores (M, C+1), cand_masks (M, C+1, P, P): every candidate.
    The candidates whose box IoU with the kept box is >= ``iou`` and whose class score is
    > ``min_score`` vote, weighted by that score; ``voting=False`` pastes each detection's own
    mask (its candidate index in ``kept_index``). ``binarize_at``: the official voting
    (``mv_kernel.cu``): each voter's pasted mask is binarised at this threshold before the
    score-weighted average (``FCISConfig.voting_binarize``). ``voted`` is clipped to [0, 1] (float32
    rounding of the average can pass 1 by a few ulps), as the PyTorch twin.
    """
    height, width = image_size
    overlaps = box_iou(kept_boxes, cand_boxes) if voting and len(kept_boxes) else None
    for n in range(len(kept_boxes)):
        c = int(kept_labels[n])
        if voting:
            assert overlaps is not None
            members = np.nonzero((overlaps[n] >= np.float32(iou))
                                 & (cand_scores[:, c] > np.float32(min_score)))[0]
            if members.size == 0:                         # only possible with a degenerate box
                members = np.array([int(np.argmax(overlaps[n]))])
        else:
            assert kept_index is not None
            members = np.array([int(kept_index[n])])
        boxes = cand_boxes[members]
        frame = _frame(np.concatenate([boxes, kept_boxes[n:n + 1]]), height, width)
        if voting and binarize_at is not None:
            w = cand_scores[members, c]
            pasted = paste_masks_in_frame(cand_masks[members, c], boxes, frame) >= np.float32(binarize_at)
            voted = (w[:, None, None] * pasted).sum(0) / max(w.sum(dtype=np.float32), np.float32(1e-12))
        else:
            voted = vote_in_frame(cand_masks[members, c], boxes, cand_scores[members, c], frame)
        yield frame, np.clip(voted, np.float32(0), np.float32(1), out=voted)


def vote_masks(kept_boxes: np.ndarray, kept_labels: np.ndarray, cand_boxes: np.ndarray, cand_scores: np.ndarray,
               cand_masks: np.ndarray, image_size: tuple[int, int], *, iou: float, min_score: float,
               voting: bool = True, kept_index: np.ndarray | None = None,
               binarize_at: float | None = None) -> np.ndarray:
    """fcis.models.fcis.mask_voting.vote_masks: (N, H, W) float32 image-space masks of the kept
    detections (arguments as :func:`voted_masks_in_frames`)."""
    height, width = image_size
    out = np.zeros((len(kept_boxes), height, width), dtype=np.float32)
    frames = voted_masks_in_frames(kept_boxes, kept_labels, cand_boxes, cand_scores, cand_masks, image_size,
                                   iou=iou, min_score=min_score, voting=voting, kept_index=kept_index,
                                   binarize_at=binarize_at)
    for n, ((x0, y0, x1, y1), voted) in enumerate(frames):
        out[n, y0:y1, x0:x1] = voted
    return out


def masks_to_boxes_or_keep(masks: np.ndarray, boxes: np.ndarray, threshold: float) -> np.ndarray:
    """Tight xyxy box of each (H, W) mask >= ``threshold`` (pixel edges); the given box where empty."""
    out = boxes.copy()
    for n in range(len(masks)):
        ys, xs = np.nonzero(masks[n] >= threshold)
        if ys.size:
            out[n] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out
