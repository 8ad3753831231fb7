"""InstanceFCN's loss: objectness logistic loss on sampled windows plus a per-pixel logistic
loss on the m×m masks of the positive ones (paper: sum_i [L(p_i, p_i*) + sum_j L(S_ij, S_ij*)])."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

__all__ = ["sample_windows", "instancefcn_losses"]


def sample_windows(labels: list[Tensor], per_image: int, positive_fraction: float) -> tuple[list[Tensor], list[Tensor]]:
    """Random balanced sample per image from flat labels (1 / 0 / -1 ignored): at most
    ``positive_fraction·per_image`` positives, negatives fill the rest. Returns, per image, the
    flat indices of the sampled positives and of the sampled negatives."""
    sampler = BalancedPositiveNegativeSampler(per_image, positive_fraction)
    pos, neg = sampler(labels)
    return ([torch.nonzero(p).flatten() for p in pos], [torch.nonzero(n).flatten() for n in neg])


def instancefcn_losses(objectness: Tensor, objectness_targets: Tensor, mask_logits: Tensor,
                       mask_targets: Tensor, *, anchor: Tensor, objectness_weight: float = 1.0,
                       mask_weight: float = 1.0) -> dict[str, Tensor]:
    """The two losses, averaged.

    Args:
        objectness: (R,) logits of the sampled windows; objectness_targets: (R,) {0, 1}.
        mask_logits: (P, m, m) of the sampled positives; mask_targets: (P, m, m) {0, 1}.
        anchor: a tensor of the graph (e.g. the score maps) so that an empty loss is an exact
            zero that still back-propagates.

    Returns:
        ``{"loss_objectness": mean logistic loss over the R windows,
        "loss_mask": mean per-pixel logistic loss over the P·m² pixels}``; exactly 0 (in the
        graph) when R or P is 0.
    """
    zero = anchor.sum() * 0.0
    if objectness.numel():
        obj = F.binary_cross_entropy_with_logits(objectness, objectness_targets.to(objectness.dtype))
    else:
        obj = zero
    if mask_logits.numel():
        mask = F.binary_cross_entropy_with_logits(mask_logits, mask_targets.to(mask_logits.dtype))
    else:
        mask = zero
    return {"loss_objectness": objectness_weight * obj, "loss_mask": mask_weight * mask}
