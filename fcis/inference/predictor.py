"""Predict on single images with a trained checkpoint."""

from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fcis.models.mask_paste import detect_windows, mask_window_to_rle
from fcis.runtime.amp import autocast, check_amp
from fcis.runtime.device import resolve_device
from fcis.runtime.errors import InputError

from .image_input import load_image_array

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor

__all__ = ["Predictor", "to_image_tensor"]


def to_image_tensor(x: ImageLike) -> torch.Tensor:
    """``float32[3, H, W]`` in [0, 1] from a file path, a PIL image, a numpy ``HxWx3`` (or
    ``HxW``/``HxWx4``) array (uint8, or float in [0, 1]) or a ``3xHxW`` tensor (float in [0, 1],
    or uint8)."""
    if isinstance(x, torch.Tensor):
        if x.ndim != 3 or x.shape[0] != 3:
            raise InputError(f"an image tensor must be 3xHxW, got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            return x.float().div(255)
        if not x.is_floating_point():
            raise InputError(f"an image tensor must be float in [0, 1] or uint8, got {x.dtype}")
        return x.float()
    return torch.from_numpy(load_image_array(x))


class Predictor:
    """A model plus what is needed to read its outputs (class names, category ids, thresholds).

    ``predict(x)`` returns ``{"boxes": float32[N, 4] xyxy, "labels": int64[N] (1..C), "scores":
    float32[N] (descending), "masks": bool[N, H, W] (binarised at the model's mask_threshold),
    "class_names": list[str] (one per detection), "image_size": (H, W)}``, on the CPU, keeping
    only detections with ``score >= score_threshold`` (applied before any mask is pasted);
    ``predict_rle(x)`` the same with ``"rles"`` (COCO RLE) instead of ``"masks"``, in memory
    bounded by one box window. ``amp=True`` runs the model under ``torch.autocast`` with
    ``amp_dtype`` (``"bf16"``, or ``"fp16"`` on CUDA; see :mod:`fcis.engine.amp`).
    """

    def __init__(self, model: torch.nn.Module, class_names: list[str], *, device: str | torch.device = "cpu",
                 score_threshold: float = 0.5, label_to_cat_id: dict[int, int] | None = None,
                 meta: dict[str, Any] | None = None, amp: bool = False, amp_dtype: str = "bf16") -> None:
        self.device = resolve_device(device)
        self.amp_dtype = check_amp(amp, amp_dtype, self.device)
        self.model = model.to(self.device).eval()
        # A class-agnostic model (segment proposals, e.g. InstanceFCN) has one class: "object".
        self.class_names = ["object"] if model.config.class_agnostic else list(class_names)  # type: ignore[union-attr]
        self.score_threshold = float(score_threshold)
        self.label_to_cat_id = dict(label_to_cat_id or {i + 1: i + 1 for i in range(len(self.class_names))})
        self.mask_threshold = float(model.config.mask_threshold)  # type: ignore[union-attr, arg-type]
        self.meta = meta or {}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        score_threshold: float = 0.5, amp: bool = False, amp_dtype: str = "bf16") -> "Predictor":
        from fcis.engine.checkpoint import load_model  # checkpoints are the training engine's format

        model, meta = load_model(path, device)
        names = meta["class_names"] or [str(i + 1) for i in range(model.config.num_classes)]  # type: ignore[union-attr, arg-type]
        return cls(model, names, device=device, score_threshold=score_threshold,
                   label_to_cat_id=meta["label_to_cat_id"] or None, meta=meta, amp=amp, amp_dtype=amp_dtype)

    def class_name(self, label: int) -> str:
        return self.class_names[label - 1] if 1 <= label <= len(self.class_names) else str(label)

    @torch.no_grad()
    def _detections(self, x: ImageLike, mask_fn) -> tuple[dict[str, Any], list]:
        """Run the model on one image; ``mask_fn(MaskWindow) -> mask`` per detection kept (score
        threshold applied before any mask is pasted; one window in memory at a time)."""
        image = to_image_tensor(x).to(self.device)
        size = tuple(image.shape[-2:])
        boxes, labels, scores, masks = [], [], [], []
        with autocast(self.device, self.amp_dtype):
            (windows,) = detect_windows(self.model, [image], score_threshold=self.score_threshold)
            del image
            for det in windows:
                det.window = det.window.float()
                boxes.append(det.box.float().cpu())
                labels.append(det.label)
                scores.append(det.score)
                masks.append(mask_fn(det))
        labels_t = torch.tensor(labels, dtype=torch.int64)
        return {
            "boxes": torch.stack(boxes) if boxes else torch.zeros(0, 4),
            "labels": labels_t,
            "scores": torch.tensor(scores, dtype=torch.float32),
            "class_names": [self.class_name(int(l)) for l in labels],
            "image_size": size,
        }, masks

    def predict(self, x: ImageLike) -> dict[str, Any]:
        out, masks = self._detections(x, lambda det: det.full_mask(self.mask_threshold).cpu())
        out["masks"] = torch.stack(masks) if masks else torch.zeros(0, *out["image_size"], dtype=torch.bool)
        return out

    def predict_rle(self, x: ImageLike) -> dict[str, Any]:
        """:meth:`predict` with each mask as COCO compressed RLE (``"rles"``: list of ``{"size":
        [H, W], "counts": str}``) instead of ``"masks"``: no H×W mask is ever built, so memory is
        bounded by one box window whatever the image's size (what ``fcis predict`` uses)."""
        out, rles = self._detections(x, lambda det: mask_window_to_rle(det, self.mask_threshold))
        out["rles"] = rles
        return out

    def predict_many(self, inputs: Iterable[ImageLike], *, progress: bool = True) -> list[dict[str, Any]]:
        """:meth:`predict` over ``inputs`` (paths or images), with a progress bar."""
        inputs = list(inputs)
        return [self.predict(x) for x in tqdm(inputs, desc="predict", unit="img", disable=not progress)]

    __call__ = predict
