"""Normalisation layers of the models: the ``norm`` config field ("bn" or "gn") and its layers.

- ``"bn"`` (the default, and every checkpoint written before the field existed): BatchNorm. With
  ImageNet weights it is torchvision's ``FrozenBatchNorm2d`` (statistics and affine frozen, as
  the FCIS paper and torchvision's detection models); from random weights plain
  ``nn.BatchNorm2d`` with batch statistics, in the ResNet only (the heads have no normalisation).
- ``"gn"``: GroupNorm (Wu & He, ECCV 2018) with 32 groups, in the ResNet and in the heads, as the
  from-scratch detectors of He, Girshick & Dollár, "Rethinking ImageNet Pre-training" (ICCV 2019)
  and detectron2's ``configs/Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml``. Its statistics are per
  image, so it behaves the same at 1 or 2 images per step and in training and evaluation. It is
  for random initialisation only: ImageNet weights were trained with BatchNorm, and a config with
  ``norm="gn"`` and ``backbone_pretrained=True`` is refused (:func:`check_norm`).

Where each family puts GroupNorm (``norm="gn"``), following detectron2's scratch GN Mask R-CNN
(whose RPN head has no normalisation):

============  ==================================================================================
FCIS          every BatchNorm of the ResNet; after the head's 1×1 reduce conv (before its ReLU;
              the conv then has no bias). RPN and the score-map convs: plain.
InstanceFCN   every BatchNorm of the ResNet; after the instance branch's 1×1 reduce conv (no bias).
              The objectness branch (InstanceFCN's RPN): plain.
Mask R-CNN    every BatchNorm of the ResNet; the FPN's convs (torchvision's ``norm_layer``); the box
              head becomes detectron2's 4-conv + 1-fc head with GN (torchvision's
              ``FastRCNNConvFCHead``); the mask head's 4 convs (``MaskRCNNHeads``). RPN: plain.
============  ==================================================================================

Initialisation as detectron2's: GN weight 1 and bias 0 (torchvision's ResNet does this for
``nn.GroupNorm`` too); the last GN of each residual block is *not* zero-initialised (detectron2
leaves ``nn.init.constant_(self.conv3.norm.weight, 0)`` commented out: "this somehow hurts
performance when training GN models from scratch"; mmdetection's scratch configs set
``zero_init_residual=False``). A head conv followed by GN gets He-normal weights (fan out, as
detectron2's ``c2_msra_fill`` for its normalised head convs and torchvision's ResNet, FPN and
conv heads), not the papers' N(0, 0.01) of a plain head conv (:func:`init_normalised_conv`).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

__all__ = ["NORMS", "GN_GROUPS", "group_count", "group_norm", "check_norm", "head_norm", "init_normalised_conv"]

#: The values of the ``norm`` config field.
NORMS = ("bn", "gn")
#: Groups of GroupNorm (the GN paper's and detectron2's default).
GN_GROUPS = 32


def group_count(channels: int, groups: int = GN_GROUPS) -> int:
    """``groups`` when it divides ``channels``, else the largest divisor of ``channels`` below it
    (48 channels: 24 groups; 1 channel: 1), so any channel count works."""
    if channels < 1:
        raise ValueError(f"GroupNorm needs at least one channel, got {channels}")
    return next(g for g in range(min(groups, channels), 0, -1) if channels % g == 0)


def group_norm(channels: int) -> nn.GroupNorm:
    """``nn.GroupNorm(group_count(channels), channels)``: weight 1, bias 0, eps 1e-5."""
    return nn.GroupNorm(group_count(channels), channels)


def check_norm(norm: str, pretrained: bool, owner: str) -> None:
    """Refuse an unknown ``norm``, or GroupNorm with ImageNet (BatchNorm) weights; ``owner``
    names the config in the message."""
    if norm not in NORMS:
        raise ValueError(f"{owner}: norm must be one of {', '.join(map(repr, NORMS))}, got {norm!r}")
    if norm == "gn" and pretrained:
        raise ValueError(f"{owner}: norm='gn' (GroupNorm) is for training from random weights; ImageNet backbone "
                         "weights were trained with BatchNorm and are used with frozen BatchNorm: use norm='bn' "
                         "with --weights-backbone, or leave the backbone random for GroupNorm")


def init_normalised_conv(conv: nn.Conv2d) -> None:
    """He-normal weights (fan out, ReLU gain) for a convolution followed by a normalisation layer.

    Such a convolution is scale-invariant: the normalisation undoes the size of its weights, which
    then sets only how far each optimiser step turns them. Adam's step is about the learning rate
    per weight whatever the gradient, so on N(0, 0.01) weights (the FCIS head's) a 1e-3 step (3e-3
    with the head's learning-rate multiplier) turns each output channel by tens of percent per
    iteration. Measured on synthetic shapes (benchmarks/NORM.md): with N(0, 0.01) before the head's
    GroupNorm, FCIS from scratch reached segm AP 0.7 after 300 iterations."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def head_norm(norm: str) -> Callable[[int], nn.Module] | None:
    """The normalisation layer factory of the heads: GroupNorm for ``"gn"``, none for ``"bn"``
    (the heads of the papers have none)."""
    return group_norm if norm == "gn" else None
