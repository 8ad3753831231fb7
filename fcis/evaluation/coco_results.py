"""Model outputs → COCO results entries, and reading a COCO results JSON.

A COCO results entry is ``{"image_id": int, "category_id": int, "score": float,
"bbox": [x, y, w, h], "segmentation": {"size": [H, W], "counts": str}}`` (``bbox`` and/or
``segmentation``; ``counts`` is pycocotools' compressed RLE string, JSON-serialisable).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["predictions_to_coco_results", "load_results", "encode_masks", "window_result"]

# Masks are binarised and RLE-encoded this many at a time, bounding host memory to
# CHUNK × H × W bytes per image.
_ENCODE_CHUNK = 64


def _is_tensor(x) -> bool:
    """A torch tensor, recognised without importing torch (so that the ONNX path runs without it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _to_numpy(x) -> np.ndarray:
    if _is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def encode_masks(masks, mask_threshold: float = 0.5) -> list[dict]:
    """RLE-encode ``masks``: ``Tensor|ndarray[N, 1, H, W]`` or ``[N, H, W]`` of probabilities (the
    instance is ``mask >= mask_threshold``) or booleans. Returns ``N`` dicts
    ``{"size": [H, W], "counts": str}``. Tensors may live on any device; thresholding happens there
    and only the binary masks are copied to the host, in chunks."""
    if masks.ndim == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"masks must be [N, 1, H, W] or [N, H, W], got {tuple(masks.shape)}")
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, 1, H, W] or [N, H, W], got {tuple(masks.shape)}")
    rles: list[dict] = []
    for start in range(0, masks.shape[0], _ENCODE_CHUNK):
        chunk = masks[start:start + _ENCODE_CHUNK]
        if _is_tensor(chunk):
            torch = sys.modules["torch"]
            binary = (chunk >= mask_threshold) if chunk.dtype != torch.bool else chunk
            binary = binary.to("cpu", torch.uint8).numpy()
        else:
            chunk = np.asarray(chunk)
            binary = (chunk >= mask_threshold) if chunk.dtype != np.bool_ else chunk
            binary = binary.astype(np.uint8)
        # pycocotools wants H x W x N in Fortran order
        encoded = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        for rle in encoded:
            rles.append({"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")})
    return rles


def predictions_to_coco_results(
    outputs: list[dict],
    image_ids: list[int],
    label_to_cat_id: dict[int, int],
    *,
    mask_threshold: float = 0.5,
) -> list[dict]:
    """Convert per-image model outputs to COCO results entries.

    ``outputs[i]`` (for image ``image_ids[i]``) holds ``boxes`` ``[N, 4]`` xyxy pixels, ``labels``
    ``int64[N]`` in 1..C, ``scores`` ``[N]`` and optionally ``masks`` ``[N, 1, H, W]``
    probabilities (instance = ``mask >= mask_threshold``). Each detection becomes
    ``{"image_id", "category_id": label_to_cat_id[label], "bbox": [x, y, w, h], "score",
    "segmentation": RLE with str counts}`` (no ``segmentation`` when the output has no masks).
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"got {len(outputs)} outputs for {len(image_ids)} image ids")
    results: list[dict] = []
    for out, image_id in zip(outputs, image_ids):
        boxes = _to_numpy(out["boxes"]).astype(np.float64).reshape(-1, 4)
        labels = _to_numpy(out["labels"]).astype(np.int64).reshape(-1)
        scores = _to_numpy(out["scores"]).astype(np.float64).reshape(-1)
        n = len(scores)
        if len(boxes) != n or len(labels) != n:
            raise ValueError(
                f"image {image_id}: {len(boxes)} boxes, {len(labels)} labels, {n} scores — must agree"
            )
        if n == 0:
            continue
        missing = sorted({int(l) for l in labels} - set(label_to_cat_id))
        if missing:
            raise ValueError(f"image {image_id}: labels {missing} have no entry in label_to_cat_id")
        rles = None
        if out.get("masks") is not None:
            rles = encode_masks(out["masks"], mask_threshold)
            if len(rles) != n:
                raise ValueError(f"image {image_id}: {len(rles)} masks for {n} detections")
        xywh = boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        for k in range(n):
            entry = {
                "image_id": int(image_id),
                "category_id": int(label_to_cat_id[int(labels[k])]),
                "bbox": [float(v) for v in xywh[k]],
                "score": float(scores[k]),
            }
            if rles is not None:
                entry["segmentation"] = rles[k]
            results.append(entry)
    return results


def window_result(det, image_id: int, label_to_cat_id: dict[int, int], mask_threshold: float) -> dict:
    """The COCO results entry of one :class:`fcis.models.mask_paste.MaskWindow` detection: its
    mask (window ``>= mask_threshold``) encoded straight into RLE, no H×W mask built."""
    from fcis.models.mask_paste import mask_window_to_rle

    if det.label not in label_to_cat_id:
        raise ValueError(f"image {image_id}: label {det.label} has no entry in label_to_cat_id")
    x0, y0, x1, y1 = (float(v) for v in det.box.float())
    det.window = det.window.float()
    return {"image_id": int(image_id), "category_id": int(label_to_cat_id[det.label]),
            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(det.score),
            "segmentation": mask_window_to_rle(det, mask_threshold)}


def _entry_problem(entry) -> str | None:
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object"
    missing = [k for k in ("image_id", "category_id", "score") if k not in entry]
    if missing:
        return f"lacks {', '.join(repr(k) for k in missing)}"
    if "bbox" not in entry and "segmentation" not in entry:
        return "has neither 'bbox' nor 'segmentation'"
    score = entry["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        return f"has a non-numeric or non-finite score {score!r}"
    if "bbox" in entry:
        bb = entry["bbox"]
        if not isinstance(bb, list) or len(bb) != 4:
            return f"has a bbox that is not [x, y, w, h]: {bb!r}"
    if "segmentation" in entry:
        seg = entry["segmentation"]
        if isinstance(seg, dict) and not ("size" in seg and "counts" in seg):
            return "has an RLE segmentation without 'size' and 'counts'"
        if not isinstance(seg, (dict, list)):
            return f"has a segmentation of type {type(seg).__name__} (want RLE dict or polygons)"
    return None


def load_results(path: str | os.PathLike) -> list[dict]:
    """Read a COCO results JSON (a list of results entries, see the module docstring).

    Raises ``ValueError`` naming the file and the first problem when it is not valid JSON, not a
    list, or an entry lacks ``image_id``/``category_id``/``score`` or both ``bbox`` and
    ``segmentation``. A missing file raises ``FileNotFoundError``.
    """
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: a COCO results file must hold a JSON list of entries, got {type(data).__name__}")
    for i, entry in enumerate(data):
        problem = _entry_problem(entry)
        if problem is not None:
            raise ValueError(f"{path}: entry {i} {problem}")
    return data
