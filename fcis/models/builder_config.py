"""What every builder does first: turn ``(depth, num_classes, weights_backbone, overrides)`` into
the model's typed config."""

from __future__ import annotations

from typing import Any, TypeVar

from .backbone import BackboneWeights
from .model_config import ModelConfig

__all__ = ["builder_config"]

C = TypeVar("C", bound=ModelConfig)


def builder_config(config_cls: type[C], model: str, depth: int, num_classes: int,
                   weights_backbone: BackboneWeights, overrides: dict[str, Any]) -> C:
    """``config_cls(num_classes=…, depth=…, backbone_pretrained=…, **overrides)``.

    ``overrides`` may repeat ``depth`` (a config rebuilt from a checkpoint does) but not change it;
    ``backbone_pretrained`` is recorded when weights are given, or kept from a checkpoint's
    config, so a rebuilt model has the same frozen layers without the weights file. Former field
    names (a checkpoint saved before a rename) are translated (``config_cls.renamed``)."""
    overrides = config_cls.current_names(overrides)
    if overrides.pop("depth", depth) != depth:
        raise ValueError(f"this builder makes a ResNet-{depth} {model}")
    pretrained = overrides.pop("backbone_pretrained", False) or weights_backbone is not None
    return config_cls(num_classes=num_classes, depth=depth, backbone_pretrained=pretrained,  # type: ignore[call-arg]
                      **overrides)
