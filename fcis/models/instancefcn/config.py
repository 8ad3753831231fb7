"""Typed configuration of InstanceFCN (Dai, He, Li, Ren, Sun — ECCV 2016).

Paper values where the paper gives one (k = 3 relative positions, m = 21 window at stride 8, a
512-channel instance branch, objectness + per-pixel logistic losses on 256 sampled windows with
positives and negatives 1:1); the rest is chosen here and said so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..model_config import ModelConfig


@dataclass
class InstanceFCNConfig(ModelConfig):
    """Configuration of the InstanceFCN network (class-agnostic segment proposals; the shared
    fields: :class:`~fcis.models.model_config.ModelConfig`, without an RPN's).

    ``num_classes`` is the dataset's foreground class count, recorded so that a checkpoint knows
    the data it was trained on; the model ignores classes: every output has label 1 ("object")
    and ``class_agnostic`` is True (evaluators and the predictor read this flag).

    Backbone: a torchvision ResNet at ``feature_stride`` 8 (conv4 and conv5 dilated, the paper's
    stride) or 16 (conv5 dilated, FCIS's backbone). Stride 8 is the default because it is what
    trains on small images: on 256×320 shapes a 24 px object spans 3 feature cells, so each of
    its k×k = 3×3 relative positions still owns one cell of the instance-sensitive maps; at
    stride 16 it spans 1.5 cells and its sub-windows cannot be told apart. It costs about twice
    the stride-16 backbone.

    Scales: the paper slides one m×m window (m = 21 cells = 168 px at stride 8) over an image
    pyramid. Here the pyramid is replaced by several window sizes on one feature map
    (``window_sizes``, input pixels): a window of S px is assembled on an m×m grid by bilinear
    sampling of the same k² maps (``fcis.ops.ps_roi_assemble``), which is the dense integer-copy
    assembling exactly when S = m·stride (168 px) and its resampled version otherwise, just as a
    pyramid level resamples the image. One forward pass serves every scale; the objectness
    branch has one output per window size.
    """

    num_classes: int = 1
    class_agnostic: bool = True

    # Backbone.
    depth: int = 50
    feature_stride: int = 8          # 8: conv4 + conv5 dilated (paper); 16: conv5 dilated
    trainable_layers: int = 3        # ResNet stages that train, from the top (5 = all)
    frozen_bn: bool = True           # with ImageNet weights only; plain BN for a random backbone
    backbone_pretrained: bool = False
    # "bn": BatchNorm in the ResNet, none in the branches; "gn": GroupNorm in the ResNet and after
    # the instance branch's 1×1 reduce conv, random weights only (fcis/models/norm.py).
    norm: str = "bn"

    # Input resizing (short side, long side limit) and normalisation (ImageNet statistics).
    min_size: int = 600
    max_size: int = 1000
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    # Instance branch: 1×1 conv (instance_channels) + ReLU + 3×3 conv to k² maps.
    group_size: int = 3              # k
    window_size: int = 21            # m: window side in cells, and resolution of each mask (m×m)
    instance_channels: int = 512
    # Objectness branch: 3×3 conv (objectness_channels) + ReLU + 1×1 conv, one logit per size.
    objectness_channels: int = 512
    # Window sides in input pixels: 168·1.5^j (168 = m·stride, the paper's window).
    window_sizes: tuple[float, ...] = (33.0, 50.0, 75.0, 112.0, 168.0, 252.0, 378.0, 567.0)

    # Window labels (see targets.py). An object of longer box side L belongs to the window size
    # S nearest (in log scale) to L / object_fill; a window of that size is positive when its
    # centre lies within max(center_tolerance·S, stride/2) px of the object's box centre on both
    # axes (DeepMask's "centred" rule, ±16 px of 224 ≈ 0.07). Windows within
    # max(ignore_tolerance·S, stride) of an object's centre at its size or a neighbouring one,
    # but not positive, are ignored rather than negative.
    object_fill: float = 0.66
    center_tolerance: float = 0.07
    ignore_tolerance: float = 0.25

    # Training: windows sampled per image (paper: 256, positives:negatives 1:1).
    windows_per_image: int = 256
    positive_fraction: float = 0.5
    mask_target_threshold: float = 0.5
    objectness_loss_weight: float = 1.0
    mask_loss_weight: float = 1.0

    # Inference: rank windows by objectness, keep pre_nms_top_n, assemble and paste their masks,
    # mask NMS (IoU on masks binarised at mask_threshold, on a grid of nms_resolution px) and
    # keep detections_per_img. Up to 1000 proposals, so that AR@1000 (the paper's metric) counts
    # 1000; the full-size masks cost 4·H·W bytes each (lower it for plain prediction).
    pre_nms_top_n: int = 2000
    score_thresh: float = 0.0
    nms_iou: float = 0.5
    nms_resolution: int = 4
    detections_per_img: int = 1000
    # Binarisation of the output mask probabilities (per-pixel logistic): mask >= 0.5.
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if self.feature_stride not in (8, 16):
            problems.append(f"feature_stride must be 8 or 16, got {self.feature_stride}")
        if self.group_size < 1 or self.window_size < self.group_size or self.window_size % 2 == 0:
            problems.append(f"window_size ({self.window_size}) must be odd (a window is centred on a "
                            f"cell) and >= group_size ({self.group_size})")
        if not self.window_sizes or any(not (s > 0 and math.isfinite(s)) for s in self.window_sizes):
            problems.append(f"window_sizes must be positive, got {self.window_sizes}")
        if list(self.window_sizes) != sorted(self.window_sizes):
            problems.append(f"window_sizes must be increasing, got {self.window_sizes}")
        if not 0 < self.object_fill <= 1:
            problems.append(f"object_fill must be in (0, 1], got {self.object_fill}")
        if not 0 < self.positive_fraction <= 1 or self.windows_per_image < 1:
            problems.append("windows_per_image must be >= 1 and positive_fraction in (0, 1]")
        if self.nms_resolution < 1 or self.pre_nms_top_n < 1 or self.detections_per_img < 1:
            problems.append("nms_resolution, pre_nms_top_n and detections_per_img must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))
        self.window_sizes = tuple(float(s) for s in self.window_sizes)

    @property
    def canonical_window(self) -> float:
        """m·stride: the window side (px) at which assembling is the paper's integer copy."""
        return float(self.window_size * self.feature_stride)
