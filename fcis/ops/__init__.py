"""Operators written for this library (everything else comes from torchvision.ops)."""

from .ps_roi_assemble import (
    PSRoIAssemble,
    boxes_to_rois,
    ps_roi_assemble,
    ps_roi_assemble_rows,
    ps_roi_assemble_rows_chunks,
    rows_layout_applies,
    rows_to_maps,
)

__all__ = ["ps_roi_assemble", "ps_roi_assemble_rows", "ps_roi_assemble_rows_chunks", "rows_to_maps", "rows_layout_applies", "PSRoIAssemble", "boxes_to_rois"]
