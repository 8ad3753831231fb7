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
tight boxes of the voted masks), each re-implemented here with the same float32 arithmetic.
Only the detections that pass ``score_threshold`` get masks (mask voting is per detection, so
their results are those of the full computation).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from fcis.engine.errors import InputError

from .image_input import load_image_array

__all__ = ["OnnxPredictor", "load_image_array", "preprocess", "postprocess", "nms", "batched_nms", "box_iou",
           "paste_masks_in_frame", "vote_in_frame"]

FORMAT = "fcis-onnx"


def _linear_indices(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's bilinear (align_corners=False) source indices and weights along one axis, in
    float32 as its CPU kernel computes them."""
    scale = np.float32(in_size) / np.float32(out_size)
    real = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    real = np.maximum(real, np.float32(0))
    i0 = real.astype(np.int64)
    i1 = i0 + (i0 < in_size - 1)
    l1 = np.clip(real - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, i1, np.float32(1) - l1, l1


def resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``torch.nn.functional.interpolate(x[None], (out_h, out_w), mode="bilinear",
    align_corners=False)[0]`` for a float32 (C, H, W) array."""
    _, h, w = x.shape
    y0, y1, wy0, wy1 = _linear_indices(h, out_h)
    x0, x1, wx0, wx1 = _linear_indices(w, out_w)
    top, bottom = x[:, y0], x[:, y1]                                      # (C, out_h, W)
    t = top[:, :, x0] * wx0 + top[:, :, x1] * wx1
    b = bottom[:, :, x0] * wx0 + bottom[:, :, x1] * wx1
    return (t * wy0[:, None] + b * wy1[:, None]).astype(np.float32)


def resized_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """GeneralizedRCNNTransform's resized (h, w): short side ``min_size``, long side <= ``max_size``."""
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return int(math.floor(float(h) * scale)), int(math.floor(float(w) * scale))


def preprocess(image: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """(3, H, W) float32 in [0, 1] -> (1, 3, h, w): normalised, then resized, as
    GeneralizedRCNNTransform (eval) does; the graph pads to a multiple of 32 itself."""
    mean = np.asarray(cfg["image_mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(cfg["image_std"], dtype=np.float32)[:, None, None]
    x = (image - mean) / std
    h, w = resized_size(image.shape[1], image.shape[2], int(cfg["min_size"]), int(cfg["max_size"]))
    return resize_bilinear(x, h, w)[None]


# --- boxes -----------------------------------------------------------------------------------------

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """torchvision.ops.box_iou in float32: (N, 4), (M, 4) -> (N, M)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """torchvision.ops.nms: indices kept, by decreasing score (greedy; suppress IoU > threshold)."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = np.arange(i + 1, len(order))
        rest = rest[~suppressed[rest]]
        if rest.size == 0:
            break
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[ovr.astype(np.float64) > iou_threshold]] = True
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, iou_threshold: float) -> np.ndarray:
    """torchvision.ops.batched_nms (NMS per value of ``idxs``), including its choice between the
    coordinate-offset trick (up to 1000 boxes) and one NMS per class, so that float rounding
    matches too. Indices kept, by decreasing score."""
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if boxes.size > 4000:
        keep_mask = np.zeros(len(scores), dtype=bool)
        for c in np.unique(idxs):
            where = np.nonzero(idxs == c)[0]
            keep_mask[where[nms(boxes[where], scores[where], iou_threshold)]] = True
        keep = np.nonzero(keep_mask)[0]
        return keep[np.argsort(-scores[keep], kind="stable")]
    offsets = idxs.astype(np.float32) * (boxes.max() + np.float32(1))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


# --- masks -----------------------------------------------------------------------------------------

def _sample_weights(coord: np.ndarray, size: int) -> np.ndarray:
    """(K, L) grid_sample coordinates (align_corners=False, zero padding) -> (K, L, size) bilinear
    weights over the ``size`` source positions."""
    ix = ((coord + np.float32(1)) * np.float32(size) - np.float32(1)) / np.float32(2)
    i0 = np.floor(ix)
    w1 = ix - i0
    w0 = (i0 + np.float32(1)) - ix
    i0 = i0.astype(np.int64)
    out = np.zeros(coord.shape + (size,), dtype=np.float32)
    k, l = np.indices(coord.shape)
    for idx, wt in ((i0, w0), (i0 + 1, w1)):
        ok = (idx >= 0) & (idx < size)
        out[k[ok], l[ok], idx[ok]] = wt[ok]
    return out


def paste_masks_in_frame(masks: np.ndarray, boxes: np.ndarray, frame: tuple[int, int, int, int]) -> np.ndarray:
    """fcis.models.mask_paste.paste_masks_in_frame: (K, P, P) masks over (K, 4) boxes, bilinear,
    zero outside the box -> (K, y1 - y0, x1 - x0) in the pixel window ``frame``."""
    x0, y0, x1, y1 = frame
    k = masks.shape[0]
    if k == 0 or x1 <= x0 or y1 <= y0:
        return np.zeros((k, max(y1 - y0, 0), max(x1 - x0, 0)), dtype=np.float32)
    wx, wy = _frame_weights(masks, boxes, frame)
    return np.matmul(np.matmul(wy, masks), wx.transpose(0, 2, 1))


def _frame_weights(masks: np.ndarray, boxes: np.ndarray, frame: tuple[int, int, int, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights of the frame's columns (K, w', P) and rows (K, h', P) over each mask's grid;
    pasted = wy @ mask @ wx.T (grid_sample's arithmetic, separated by axis)."""
    x0, y0, x1, y1 = frame
    xs = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5)
    ys = np.arange(y0, y1, dtype=np.float32) + np.float32(0.5)
    w = np.maximum(boxes[:, 2] - boxes[:, 0], np.float32(1e-3))
    h = np.maximum(boxes[:, 3] - boxes[:, 1], np.float32(1e-3))
    gx = (xs[None, :] - boxes[:, 0:1]) / w[:, None] * np.float32(2) - np.float32(1)
    gy = (ys[None, :] - boxes[:, 1:2]) / h[:, None] * np.float32(2) - np.float32(1)
    return _sample_weights(gx, masks.shape[-1]), _sample_weights(gy, masks.shape[-2])


def vote_in_frame(masks: np.ndarray, boxes: np.ndarray, weights: np.ndarray,
                  frame: tuple[int, int, int, int]) -> np.ndarray:
    """The weighted average of :func:`paste_masks_in_frame` over the K masks, (h', w'), as one
    matrix product: [w_k · wy_k @ mask_k]_k (h', K·P) @ [wx_k.T]_k (K·P, w')."""
    x0, y0, x1, y1 = frame
    k, p = masks.shape[0], masks.shape[-1]
    if k == 0 or x1 <= x0 or y1 <= y0:
        return np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=np.float32)
    wx, wy = _frame_weights(masks, boxes, frame)
    left = np.matmul(wy, masks) * weights[:, None, None]                   # (K, h', P)
    left = left.transpose(1, 0, 2).reshape(y1 - y0, k * p)
    right = wx.transpose(0, 2, 1).reshape(k * p, x1 - x0)
    return (left @ right) / max(weights.sum(dtype=np.float32), np.float32(1e-12))


def _frame(boxes: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    return (max(int(math.floor(float(boxes[:, 0].min()))), 0), max(int(math.floor(float(boxes[:, 1].min()))), 0),
            min(int(math.ceil(float(boxes[:, 2].max()))), width), min(int(math.ceil(float(boxes[:, 3].max()))), height))


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
    overlaps = box_iou(det_boxes, boxes) if voting and len(cand) else None
    threshold = np.float32(cfg["mask_threshold"])
    for n in range(len(cand)):
        c = int(labels[n])
        if voting:
            members = np.nonzero((overlaps[n] >= np.float32(cfg["voting_iou"]))
                                 & (class_probs[:, c] > np.float32(cfg["score_thresh"])))[0]
            if members.size == 0:
                members = np.array([int(np.argmax(overlaps[n]))])
        else:
            members = np.array([int(cand[n])])
        member_boxes = boxes[members]
        x0, y0, x1, y1 = _frame(np.concatenate([member_boxes, det_boxes[n:n + 1]]), height, width)
        if voting and cfg.get("voting_binarize", False):   # official: binarise each mask, then average
            w = class_probs[members, c]
            pasted = paste_masks_in_frame(mask_probs[members, c], member_boxes, (x0, y0, x1, y1)) >= threshold
            voted = (w[:, None, None] * pasted).sum(0) / max(w.sum(dtype=np.float32), np.float32(1e-12))
        else:
            voted = vote_in_frame(mask_probs[members, c], member_boxes, class_probs[members, c], (x0, y0, x1, y1))
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

    def predict(self, x: Any) -> dict[str, Any]:
        image = load_image_array(x)
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
