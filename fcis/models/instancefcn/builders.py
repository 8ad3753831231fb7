"""Keyword-only builders: ``instancefcn_resnet50(num_classes=…, weights_backbone=…)``."""

from __future__ import annotations

from typing import Any

from ..backbone import BackboneWeights, ResNetC4C5, build_resnet
from ..builder_config import builder_config
from .config import InstanceFCNConfig
from .model import InstanceFCN

__all__ = ["instancefcn_resnet18", "instancefcn_resnet50"]


def _instancefcn(depth: int, num_classes: int, weights_backbone: BackboneWeights,
                 overrides: dict[str, Any]) -> InstanceFCN:
    config = builder_config(InstanceFCNConfig, "InstanceFCN", depth, num_classes, weights_backbone, overrides)
    pretrained = config.backbone_pretrained
    net = build_resnet(depth, weights_backbone, pretrained=pretrained, dilate_conv5=True,
                       dilate_conv4=config.feature_stride == 8, frozen_bn=config.frozen_bn,
                       trainable_layers=config.trainable_layers, norm=config.norm)
    return InstanceFCN(config, ResNetC4C5(net))


def instancefcn_resnet18(*, num_classes: int, weights_backbone: BackboneWeights = None,
                         **overrides: Any) -> InstanceFCN:
    """InstanceFCN on ResNet-18 (512-channel conv5 at stride 8 by default). ``num_classes``
    counts the dataset's foreground classes (recorded; the model is class-agnostic);
    ``weights_backbone`` is a torchvision weights enum, a state-dict path or None;
    ``overrides`` are :class:`InstanceFCNConfig` fields."""
    return _instancefcn(18, num_classes, weights_backbone, overrides)


def instancefcn_resnet50(*, num_classes: int, weights_backbone: BackboneWeights = None,
                         **overrides: Any) -> InstanceFCN:
    """InstanceFCN on ResNet-50 (2048-channel conv5). Arguments as :func:`instancefcn_resnet18`."""
    return _instancefcn(50, num_classes, weights_backbone, overrides)
