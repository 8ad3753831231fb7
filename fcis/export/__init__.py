"""Export of trained models: FCIS inference to ONNX (:func:`export_onnx`, ``fcis export``)."""

from .onnx_export import ExportError, FCISOnnxGraph, export_checkpoint, export_onnx, onnx_op_domains

__all__ = ["ExportError", "FCISOnnxGraph", "export_checkpoint", "export_onnx", "onnx_op_domains"]
