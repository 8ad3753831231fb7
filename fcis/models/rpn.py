"""Region proposal network on one feature map: torchvision's RPN with FCIS's head and anchors."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork

__all__ = ["RPNHead", "build_rpn"]


class RPNHead(nn.Module):
    """3×3 conv (``mid_channels``) + ReLU, then 1×1 convs for objectness and box deltas.

    forward(features: list[(N, C, H, W)]) -> (logits: list[(N, A, H, W)], deltas: list[(N, 4A, H, W)])
    """

    def __init__(self, in_channels: int, mid_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(mid_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(mid_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for x in features:
            t = self.conv(x).relu_()
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def build_rpn(cfg, in_channels: int) -> RegionProposalNetwork:
    """torchvision's RegionProposalNetwork over a single map ("0"), configured from ``cfg``
    (any config with the ``anchor_sizes``, ``aspect_ratios`` and ``rpn_*`` fields)."""
    anchors = AnchorGenerator(sizes=(tuple(cfg.anchor_sizes),), aspect_ratios=(tuple(cfg.aspect_ratios),))
    head = RPNHead(in_channels, cfg.rpn_channels, anchors.num_anchors_per_location()[0])
    return RegionProposalNetwork(
        anchors, head,
        fg_iou_thresh=cfg.rpn_fg_iou, bg_iou_thresh=cfg.rpn_bg_iou,
        batch_size_per_image=cfg.rpn_batch_size_per_image, positive_fraction=cfg.rpn_positive_fraction,
        pre_nms_top_n=dict(training=cfg.rpn_pre_nms_top_n_train, testing=cfg.rpn_pre_nms_top_n_test),
        post_nms_top_n=dict(training=cfg.rpn_post_nms_top_n_train, testing=cfg.rpn_post_nms_top_n_test),
        nms_thresh=cfg.rpn_nms_iou,
    )
