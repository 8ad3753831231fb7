"""Mask voting (FCIS paper §3, inference): each kept detection's mask becomes the score-weighted
average, in image space, of the masks of all candidates of its class that overlap its box."""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import Tensor
from torchvision.ops import box_iou

from ..mask_paste import paste_masks_in_frame

__all__ = ["vote_masks", "voted_windows", "masks_to_boxes_or_keep"]


def _frame(boxes: Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    """Smallest integer pixel window holding every box, clipped to the image."""
    x0, y0 = boxes[:, 0].min().item(), boxes[:, 1].min().item()
    x1, y1 = boxes[:, 2].max().item(), boxes[:, 3].max().item()
    return (max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0),
            min(int(math.ceil(x1)), width), min(int(math.ceil(y1)), height))


def vote_masks(kept_boxes: Tensor, kept_labels: Tensor, cand_boxes: Tensor, cand_scores: Tensor,
               cand_masks: Tensor, image_size: tuple[int, int], *, iou: float, min_score: float,
               voting: bool = True, kept_index: Tensor | None = None, binarize: float | None = None) -> Tensor:
    """Image-space masks of the kept detections.

    Args:
        kept_boxes (N, 4), kept_labels (N,): the detections after NMS, in image pixels.
        cand_boxes (M, 4), cand_scores (M, C+1), cand_masks (M, C+1, P, P): every candidate (or a
            ``head.MaskProbs``, which computes only the (candidate, class) pairs read here).
        image_size: (H, W) of the output.
        iou: candidates whose box IoU with a kept box is >= this vote for it.
        min_score: candidates with a class score <= this do not vote.
        voting: False pastes each detection's own mask (``kept_index`` (N,) gives its candidate).
        binarize: with voting, each candidate's pasted mask is binarised at this threshold before
            the weighted average (official ``mv_kernel.cu``); None averages the probabilities.

    Returns:
        (N, H, W) float masks in [0, 1] (the windows of :func:`voted_windows` placed in the image).
    """
    height, width = image_size
    out = cand_scores.new_zeros(len(kept_boxes), height, width)
    for n, frame, voted in voted_windows(kept_boxes, kept_labels, cand_boxes, cand_scores, cand_masks, image_size,
                                         iou=iou, min_score=min_score, voting=voting, kept_index=kept_index,
                                         binarize=binarize):
        out[n, frame[1]:frame[3], frame[0]:frame[2]] = voted
    return out


#: Candidate masks are pasted at most this many pixels at a time while voting (bounds memory).
_PASTE_BUDGET = 1 << 23


def voted_windows(kept_boxes: Tensor, kept_labels: Tensor, cand_boxes: Tensor, cand_scores: Tensor,
                  cand_masks: Tensor, image_size: tuple[int, int], *, iou: float, min_score: float,
                  voting: bool = True, kept_index: Tensor | None = None, binarize: float | None = None,
                  ) -> Iterator[tuple[int, tuple[int, int, int, int], Tensor]]:
    """:func:`vote_masks` one detection at a time: ``(n, frame (x0, y0, x1, y1), voted (y1 - y0,
    x1 - x0))``, the voted mask inside the smallest pixel window holding the voters' boxes (zero
    outside it), in [0, 1]. Voters are pasted in chunks of at most ``_PASTE_BUDGET`` pixels.

    The weighted average of values in [0, 1] is in [0, 1] in exact arithmetic; in float32 the
    weights' sum over the voters, divided by their sum in another order, and the bilinear weights
    of the pasting can round past 1 (1.0000002 was seen), so the result is clamped to [0, 1], the
    output contract of every model's ``masks`` (torchvision's).
    """
    height, width = image_size
    if len(kept_boxes) == 0:
        return
    overlaps = box_iou(kept_boxes, cand_boxes) if voting else None
    for n in range(len(kept_boxes)):
        c = int(kept_labels[n])
        if voting:
            assert overlaps is not None
            members = torch.nonzero((overlaps[n] >= iou) & (cand_scores[:, c] > min_score)).flatten()
            if members.numel() == 0:                      # only possible with a degenerate box
                members = overlaps[n].argmax().view(1)
        else:
            assert kept_index is not None  # voting=False needs the detections' own candidates
            members = kept_index[n].view(1)
        boxes = cand_boxes[members]
        frame = _frame(torch.cat([boxes, kept_boxes[n:n + 1]]), height, width)
        weights = cand_scores[members, c]
        step = max(1, _PASTE_BUDGET // max(1, (frame[2] - frame[0]) * (frame[3] - frame[1])))
        voted = None
        for k in range(0, len(members), step):
            pasted = paste_masks_in_frame(cand_masks[members[k:k + step], c], boxes[k:k + step], frame)  # (K, h, w)
            w = weights[k:k + step, None, None]
            if voting and binarize is not None:     # w · (pasted >= binarize), in one pass
                part = torch.where(pasted >= binarize, w, torch.zeros_like(w)).sum(0)
            else:
                part = (w * pasted).sum(0)
            voted = part if voted is None else voted + part
        assert voted is not None  # members is never empty
        yield n, frame, voted.div_(weights.sum().clamp(min=1e-12)).clamp_(0.0, 1.0)


def masks_to_boxes_or_keep(masks: Tensor, boxes: Tensor, threshold: float) -> Tensor:
    """Tight xyxy box of each mask >= ``threshold`` (pixel edges); the given box where empty."""
    if len(masks) == 0:
        return boxes.clone()
    # A row (column) holds a pixel >= threshold iff its maximum does: two max-reductions instead
    # of a thresholded (N, H, W) copy and two passes over it (measured ~2.7x faster at 100 masks
    # of 600x800).
    rows, cols = masks.amax(dim=2) >= threshold, masks.amax(dim=1) >= threshold   # (N, H), (N, W)
    height, width = rows.shape[1], cols.shape[1]
    # First and last set row/column: argmax of a 0/1 vector is its first maximum.
    y0 = rows.to(torch.uint8).argmax(dim=1)
    y1 = height - rows.flip(1).to(torch.uint8).argmax(dim=1)
    x0 = cols.to(torch.uint8).argmax(dim=1)
    x1 = width - cols.flip(1).to(torch.uint8).argmax(dim=1)
    tight = torch.stack([x0, y0, x1, y1], dim=1).to(boxes.dtype)
    return torch.where(rows.any(dim=1, keepdim=True), tight, boxes)
