"""torchvision's Mask R-CNN behind the library's contract: built from a :class:`MaskRCNNConfig`."""

from __future__ import annotations

from torch import Tensor
from torchvision.models.detection import mask_rcnn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN

from ..rcnn_transform import RCNNTransform
from .config import MaskRCNNConfig

__all__ = ["MaskRCNN"]

#: Config fields passed unchanged to torchvision's ``MaskRCNN`` as keyword arguments.
_TORCHVISION_KWARGS = (
    "min_size", "max_size", "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test",
    "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test", "rpn_nms_thresh", "rpn_fg_iou_thresh",
    "rpn_bg_iou_thresh", "rpn_batch_size_per_image", "rpn_positive_fraction", "rpn_score_thresh",
    "box_fg_iou_thresh", "box_bg_iou_thresh", "box_batch_size_per_image", "box_positive_fraction",
    "box_score_thresh", "box_nms_thresh", "box_detections_per_img",
)


class MaskRCNN(mask_rcnn.MaskRCNN):
    """Mask R-CNN (He et al., ICCV 2017) as torchvision implements it, with ``.config``.

    ``model(images, targets)`` in training mode returns the losses ``loss_objectness``,
    ``loss_rpn_box_reg`` (RPN), ``loss_classifier``, ``loss_box_reg`` and ``loss_mask``.
    ``model(images)`` in eval mode returns per image a dict with ``boxes`` (N, 4) xyxy float32,
    ``labels`` (N,) int64 in 1..C, ``scores`` (N,) descending and ``masks`` (N, 1, H, W) float32
    probabilities at the input image's size; binarise at ``config.mask_threshold`` (0.5).
    images: list of (3, H, W) float tensors in [0, 1]; targets: list of dicts with ``boxes``
    (G, 4) xyxy, ``labels`` (G,) int64 in 1..C and ``masks`` (G, H, W) uint8 (G may be 0).
    """

    def __init__(self, config: MaskRCNNConfig, backbone: BackboneWithFPN) -> None:
        anchors = AnchorGenerator(tuple((s,) for s in config.anchor_sizes),
                                  (config.aspect_ratios,) * len(config.anchor_sizes))
        super().__init__(backbone, num_classes=config.num_classes + 1,
                         image_mean=list(config.image_mean), image_std=list(config.image_std),
                         rpn_anchor_generator=anchors, bbox_reg_weights=config.bbox_reg_weights,
                         **{k: getattr(config, k) for k in _TORCHVISION_KWARGS})
        self.config = config
        self.transform = RCNNTransform(config.min_size, config.max_size, list(config.image_mean),
                                       list(config.image_std))       # a very thin image keeps 1 px per side

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        return super().forward(images, targets)
