"""Inference on images with a trained checkpoint: ``Predictor.from_checkpoint(path).predict(x)``;
with an exported ONNX model (onnxruntime, NumPy post-processing): ``OnnxPredictor(path).predict(x)``."""

from .onnx_runner import OnnxPredictor
from .predictor import Predictor, to_image_tensor

__all__ = ["Predictor", "OnnxPredictor", "to_image_tensor"]
