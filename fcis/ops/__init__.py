"""Operators written for this library (everything else comes from torchvision.ops)."""

from .ps_roi_assemble import PSRoIAssemble, boxes_to_rois, ps_roi_assemble

__all__ = ["ps_roi_assemble", "PSRoIAssemble", "boxes_to_rois"]
