"""InstanceFCN: instance-sensitive score maps assembled over sliding windows (class-agnostic
segment proposals; Dai et al., ECCV 2016)."""

from .assemble import assemble_windows, dense_assemble
from .builders import instancefcn_resnet18, instancefcn_resnet50
from .config import InstanceFCNConfig
from .model import InstanceFCN

__all__ = ["InstanceFCN", "InstanceFCNConfig", "instancefcn_resnet18", "instancefcn_resnet50",
           "dense_assemble", "assemble_windows"]
