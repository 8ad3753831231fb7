"""From scored candidates to detections: per-class NMS, top-k, mask voting, pasting."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from ..mask_paste import MaskWindow, tight_window_box
from ..nms import first_kept_nms
from .config import FCISConfig
from .mask_voting import voted_windows

__all__ = ["select_detections", "select_detection_windows"]


def select_detections(boxes: Tensor, class_probs: Tensor, mask_probs: Tensor,
                      image_size: tuple[int, int], cfg: FCISConfig) -> dict[str, Tensor]:
    """Detections of one image.

    Args:
        boxes (M, 4): candidate boxes in output-image pixels.
        class_probs (M, C+1): softmax class probabilities (column 0 = background).
        mask_probs (M, C+1, P, P): per-class inside probabilities over each candidate's box (or a
            ``head.MaskProbs`` that computes only the pairs mask voting reads).
        image_size: (H, W) of the output image.

    Returns:
        torchvision's contract: boxes (N, 4), labels (N,) in 1..C, scores (N,) descending,
        masks (N, 1, H, W) probabilities (the instance is ``mask >= cfg.mask_threshold``).
    """
    cand, labels, det_scores = _kept_candidates(boxes, class_probs, cfg)
    det_boxes = boxes[cand]
    height, width = image_size
    masks = class_probs.new_zeros(len(cand), height, width)
    for n, frame, voted, box in _voted(cand, labels, boxes, class_probs, mask_probs, image_size, cfg):
        masks[n, frame[1]:frame[3], frame[0]:frame[2]] = voted
        det_boxes[n] = box
    return {"boxes": det_boxes, "labels": labels, "scores": det_scores, "masks": masks[:, None]}


def select_detection_windows(boxes: Tensor, class_probs: Tensor, mask_probs: Tensor, image_size: tuple[int, int],
                             cfg: FCISConfig, score_threshold: float = 0.0) -> Iterator[MaskWindow]:
    """:func:`select_detections` one detection at a time, keeping those with ``score >=
    score_threshold`` before any mask is voted: each as a :class:`MaskWindow` (the voted mask in
    its pixel window), same values as the full-image masks. Memory: one window, not (N, H, W)."""
    cand, labels, det_scores = _kept_candidates(boxes, class_probs, cfg, score_threshold)
    for n, frame, voted, box in _voted(cand, labels, boxes, class_probs, mask_probs, image_size, cfg):
        yield MaskWindow(box, int(labels[n]), float(det_scores[n]), voted, frame[0], frame[1], image_size)


def _kept_candidates(boxes: Tensor, class_probs: Tensor, cfg: FCISConfig, score_threshold: float = 0.0
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class NMS and top ``detections_per_img`` over every (candidate, class) above
    ``cfg.score_thresh``, then ``score >= score_threshold``: the kept (N,) candidate indices,
    labels in 1..C and scores, descending."""
    scores = class_probs[:, 1:]                                              # (M, C)
    cand, cls = torch.nonzero(scores > cfg.score_thresh, as_tuple=True)
    flat_scores = scores[cand, cls]
    keep = first_kept_nms(boxes[cand], flat_scores, cfg.nms_iou, cfg.detections_per_img, idxs=cls)
    keep = keep[flat_scores[keep] >= score_threshold]
    return cand[keep], cls[keep] + 1, flat_scores[keep]


def _voted(cand: Tensor, labels: Tensor, boxes: Tensor, class_probs: Tensor, mask_probs: Tensor,
           image_size: tuple[int, int], cfg: FCISConfig) -> Iterator[tuple[int, tuple[int, int, int, int], Tensor, Tensor]]:
    """Per kept detection n: ``(n, frame, voted, box)``, its voted mask in the pixel window
    ``frame`` (:func:`voted_windows`) and its box: with voting, the tight box of the voted mask,
    found in its window (zero outside it), else the candidate's box."""
    det_boxes = boxes[cand]
    for n, frame, voted in voted_windows(det_boxes, labels, boxes, class_probs, mask_probs, image_size,
                                         iou=cfg.voting_iou, min_score=cfg.score_thresh, voting=cfg.mask_voting,
                                         kept_index=cand,
                                         binarize=cfg.mask_threshold if cfg.voting_binarize else None):
        box = det_boxes[n]
        if cfg.mask_voting:
            tight = tight_window_box(voted >= cfg.mask_threshold, frame[0], frame[1])
            box = box if tight is None else tight.to(box.dtype)
        yield n, frame, voted, box
