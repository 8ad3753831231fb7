"""Keyword-only builders: ``maskrcnn_resnet50_fpn(num_classes=…, weights_backbone=…)``."""

from __future__ import annotations

from typing import Any

from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

from ..backbone import BackboneWeights, build_resnet
from ..builder_config import builder_config
from ..fast_resnet import ResNetLayerGetter
from ..norm import head_norm
from .config import MaskRCNNConfig
from .model import MaskRCNN

__all__ = ["maskrcnn_resnet18_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet101_fpn"]


def _maskrcnn(depth: int, num_classes: int, weights_backbone: BackboneWeights,
              overrides: dict[str, Any]) -> MaskRCNN:
    config = builder_config(MaskRCNNConfig, "Mask R-CNN", depth, num_classes, weights_backbone, overrides)
    pretrained = config.backbone_pretrained
    # As torchvision's maskrcnn_resnet50_fpn: FrozenBatchNorm and `trainable_layers` stages with
    # ImageNet weights; plain BatchNorm and all 5 stages trainable for a random backbone.
    # With norm="gn": GroupNorm in the ResNet and the FPN (detectron2's scratch GN Mask R-CNN;
    # the heads: MaskRCNN.__init__).
    net = build_resnet(depth, weights_backbone, pretrained=pretrained, dilate_conv5=False,
                       frozen_bn=True, trainable_layers=config.trainable_layers, norm=config.norm)
    trainable = config.trainable_layers if pretrained else 5
    backbone = _resnet_fpn_extractor(net, trainable, norm_layer=head_norm(config.norm))
    # Channels-last on the CPU and BatchNorm folded at inference, as FCIS's ResNet (fast_resnet.py).
    backbone.body = ResNetLayerGetter.replacing(backbone.body)
    return MaskRCNN(config, backbone)


def maskrcnn_resnet18_fpn(*, num_classes: int, weights_backbone: BackboneWeights = None,
                          **overrides: Any) -> MaskRCNN:
    """Mask R-CNN on ResNet-18-FPN (a small baseline). ``num_classes`` counts foreground
    classes; ``weights_backbone`` is a torchvision weights enum, a state-dict path or None;
    ``overrides`` are :class:`MaskRCNNConfig` fields."""
    return _maskrcnn(18, num_classes, weights_backbone, overrides)


def maskrcnn_resnet50_fpn(*, num_classes: int, weights_backbone: BackboneWeights = None,
                          **overrides: Any) -> MaskRCNN:
    """Mask R-CNN on ResNet-50-FPN (torchvision's ``maskrcnn_resnet50_fpn``). Arguments as
    :func:`maskrcnn_resnet18_fpn`."""
    return _maskrcnn(50, num_classes, weights_backbone, overrides)


def maskrcnn_resnet101_fpn(*, num_classes: int, weights_backbone: BackboneWeights = None,
                           **overrides: Any) -> MaskRCNN:
    """Mask R-CNN on ResNet-101-FPN (the paper's R-101-FPN). Arguments as
    :func:`maskrcnn_resnet18_fpn`."""
    return _maskrcnn(101, num_classes, weights_backbone, overrides)
