"""Inference on images with a trained checkpoint: ``Predictor.from_checkpoint(path).predict(x)``;
with an exported ONNX model (onnxruntime, NumPy post-processing): ``OnnxPredictor(path).predict(x)``.

``OnnxPredictor`` needs no torch; ``Predictor`` and ``to_image_tensor`` import it when first used
(``from fcis.inference import Predictor``), so that a deployment without torch can import this package.
"""

from typing import Any

from .onnx_runner import OnnxPredictor

__all__ = ["Predictor", "OnnxPredictor", "to_image_tensor"]


def __getattr__(name: str) -> Any:
    if name in ("Predictor", "to_image_tensor"):
        from . import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
