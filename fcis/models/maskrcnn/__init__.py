"""Mask R-CNN: torchvision's implementation behind the library's builders and config."""

from .builders import maskrcnn_resnet18_fpn, maskrcnn_resnet50_fpn, maskrcnn_resnet101_fpn
from .config import MaskRCNNConfig
from .model import MaskRCNN

__all__ = ["MaskRCNN", "MaskRCNNConfig", "maskrcnn_resnet18_fpn", "maskrcnn_resnet50_fpn",
           "maskrcnn_resnet101_fpn"]
