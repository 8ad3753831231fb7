"""Run an FCIS model exported with ``fcis export --format onnx`` in onnxruntime, without a checkpoint.

``OnnxPredictor("model.onnx").predict(x)`` has the interface of :class:`fcis.inference.Predictor`
(``x`` a path, PIL image, numpy array or 3xHxW tensor) and returns the same dict, as NumPy
arrays: ``boxes`` float32[N, 4] xyxy, ``labels`` int64[N] (1..C), ``scores`` float32[N]
(descending), ``masks`` bool[N, H, W] (binarised at the model's ``mask_threshold``) and
``class_names``, keeping detections with ``score >= score_threshold``.

The hot path is NumPy + onnxruntime (no PyTorch): the resizing and normalisation of
GeneralizedRCNNTransform, the ONNX graph (backbone, RPN, assembling; see
:mod:`fcis.export.onnx_export`), then FCIS's post-processing of
:func:`fcis.models.fcis.inference.select_detections` (per-class NMS, top-k, mask voting, pasting,
tight boxes of the voted masks), with the same float32 arithmetic; the operations themselves
(NMS, IoU, resizing, pasting, voting) are in :mod:`fcis.inference.numpy_ops`.
Only the detections that pass ``score_threshold`` get masks (mask voting is per detection, so
their results are those of the full computation).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from fcis.runtime.errors import InputError

from .image_input import load_image_array
from .numpy_ops import (
    batched_nms,
    box_iou,
    nms,
    paste_masks_in_frame,
    resize_bilinear,
    resized_size,
    vote_in_frame,
    voted_masks_in_frames,
)
from .official_ops import official_detections, official_input, official_windows

__all__ = ["OnnxPredictor", "load_image_array", "preprocess", "postprocess", "nms", "batched_nms", "box_iou",
           "paste_masks_in_frame", "vote_in_frame"]

FORMAT = "fcis-onnx"


def preprocess(image: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """(3, H, W) float32 in [0, 1] -> (1, 3, h, w): normalised, then resized, as
    GeneralizedRCNNTransform (eval) does; the graph pads to a multiple of 32 itself."""
    mean = np.asarray(cfg["image_mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(cfg["image_std"], dtype=np.float32)[:, None, None]
    x = (image - mean) / std
    h, w = resized_size(image.shape[1], image.shape[2], int(cfg["min_size"]), int(cfg["max_size"]))
    return resize_bilinear(x, h, w)[None]


# --- post-processing -----------------------------------------------------------------------------

def postprocess(boxes: np.ndarray, class_probs: np.ndarray, mask_probs: np.ndarray, image_size: tuple[int, int],
                cfg: dict[str, Any], score_threshold: float = 0.0, *, binary: bool = False) -> dict[str, np.ndarray]:
    """:func:`fcis.models.fcis.inference.select_detections` in NumPy, keeping the detections with
    ``score >= score_threshold`` (only those get masks).

    boxes (M, 4) in output-image pixels, class_probs (M, C+1), mask_probs (M, C+1, P, P).
    Returns boxes (N, 4), labels (N,), scores (N,) and masks (N, H, W): float32 probabilities,
    or with ``binary`` bool ``probability >= cfg["mask_threshold"]`` (a quarter of the memory)."""
    with np.errstate(divide="ignore", invalid="ignore"):      # 0/0 IoU of empty boxes is NaN, as in torch
        return _postprocess(boxes, class_probs, mask_probs, image_size, cfg, score_threshold, binary)


def _postprocess(boxes, class_probs, mask_probs, image_size, cfg, score_threshold, binary):
    height, width = image_size
    scores = class_probs[:, 1:]
    cand, cls = np.nonzero(scores > np.float32(cfg["score_thresh"]))
    flat = scores[cand, cls]
    keep = batched_nms(boxes[cand], flat, cls, float(cfg["nms_iou"]))[: int(cfg["detections_per_img"])]
    keep = keep[flat[keep] >= np.float32(score_threshold)]
    cand, labels, det_scores = cand[keep], cls[keep] + 1, flat[keep]
    det_boxes = boxes[cand].copy()
    masks = np.zeros((len(cand), height, width), dtype=bool if binary else np.float32)
    voting = bool(cfg["mask_voting"])
    threshold = np.float32(cfg["mask_threshold"])
    frames = voted_masks_in_frames(boxes[cand], labels, boxes, class_probs, mask_probs, (height, width),
                                   iou=float(cfg["voting_iou"]), min_score=float(cfg["score_thresh"]),
                                   voting=voting, kept_index=cand,
                                   binarize_at=float(threshold) if cfg.get("voting_binarize", False) else None)
    for n, ((x0, y0, x1, y1), voted) in enumerate(frames):
        inside = voted >= threshold
        if binary and threshold <= 0:
            masks[n] = True
        masks[n, y0:y1, x0:x1] = inside if binary else voted
        if voting:                                    # the tight box of the voted mask, if any
            if threshold <= 0:
                det_boxes[n] = (0, 0, width, height)
                continue
            ys, xs = np.nonzero(inside)
            if ys.size:
                det_boxes[n] = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
    return {"boxes": det_boxes.astype(np.float32), "labels": labels.astype(np.int64),
            "scores": det_scores.astype(np.float32), "masks": masks}


# --- the predictor ---------------------------------------------------------------------------------

class OnnxPredictor:
    """An exported FCIS model in onnxruntime plus what its metadata says (class names, category
    ids, configuration). Same interface as :class:`fcis.inference.Predictor`; arrays are NumPy.

    ``providers``: onnxruntime execution providers (default: CPU).
    """

    def __init__(self, path: str | os.PathLike, *, score_threshold: float = 0.5,
                 providers: list[str] | None = None, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise InputError(f"running an ONNX model needs onnxruntime (pip install 'fcis[onnx]'): {e}") from None
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: ONNX model not found")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(os.fspath(path), options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise InputError(f"{path}: cannot load ONNX model ({str(e).splitlines()[0][:200]})") from e
        raw = self.session.get_modelmeta().custom_metadata_map
        if raw.get("fcis_format") != json.dumps(FORMAT):
            raise InputError(f"{path}: not an ONNX model written by fcis export (no fcis_format metadata)")
        self.meta = {k: json.loads(v) for k, v in raw.items()}
        self.path = path
        self.config: dict[str, Any] = dict(self.meta["model_config"])
        self.class_names = list(self.meta["class_names"])
        self.label_to_cat_id = {int(k): int(v) for k, v in self.meta["label_to_cat_id"].items()}
        self.mask_threshold = float(self.config["mask_threshold"])
        # The graph's geometry as the exporter measured it (None in files written before they were stored).
        self.size_divisible = self.meta.get("size_divisible")
        self.rpn_stride = self.meta.get("rpn_stride")
        self.feature_stride = self.meta.get("feature_stride")
        self.score_threshold = float(score_threshold)

    @classmethod
    def from_file(cls, path: str | os.PathLike, score_threshold: float = 0.5, **kwargs: Any) -> "OnnxPredictor":
        return cls(path, score_threshold=score_threshold, **kwargs)

    def class_name(self, label: int) -> str:
        return self.class_names[label - 1] if 1 <= label <= len(self.class_names) else str(label)

    def run_graph(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """(3, H, W) float32 image -> candidate boxes (in the image's pixels), class probabilities,
        mask probabilities, and the (H, W) of the image."""
        h, w = image.shape[1:]
        x = preprocess(image, self.config)
        boxes, class_probs, mask_probs = self.session.run(["boxes", "class_probs", "mask_probs"], {"image": x})
        rh = np.float32(h) / np.float32(x.shape[2])
        rw = np.float32(w) / np.float32(x.shape[3])
        boxes = boxes * np.array([rw, rh, rw, rh], dtype=np.float32)
        return boxes, class_probs, mask_probs, (h, w)

    @property
    def official(self) -> bool:
        """Whether the file is an official-variant model (``model_config['variant'] == 'official'``)."""
        return self.config.get("variant", "torchvision") == "official"

    def predict_official(self, image: np.ndarray) -> dict[str, Any]:
        """:meth:`predict` of an official-variant model: the official input
        (:func:`~fcis.inference.official_ops.official_input`), the graph, then the official
        post-processing (:func:`~fcis.inference.official_ops.official_detections`), the NumPy code
        the PyTorch model runs too."""
        cfg = self.config
        data, scale = official_input(image, int(cfg["min_size"]), int(cfg["max_size"]), tuple(cfg["image_mean"]))
        rois, class_probs, mask_probs = self.session.run(["boxes", "class_probs", "mask_probs"], {"image": data[None]})
        dets, _ = official_detections(rois, class_probs, mask_probs, scale, data.shape[1:],
                                      min_drop_size=float(cfg["rpn_min_size"]), nms_iou=float(cfg["nms_iou"]),
                                      max_per_image=int(cfg["detections_per_img"]),
                                      voting_iou=float(cfg["voting_iou"]), binary_thresh=float(cfg["mask_threshold"]),
                                      min_score=float(cfg["score_thresh"]))
        height, width = image.shape[1:]
        boxes, labels, scores, masks = [], [], [], []
        for det, box, window in official_windows(dets, height, width, self.score_threshold):
            mask = np.zeros((height, width), dtype=bool)
            x0, y0 = int(box[0]), int(box[1])
            mask[y0:y0 + window.shape[0], x0:x0 + window.shape[1]] = window >= np.float32(self.mask_threshold)
            boxes.append(box)
            labels.append(det.label)
            scores.append(det.score)
            masks.append(mask)
        return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.array(labels, dtype=np.int64),
                "scores": np.array(scores, dtype=np.float32),
                "masks": np.array(masks, dtype=bool).reshape(-1, height, width),
                "class_names": [self.class_name(int(label)) for label in labels]}

    def predict(self, x: Any) -> dict[str, Any]:
        image = load_image_array(x)
        if self.official:
            return self.predict_official(image)
        boxes, class_probs, mask_probs, size = self.run_graph(image)
        out = postprocess(boxes, class_probs, mask_probs, size, self.config, self.score_threshold, binary=True)
        labels = out["labels"]
        return {"boxes": out["boxes"], "labels": labels, "scores": out["scores"], "masks": out["masks"],
                "class_names": [self.class_name(int(l)) for l in labels]}

    def predict_many(self, inputs: Iterable[Any], *, progress: bool = True) -> list[dict[str, Any]]:
        """:meth:`predict` over ``inputs`` (paths or images), with a progress bar."""
        from tqdm import tqdm

        inputs = list(inputs)
        return [self.predict(x) for x in tqdm(inputs, desc="predict", unit="img", disable=not progress)]

    __call__ = predict
