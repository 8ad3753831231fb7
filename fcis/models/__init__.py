"""Models behind one contract (torchvision's): losses in training, detections in eval.

``BUILDERS`` maps a model name (the CLI's ``--model``) to its keyword-only builder
``builder(*, num_classes, weights_backbone=None, **config_overrides)``.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .fcis import FCIS, FCISConfig, fcis_resnet18, fcis_resnet50, fcis_resnet101
from .instancefcn import InstanceFCN, InstanceFCNConfig, instancefcn_resnet18, instancefcn_resnet50
from .maskrcnn import MaskRCNN, MaskRCNNConfig, maskrcnn_resnet18_fpn, maskrcnn_resnet50_fpn, maskrcnn_resnet101_fpn

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fcis_resnet18": fcis_resnet18,
    "fcis_resnet50": fcis_resnet50,
    "fcis_resnet101": fcis_resnet101,
    "instancefcn_resnet18": instancefcn_resnet18,
    "instancefcn_resnet50": instancefcn_resnet50,
    "maskrcnn_resnet18_fpn": maskrcnn_resnet18_fpn,
    "maskrcnn_resnet50_fpn": maskrcnn_resnet50_fpn,
    "maskrcnn_resnet101_fpn": maskrcnn_resnet101_fpn,
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model called ``name`` (a key of ``BUILDERS``) with the builder's arguments."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(BUILDERS))}")
    return BUILDERS[name](**kwargs)


__all__ = ["BUILDERS", "build_model", "FCIS", "FCISConfig",
           "fcis_resnet18", "fcis_resnet50", "fcis_resnet101",
           "InstanceFCN", "InstanceFCNConfig", "instancefcn_resnet18", "instancefcn_resnet50",
           "MaskRCNN", "MaskRCNNConfig", "maskrcnn_resnet18_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet101_fpn"]
