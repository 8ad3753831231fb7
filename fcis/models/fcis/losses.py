"""FCIS RoI losses, online hard example mining and the random-sampling alternative."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from .head import DetectionScores, RoIScores

__all__ = ["per_roi_losses", "select_hard", "select_random", "reduce_losses"]


def per_roi_losses(scores: RoIScores | DetectionScores, labels: Tensor, box_targets: Tensor, masks: Tensor,
                   beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Unreduced losses, each (R,), from ``RoIScores`` or (OHEM's gradient-free pass) the same
    values as ``DetectionScores``:

    - classification: (C+1)-way softmax cross-entropy of the class logits;
    - mask: per-pixel 2-way softmax (inside vs outside of the GT class) cross-entropy against
      ``masks`` (R, P, P), averaged over the P×P pixels; zero for background RoIs;
    - box: smooth-L1 of the class-agnostic deltas summed over 4 coordinates; zero for background.
    """
    fg = (labels > 0).to(scores.class_logits.dtype)
    cls = F.cross_entropy(scores.class_logits, labels, reduction="none")
    rows = torch.arange(len(labels), device=labels.device)
    if isinstance(scores, DetectionScores):
        diff = scores.mask_diff[rows, labels]                               # (R, P, P)
    elif scores.label_mask_logits is not None:      # picked by score_rois(..., labels=labels)
        diff = scores.label_mask_logits[:, 0] - scores.label_mask_logits[:, 1]
    else:
        io = scores.all_mask_logits()[rows, labels]                         # (R, 2, P, P)
        diff = io[:, 0] - io[:, 1]
    # softmax over (inside, outside) with target "inside" is a logistic loss on inside - outside.
    mask = F.binary_cross_entropy_with_logits(diff, masks, reduction="none").mean(dim=(1, 2))
    box = F.smooth_l1_loss(scores.box_deltas, box_targets, beta=beta, reduction="none").sum(dim=1)
    return cls, mask * fg, box * fg


def select_hard(total: Tensor, batch: Tensor, keep: int) -> Tensor:
    """OHEM: indices of the ``keep`` RoIs with the highest loss in each image."""
    chosen = []
    for b in torch.unique(batch):
        idx = torch.nonzero(batch == b).flatten()
        top = torch.topk(total[idx], min(keep, idx.numel())).indices
        chosen.append(idx[top])
    return torch.cat(chosen) if chosen else batch.new_zeros(0, dtype=torch.long)


def select_random(labels: Tensor, batch: Tensor, keep: int, fg_fraction: float) -> Tensor:
    """Random sampling of ``keep`` RoIs per image with at most ``fg_fraction`` foreground."""
    sampler = BalancedPositiveNegativeSampler(keep, fg_fraction)
    per_image = [labels[batch == b] for b in torch.unique(batch)]
    pos, neg = sampler(per_image)
    chosen, offset = [], 0
    for lab, p, n in zip(per_image, pos, neg):
        chosen.append(torch.nonzero(p | n).flatten() + offset)
        offset += len(lab)
    return torch.cat(chosen) if chosen else batch.new_zeros(0, dtype=torch.long)


def reduce_losses(cls: Tensor, mask: Tensor, box: Tensor, labels: Tensor, weights: tuple[float, float, float],
                  mask_normalization: str = "rois", balance_cls: bool = False) -> dict[str, Tensor]:
    """Classification averaged over the selected RoIs, box loss summed over the foreground and
    divided by the selected RoIs (as the original). Mask loss summed over the foreground and
    divided by the selected RoIs (``"rois"``, the original's ``grad_scale=10/128``) or by the
    foreground RoIs (``"foreground"``). With no foreground RoI the mask and box losses are
    exactly zero (and still in the graph)."""
    n = max(len(labels), 1)
    num_fg = int((labels > 0).sum())
    mask_den = n if mask_normalization == "rois" else max(num_fg, 1)
    return {
        # balance_cls: the mean over the foreground RoIs and the mean over the background RoIs, half each
        "loss_classifier": weights[0] * (_balanced_mean(cls, labels > 0) if balance_cls else cls.sum() / n),
        "loss_mask": weights[1] * mask.sum() / mask_den,
        "loss_box_reg": weights[2] * box.sum() / n,
    }


def _balanced_mean(loss: Tensor, fg: Tensor) -> Tensor:
    """(mean over ``fg`` + mean over ``~fg``) / 2; a side without RoIs counts the other alone."""
    parts = [loss[m].mean() for m in (fg, ~fg) if bool(m.any())]
    return torch.stack(parts).mean() if parts else loss.sum()
