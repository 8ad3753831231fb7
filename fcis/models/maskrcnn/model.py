"""torchvision's Mask R-CNN behind the library's contract: built from a :class:`MaskRCNNConfig`."""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection import mask_rcnn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
from torchvision.models.detection.transform import resize_boxes

from ..mask_paste import MaskWindow
from ..norm import head_norm
from ..rcnn_transform import RCNNTransform
from .config import MaskRCNNConfig

__all__ = ["MaskRCNN"]


class MaskRCNN(mask_rcnn.MaskRCNN):
    """Mask R-CNN (He et al., ICCV 2017) as torchvision implements it, with ``.config``.

    ``model(images, targets)`` in training mode returns the losses ``loss_objectness``,
    ``loss_rpn_box_reg`` (RPN), ``loss_classifier``, ``loss_box_reg`` and ``loss_mask``.
    ``model(images)`` in eval mode returns per image a dict with ``boxes`` (N, 4) xyxy float32,
    ``labels`` (N,) int64 in 1..C, ``scores`` (N,) descending and ``masks`` (N, 1, H, W) float32
    probabilities at the input image's size; binarise at ``config.mask_threshold`` (0.5).
    images: list of (3, H, W) float tensors in [0, 1]; targets: list of dicts with ``boxes``
    (G, 4) xyxy, ``labels`` (G,) int64 in 1..C and ``masks`` (G, H, W) uint8 (G may be 0).

    With ``config.norm == "gn"`` the RoI heads are detectron2's scratch GN ones: the box head
    4 convs (256, GroupNorm, ReLU) + 1 fc (1024) (torchvision's ``FastRCNNConvFCHead``) instead
    of two fc layers, and the mask head's 4 convs with GroupNorm (``MaskRCNNHeads``); the
    backbone (ResNet and FPN) is built with GroupNorm by the builders.
    """

    def __init__(self, config: MaskRCNNConfig, backbone: BackboneWithFPN) -> None:
        anchors = AnchorGenerator(tuple((s,) for s in config.anchor_sizes),
                                  (config.aspect_ratios,) * len(config.anchor_sizes))
        heads = {}
        norm = head_norm(config.norm)
        if norm is not None:
            channels = backbone.out_channels
            heads = {"box_head": FastRCNNConvFCHead((channels, 7, 7), [256] * 4, [1024], norm_layer=norm),
                     "mask_head": MaskRCNNHeads(channels, [256] * 4, 1, norm_layer=norm)}
        super().__init__(backbone, num_classes=config.num_classes + 1,
                         image_mean=list(config.image_mean), image_std=list(config.image_std),
                         rpn_anchor_generator=anchors, **heads, **config.torchvision_kwargs())
        self.config = config
        self.transform = RCNNTransform(config.min_size, config.max_size, list(config.image_mean),
                                       list(config.image_std))       # a very thin image keeps 1 px per side

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        self._apply_postprocessing()
        return super().forward(images, targets)

    def _apply_postprocessing(self) -> None:
        """The config's post-processing fields onto torchvision's RoI heads (which keep copies), so
        that a config changed in place (``fcis evaluate --set nms_iou=0.4``) acts as for FCIS."""
        heads, c = self.roi_heads, self.config
        heads.score_thresh, heads.nms_thresh, heads.detections_per_img = c.score_thresh, c.nms_iou, c.detections_per_img

    @torch.no_grad()
    def detect_windows(self, images: list[Tensor], *, score_threshold: float = 0.0) -> list[Iterator[MaskWindow]]:
        """Eval-mode inference with bounded memory: per image, an iterator over its detections with
        ``score >= score_threshold`` (descending), each a :class:`~fcis.models.mask_paste.MaskWindow`:
        the RoI heads' 28×28 mask taken before torchvision's transform pastes it into the whole
        image, pasted here into its box window only, exactly as ``paste_masks_in_image`` does."""
        original_sizes = [(img.shape[-2], img.shape[-1]) for img in images]
        self._apply_postprocessing()
        batch, _ = self.transform(images)
        features = self.backbone(batch.tensors)
        proposals, _ = self.rpn(batch, features)
        detections, _ = self.roi_heads(features, proposals, batch.image_sizes)
        return [_windows(det, size, original, score_threshold)
                for det, size, original in zip(detections, batch.image_sizes, original_sizes)]


def _windows(det: dict[str, Tensor], size: tuple[int, int], original: tuple[int, int],
             score_threshold: float) -> Iterator[MaskWindow]:
    """torchvision's ``paste_masks_in_image`` (padding 1, box expanded to match, bilinear resize
    to the integer box) one mask at a time, keeping only the part inside the image."""
    keep = det["scores"] >= score_threshold
    labels, scores = det["labels"][keep].tolist(), det["scores"][keep].tolist()
    boxes = resize_boxes(det["boxes"][keep], size, original)
    masks, scale = expand_masks(det["masks"][keep], padding=1)
    int_boxes = expand_boxes(boxes, scale).to(torch.int64)
    height, width = original
    for k in range(len(boxes)):
        x0, y0, x1, y1 = (int(v) for v in int_boxes[k])
        w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        mask = F.interpolate(masks[k:k + 1], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        wx0, wx1, wy0, wy1 = max(x0, 0), min(x1 + 1, width), max(y0, 0), min(y1 + 1, height)
        window = mask[wy0 - y0:max(wy1, wy0) - y0, wx0 - x0:max(wx1, wx0) - x0].clamp_(0.0, 1.0)  # as postprocess
        yield MaskWindow(boxes[k], int(labels[k]), float(scores[k]), window, wx0, wy0, original)
