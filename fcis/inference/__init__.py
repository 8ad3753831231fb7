"""Inference on images with a trained checkpoint: ``Predictor.from_checkpoint(path).predict(x)``."""

from .predictor import Predictor, to_image_tensor

__all__ = ["Predictor", "to_image_tensor"]
