"""Typed configuration of Mask R-CNN (torchvision's). Defaults are torchvision's (docs/ARCHITECTURE.md §5.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model_config import TwoStageConfig

#: Feature maps of torchvision's ResNet-FPN: P2..P5 ("0".."3") and the max-pooled P6 ("pool").
FPN_LEVELS = 5

#: The one translation to torchvision's ``MaskRCNN`` keyword arguments: config field -> keyword.
TORCHVISION_KEYWORDS = {
    "min_size": "min_size", "max_size": "max_size",
    "rpn_pre_nms_top_n_train": "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test": "rpn_pre_nms_top_n_test",
    "rpn_post_nms_top_n_train": "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test": "rpn_post_nms_top_n_test",
    "rpn_nms_iou": "rpn_nms_thresh", "rpn_fg_iou": "rpn_fg_iou_thresh", "rpn_bg_iou": "rpn_bg_iou_thresh",
    "rpn_batch_size_per_image": "rpn_batch_size_per_image", "rpn_positive_fraction": "rpn_positive_fraction",
    "rpn_score_thresh": "rpn_score_thresh",
    "roi_fg_iou": "box_fg_iou_thresh", "roi_bg_iou": "box_bg_iou_thresh",
    "roi_batch_size_per_image": "box_batch_size_per_image", "roi_positive_fraction": "box_positive_fraction",
    "box_coder_weights": "bbox_reg_weights",
    "score_thresh": "box_score_thresh", "nms_iou": "box_nms_thresh", "detections_per_img": "box_detections_per_img",
}


@dataclass
class MaskRCNNConfig(TwoStageConfig):
    """Configuration of the Mask R-CNN baseline (torchvision's ``MaskRCNN`` on a ResNet-FPN).

    ``num_classes`` counts foreground classes only; torchvision's model is built with
    ``num_classes + 1`` outputs (label 0 is background) and predicts labels in 1..num_classes.
    Field names are the library's (:class:`~fcis.models.model_config.ModelConfig`);
    :meth:`torchvision_kwargs` translates them to torchvision's. Configs saved before the
    rename, with torchvision's names (``box_nms_thresh``, ...), still load (``renamed``).
    """

    renamed = {tv: ours for ours, tv in TORCHVISION_KEYWORDS.items() if tv != ours}

    num_classes: int = 80

    # Backbone: ResNet + FPN (P2..P6, 256 channels).
    depth: int = 50
    # Stages of the ResNet that train, counted from the top (5 = all); torchvision's default 3.
    # With a random backbone every stage trains and BatchNorm stays ordinary (torchvision too).
    trainable_layers: int = 3
    # Set by the builders when ImageNet weights are loaded; decides frozen BN and frozen stages,
    # so that a checkpoint rebuilds the same layers without the weights file.
    backbone_pretrained: bool = False
    # "bn": BatchNorm in the ResNet, torchvision's heads (two-MLP box head, no normalisation).
    # "gn": detectron2's scratch GN Mask R-CNN: GroupNorm in the ResNet, the FPN, a 4-conv + 1-fc
    # box head and the mask head; random weights only (fcis/models/norm.py).
    norm: str = "bn"

    # Input resizing (short side, long side limit) and normalisation (ImageNet statistics).
    min_size: int = 800
    max_size: int = 1333
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    # Anchors: one size per FPN level (P2..P6), the same aspect ratios on every level.
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)

    # RPN.
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_iou: float = 0.7
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0

    # Box head (RoIAlign 7×7, two FC layers) and detection post-processing. RoIs at IoU >=
    # roi_fg_iou are foreground, below roi_bg_iou background (between: not sampled).
    roi_fg_iou: float = 0.5
    roi_bg_iou: float = 0.5
    roi_batch_size_per_image: int = 512
    roi_positive_fraction: float = 0.25
    box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_thresh: float = 0.05
    nms_iou: float = 0.5
    detections_per_img: int = 100

    # Binarisation threshold of the output masks (sigmoid probabilities), torchvision's 0.5.
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        self.anchor_sizes = tuple(int(s) for s in self.anchor_sizes)
        self.aspect_ratios = tuple(float(r) for r in self.aspect_ratios)
        self.box_coder_weights = tuple(float(w) for w in self.box_coder_weights)  # type: ignore[assignment]
        if len(self.anchor_sizes) != FPN_LEVELS:
            raise ValueError(f"anchor_sizes needs one size per FPN level ({FPN_LEVELS}: P2..P6), "
                             f"got {self.anchor_sizes}")
        if len(self.box_coder_weights) != 4:
            raise ValueError(f"box_coder_weights needs 4 values, got {self.box_coder_weights}")
        if not 0.0 <= self.mask_threshold <= 1.0:
            raise ValueError(f"mask_threshold must be in [0, 1], got {self.mask_threshold}")

    def torchvision_kwargs(self) -> dict[str, Any]:
        """The fields torchvision's ``MaskRCNN`` takes as keyword arguments, under its names."""
        return {tv: getattr(self, ours) for ours, tv in TORCHVISION_KEYWORDS.items()}
