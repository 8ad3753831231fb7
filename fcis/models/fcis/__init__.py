"""FCIS: position-sensitive inside/outside score maps assembled per RoI."""

from .builders import fcis_resnet18, fcis_resnet50, fcis_resnet101
from .config import FCISConfig
from .model import FCIS

__all__ = ["FCIS", "FCISConfig", "fcis_resnet18", "fcis_resnet50", "fcis_resnet101"]
