"""Models behind one contract (torchvision's): losses in training, detections in eval.

``BUILDERS`` maps a model name (the CLI's ``--model``) to its keyword-only builder
``builder(*, num_classes, weights_backbone=None, **config_overrides)``.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .fcis import FCIS, FCISConfig, fcis_resnet18, fcis_resnet50, fcis_resnet101

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fcis_resnet18": fcis_resnet18,
    "fcis_resnet50": fcis_resnet50,
    "fcis_resnet101": fcis_resnet101,
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model called ``name`` (a key of ``BUILDERS``) with the builder's arguments."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(BUILDERS))}")
    return BUILDERS[name](**kwargs)


__all__ = ["BUILDERS", "build_model", "FCIS", "FCISConfig",
           "fcis_resnet18", "fcis_resnet50", "fcis_resnet101"]
