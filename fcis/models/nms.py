"""NMS that stops at the k-th kept box: torchvision's ``nms(...)[:k]`` / ``batched_nms(...)[:k]``,
the same indices, without suppressing through every candidate (FCIS's RPN keeps 300 of 6000
boxes; its detections 100 of 600 RoIs × C classes)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou, nms

__all__ = ["first_kept_nms"]


def first_kept_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, k: int, block: int = 512,
                   idxs: Tensor | None = None) -> Tensor:
    """``torchvision.ops.nms(boxes, scores, iou_threshold)[:k]`` (with ``idxs``, per-class
    ``batched_nms(boxes, scores, idxs, iou_threshold)[:k]``), the same indices in the same order
    (scores descending; among equal scores, index order), without running the greedy suppression
    past the k-th kept box: the boxes are taken in nms's order (scores descending, stable)
    ``block`` at a time; a block's boxes that overlap an already kept box (of their class) by
    IoU > threshold are dropped (box_iou computes nms's IoU, the same arithmetic), the rest go
    through ``nms`` among themselves (per class), and the loop stops once k boxes are kept. A box's
    fate depends only on the higher-scored boxes of its class, so taking them in one global order
    decides each box as the per-class greedy does. (N, 4) boxes, (N,) scores, optional (N,) class
    indices -> (min(k, kept),) int64 indices."""
    order = scores.sort(descending=True, stable=True)[1]
    ranked = boxes[order]
    ranked_cls = idxs[order] if idxs is not None else None
    kept: list[Tensor] = []
    kept_boxes = ranked[:0]
    count = 0
    for start in range(0, len(order), block):
        cand = ranked[start:start + block]
        alive = torch.arange(len(cand), device=boxes.device)
        if count:
            overlap = box_iou(cand, kept_boxes) > iou_threshold
            if ranked_cls is not None:
                kept_cls = ranked_cls[torch.cat(kept)]
                overlap &= ranked_cls[start:start + block, None] == kept_cls[None, :]
            alive = alive[~overlap.any(dim=1)]
        if alive.numel():
            # strictly decreasing stand-in scores: nms keeps the block's own (global) order
            rank = -torch.arange(len(alive), dtype=cand.dtype, device=boxes.device)
            if ranked_cls is None:
                new = alive[nms(cand[alive], rank, iou_threshold)]
            else:
                new = alive[_per_class_nms(cand[alive], rank, ranked_cls[start:start + block][alive], iou_threshold)]
            new = new + start
            kept.append(new)
            kept_boxes = torch.cat([kept_boxes, ranked[new]])
            count += len(new)
        if count >= k:
            break
    if not kept:
        return order[:0]
    return order[torch.cat(kept)[:k]]


def _per_class_nms(boxes: Tensor, rank: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    """Indices kept by ``nms`` within each class, in ascending (= rank) order."""
    keep = [sel[nms(boxes[sel], rank[sel], iou_threshold)]
            for sel in (torch.nonzero(classes == c).flatten() for c in torch.unique(classes))]
    return torch.cat(keep).sort()[0]
