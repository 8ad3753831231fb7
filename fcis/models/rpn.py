"""Region proposal network on one feature map: torchvision's RPN with FCIS's head and anchors."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import clip_boxes_to_image, remove_small_boxes

from .nms import first_kept_nms

__all__ = ["RPNHead", "BorderAwareRPN", "build_rpn", "first_kept_nms"]


class BorderAwareRPN(RegionProposalNetwork):
    """torchvision's RPN, with the official FCIS/Faster R-CNN rule that anchors crossing the image
    border by more than ``allowed_border`` pixels are ignored in training (never matched, never
    sampled; ``RPN_ALLOWED_BORDER = 0``). ``allowed_border=None`` is torchvision's behaviour. An
    image where every anchor crosses the border keeps them all (rather than train on nothing).
    Coordinates are continuous here (official inclusive x2 < W is x2 <= W)."""

    def __init__(self, *args, allowed_border: int | None = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.allowed_border = allowed_border
        self._image_sizes: list[tuple[int, int]] | None = None

    def forward(self, images, features, targets=None):
        if self.training:
            self._image_sizes = list(images.image_sizes)
        return super().forward(images, features, targets)

    def filter_proposals(self, proposals: Tensor, objectness: Tensor, image_shapes: list[tuple[int, int]],
                         num_anchors_per_level: list[int]) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's ``filter_proposals``; on the CPU with a single level (FCIS's one map) the
        NMS stops at the ``post_nms_top_n``-th kept box (:func:`first_kept_nms`, the same boxes);
        elsewhere (CUDA, several levels, tracing) torchvision's own."""
        if (len(num_anchors_per_level) != 1 or proposals.device.type != "cpu" or torch.jit.is_tracing()
                or torch.jit.is_scripting() or torch.compiler.is_compiling()):
            return super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        num_images = proposals.shape[0]
        objectness = objectness.detach().reshape(num_images, -1)
        top_n_idx = self._get_top_n_idx(objectness, num_anchors_per_level)
        batch_idx = torch.arange(num_images, device=proposals.device)[:, None]
        objectness_prob = torch.sigmoid(objectness[batch_idx, top_n_idx])
        proposals = proposals[batch_idx, top_n_idx]
        final_boxes, final_scores = [], []
        for boxes, scores, img_shape in zip(proposals, objectness_prob, image_shapes):
            boxes = clip_boxes_to_image(boxes, img_shape)
            keep = remove_small_boxes(boxes, self.min_size)
            boxes, scores = boxes[keep], scores[keep]
            keep = torch.where(scores >= self.score_thresh)[0]
            boxes, scores = boxes[keep], scores[keep]
            keep = first_kept_nms(boxes, scores, self.nms_thresh, self.post_nms_top_n())
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores

    def assign_targets_to_anchors(self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
                                  ) -> tuple[list[Tensor], list[Tensor]]:
        if self.allowed_border is None or self._image_sizes is None:
            return super().assign_targets_to_anchors(anchors, targets)
        b = float(self.allowed_border)
        labels, matched = [], []
        for anc, tgt, (h, w) in zip(anchors, targets, self._image_sizes):
            inside = (anc[:, 0] >= -b) & (anc[:, 1] >= -b) & (anc[:, 2] <= w + b) & (anc[:, 3] <= h + b)
            if not bool(inside.any()):
                inside = torch.ones_like(inside)
            gt = tgt["boxes"]
            if gt.numel():   # an outside anchor must not become a GT's best (low-quality) match
                quality = self.box_similarity(gt, anc).masked_fill(~inside[None], -1.0)
                idx = self.proposal_matcher(quality)
                lab = (idx >= 0).to(torch.float32)
                lab[idx == self.proposal_matcher.BELOW_LOW_THRESHOLD] = 0.0
                lab[idx == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1.0
                box = gt[idx.clamp(min=0)]
            else:
                lab = torch.zeros(len(anc), dtype=torch.float32, device=anc.device)
                box = torch.zeros(anc.shape, dtype=torch.float32, device=anc.device)
            lab[~inside] = -1.0
            labels.append(lab)
            matched.append(box)
        return labels, matched


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
            assert layer.bias is not None
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for x in features:
            t = self.conv(x).relu_()
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def build_rpn(cfg, in_channels: int) -> RegionProposalNetwork:
    """The RPN over a single map ("0"), configured from ``cfg`` (any config with the
    ``anchor_sizes``, ``aspect_ratios`` and ``rpn_*`` fields; ``rpn_allowed_border`` and
    ``rpn_min_size`` are optional, torchvision's behaviour without them)."""
    anchors = AnchorGenerator(sizes=(tuple(cfg.anchor_sizes),), aspect_ratios=(tuple(cfg.aspect_ratios),))
    head = RPNHead(in_channels, cfg.rpn_channels, anchors.num_anchors_per_location()[0])
    rpn = BorderAwareRPN(
        anchors, head, allowed_border=getattr(cfg, "rpn_allowed_border", None),
        fg_iou_thresh=cfg.rpn_fg_iou, bg_iou_thresh=cfg.rpn_bg_iou,
        batch_size_per_image=cfg.rpn_batch_size_per_image, positive_fraction=cfg.rpn_positive_fraction,
        pre_nms_top_n=dict(training=cfg.rpn_pre_nms_top_n_train, testing=cfg.rpn_pre_nms_top_n_test),
        post_nms_top_n=dict(training=cfg.rpn_post_nms_top_n_train, testing=cfg.rpn_post_nms_top_n_test),
        nms_thresh=cfg.rpn_nms_iou,
    )
    rpn.min_size = float(getattr(cfg, "rpn_min_size", rpn.min_size))  # type: ignore[arg-type]  # proposals with a smaller side dropped
    return rpn
