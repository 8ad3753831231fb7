"""Keyword-only builders: ``fcis_resnet50(num_classes=…, weights_backbone=…)``."""

from __future__ import annotations

from typing import Any

from ..backbone import BackboneWeights, ResNetC4C5, build_resnet
from ..builder_config import builder_config
from ..caffe_resnet import build_caffe_resnet, caffe_style
from .config import FCISConfig
from .model import FCIS
from .official import OfficialFCIS

__all__ = ["fcis_resnet18", "fcis_resnet50", "fcis_resnet101"]


def _fcis(depth: int, num_classes: int, weights_backbone: BackboneWeights, overrides: dict[str, Any]) -> FCIS:
    config = builder_config(FCISConfig, "FCIS", depth, num_classes, weights_backbone, overrides)
    if config.variant == "official":   # the official MXNet arithmetic (fcis/models/fcis/official.py)
        return OfficialFCIS(config, ResNetC4C5(build_caffe_resnet(depth, weights_backbone,
                                                                  trainable_layers=config.trainable_layers)))
    pretrained = config.backbone_pretrained
    net = build_resnet(depth, weights_backbone, pretrained=pretrained, dilate_conv5=config.dilate_conv5,
                       frozen_bn=config.frozen_bn, trainable_layers=config.trainable_layers, norm=config.norm)
    if config.resnet_style == "caffe":   # the official ResNet v1's strides and max pool, same parameters
        caffe_style(net)
    return FCIS(config, ResNetC4C5(net))


def fcis_resnet18(*, num_classes: int, weights_backbone: BackboneWeights = None, **overrides: Any) -> FCIS:
    """FCIS on ResNet-18 (conv4 256 and conv5 512 channels). ``num_classes`` counts foreground
    classes; ``weights_backbone`` is a torchvision weights enum, a state-dict path or None;
    ``overrides`` are :class:`FCISConfig` fields."""
    return _fcis(18, num_classes, weights_backbone, overrides)


def fcis_resnet50(*, num_classes: int, weights_backbone: BackboneWeights = None, **overrides: Any) -> FCIS:
    """FCIS on ResNet-50 (the paper's R-50 entry). Arguments as :func:`fcis_resnet18`."""
    return _fcis(50, num_classes, weights_backbone, overrides)


def fcis_resnet101(*, num_classes: int, weights_backbone: BackboneWeights = None, **overrides: Any) -> FCIS:
    """FCIS on ResNet-101 (the paper's main model). Arguments as :func:`fcis_resnet18`."""
    return _fcis(101, num_classes, weights_backbone, overrides)
