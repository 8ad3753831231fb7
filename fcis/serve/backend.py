"""The model behind the server: a checkpoint (PyTorch :class:`~fcis.inference.Predictor`) or an
exported ONNX file (:class:`~fcis.inference.OnnxPredictor`), loaded once, shared by the worker
threads, and its outputs as the API's JSON."""

from __future__ import annotations

import base64
import io
import os
import time
from typing import Any

import numpy as np
from PIL import Image

from fcis.evaluation.coco_results import predictions_to_coco_results

__all__ = ["ModelBackend"]


class ModelBackend:
    """One loaded model and what the API says about it.

    ``predictor`` is a :class:`~fcis.inference.Predictor` or an
    :class:`~fcis.inference.OnnxPredictor` (``predict(image) -> {"boxes" [N, 4] xyxy, "labels"
    [N], "scores" [N], "masks" bool[N, H, W], "class_names"}``); both are safe to call from several
    threads at once (the torch model runs in eval mode under ``no_grad``, onnxruntime sessions
    allow concurrent ``run``).
    """

    def __init__(self, predictor: Any, *, name: str, backend: str, input_size: dict[str, int],
                 max_side: int | None = None) -> None:
        self.predictor = predictor
        self.name = name
        self.backend = backend
        self.input_size = dict(input_size)
        # The network sees at most max_size pixels on the long side anyway, but the model pastes
        # every detection's mask at the image's full size (100 x H x W floats: 4.8 GB for a 12 MP
        # photo); a larger image is run at max_side and its kept results are scaled back.
        self.max_side = int(max_side) if max_side else max(1024, 2 * int(input_size["max_size"]))
        self.ready = False

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str = "cpu", score_threshold: float = 0.5,
                        threads: int | None = None, amp: bool = False, amp_dtype: str = "bf16",
                        max_side: int | None = None) -> "ModelBackend":
        """A checkpoint written by ``fcis train``; ``threads``: torch's intra-op threads (the
        process-wide setting; each concurrent inference uses that many)."""
        import torch

        from fcis.inference import Predictor

        if threads:
            torch.set_num_threads(int(threads))
        predictor = Predictor.from_checkpoint(path, device=device, score_threshold=score_threshold,
                                              amp=amp, amp_dtype=amp_dtype)
        cfg = predictor.model.config
        return cls(predictor, name=str(predictor.meta.get("model_name") or type(predictor.model).__name__),
                   backend=f"torch ({predictor.device})",
                   input_size={"min_size": int(cfg.min_size), "max_size": int(cfg.max_size)}, max_side=max_side)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, *, score_threshold: float = 0.5,
                  threads: int | None = None, max_side: int | None = None) -> "ModelBackend":
        """A file written by ``fcis export``, in onnxruntime on the CPU with ``threads`` intra-op
        threads per inference."""
        from fcis.inference import OnnxPredictor

        predictor = OnnxPredictor(path, score_threshold=score_threshold, threads=threads)
        cfg = predictor.config
        return cls(predictor, name=str(predictor.meta.get("model_name") or "fcis"), backend="onnxruntime (cpu)",
                   input_size={"min_size": int(cfg["min_size"]), "max_size": int(cfg["max_size"])}, max_side=max_side)

    # --- what the API reports ----------------------------------------------------------------

    @property
    def score_threshold(self) -> float:
        return float(self.predictor.score_threshold)

    def classes(self) -> list[dict[str, Any]]:
        """``[{"id": category id, "name": str}]`` in label order (label 1 first)."""
        ids = self.predictor.label_to_cat_id
        return [{"id": int(ids.get(i + 1, i + 1)), "name": n} for i, n in enumerate(self.predictor.class_names)]

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "classes": self.classes(),
                "input_size": self.input_size, "max_side": self.max_side, "score_threshold": self.score_threshold,
                "mask_threshold": float(self.predictor.mask_threshold)}

    # --- inference ---------------------------------------------------------------------------

    def warm_up(self) -> None:
        """One inference on a blank image (first-call allocations), then ``ready``."""
        self.predictor.predict(np.zeros((64, 64, 3), dtype=np.uint8))
        self.ready = True

    def predict(self, image: Image.Image, *, overlay: bool = False) -> dict[str, Any]:
        """The API's answer for an RGB ``image``: ``{"image": {"width", "height"}, "instances":
        [{"category_id", "category", "score", "bbox": [x, y, w, h], "segmentation": COCO RLE
        {"size": [H, W], "counts": str}}], "model", "time_ms"}`` (instances by descending score;
        the entries of ``fcis predict``'s predictions.json without ``image_id``/``file_name``, plus
        the class name). An image whose long side is over ``max_side`` is run at that size and
        the kept boxes and masks are scaled back to the image's size. ``overlay=True`` adds ``"overlay_png"``: the drawn overlay as base64 PNG."""
        start = time.perf_counter()
        scale = self.max_side / max(image.size)
        if scale < 1:
            small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BILINEAR)
            pred = _scale_back(self.predictor.predict(small), small.size, image.size)
        else:
            pred = self.predictor.predict(image)
        output = {k: pred[k] for k in ("boxes", "labels", "scores", "masks")}
        entries = predictions_to_coco_results([output], [0], self.predictor.label_to_cat_id)
        instances = []
        for entry, name in zip(entries, pred["class_names"]):
            instances.append({"category_id": entry["category_id"], "category": name, "score": entry["score"],
                              "bbox": entry["bbox"], "segmentation": entry["segmentation"]})
        result: dict[str, Any] = {"image": {"width": image.width, "height": image.height},
                                  "instances": instances, "model": self.name}
        if overlay:
            from fcis.visualize import draw_predictions

            buf = io.BytesIO()
            draw_predictions(image, pred).save(buf, format="PNG")
            result["overlay_png"] = base64.b64encode(buf.getvalue()).decode("ascii")
        result["time_ms"] = round(1000 * (time.perf_counter() - start), 1)
        return result


def _scale_back(pred: dict[str, Any], small: tuple[int, int], full: tuple[int, int]) -> dict[str, Any]:
    """``pred`` of an image resized from ``full`` (W, H) to ``small``: boxes scaled, masks
    resized (nearest) to ``full``."""
    (w, h), (fw, fh) = small, full
    boxes = np.asarray(pred["boxes"], dtype=np.float32).reshape(-1, 4) * np.array([fw / w, fh / h, fw / w, fh / h], dtype=np.float32)
    masks = np.asarray(pred["masks"]).astype(bool)
    big = np.zeros((len(masks), fh, fw), dtype=bool)
    for n, m in enumerate(masks):
        big[n] = np.asarray(Image.fromarray(m).resize((fw, fh), Image.Resampling.NEAREST))
    return {**pred, "boxes": boxes, "masks": big}
