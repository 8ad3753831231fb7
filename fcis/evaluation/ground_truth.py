"""Loading COCO-style ground truth and checking results against it (shared by every evaluator).

Ground truth may be given as a ``pycocotools.coco.COCO``, a path to an annotation JSON, or the
annotation dict itself. pycocotools prints progress lines; they are silenced here.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Iterable
from typing import TypeAlias

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

__all__ = ["CocoLike", "load_coco_gt", "check_results", "results_to_rles", "scores_array"]

CocoLike: TypeAlias = COCO | str | os.PathLike | dict


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def load_coco_gt(coco_gt: CocoLike) -> COCO:
    """Return a ``COCO`` for ``coco_gt`` (a ``COCO``, a JSON path or an annotation dict).

    COCOeval needs ``iscrowd`` and ``area`` on every GT annotation; when some lack them, a copy is
    returned with ``iscrowd = 0`` and ``area`` = mask area (or box area without segmentation). A
    given ``COCO`` that already has both fields is returned as is (never modified).
    """
    if isinstance(coco_gt, COCO):
        coco = coco_gt
    elif isinstance(coco_gt, (str, os.PathLike)):
        with _quiet():
            coco = COCO(os.fspath(coco_gt))
    elif isinstance(coco_gt, dict):
        coco = COCO()
        coco.dataset = copy.deepcopy(coco_gt)
        with _quiet():
            coco.createIndex()
    else:
        raise TypeError(f"coco_gt must be a pycocotools COCO, a path or a dict, got {type(coco_gt).__name__}")
    anns = coco.dataset.get("annotations", [])
    if all("iscrowd" in a and "area" in a for a in anns):
        return coco
    dataset = copy.deepcopy(coco.dataset)
    fixed = COCO()
    fixed.dataset = dataset
    with _quiet():
        fixed.createIndex()
    for a in dataset.get("annotations", []):
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            if a.get("segmentation"):
                a["area"] = float(mask_utils.area(fixed.annToRLE(a)))
            else:
                a["area"] = float(a["bbox"][2] * a["bbox"][3])
    return fixed


def check_results(coco_gt: COCO, results: Iterable[dict], *, need_segmentation: bool) -> None:
    """Raise ``ValueError`` when a result names an image absent from ``coco_gt`` (pycocotools only
    asserts), or, with ``need_segmentation``, lacks a ``segmentation`` or has an RLE whose
    ``size`` is not the GT image's ``[height, width]`` (pycocotools would silently give IoU -1)."""
    imgs = coco_gt.imgs
    for i, r in enumerate(results):
        img = imgs.get(r["image_id"])
        if img is None:
            raise ValueError(f"result {i} has image_id {r['image_id']!r}, which is not in the ground truth")
        if not need_segmentation:
            continue
        seg = r.get("segmentation")
        if seg is None:
            raise ValueError(f"result {i} (image_id {r['image_id']}) has no 'segmentation'")
        if isinstance(seg, dict):
            size = [int(s) for s in seg["size"]]
            if size != [img["height"], img["width"]]:
                raise ValueError(
                    f"result {i} (image_id {r['image_id']}): RLE size {size} differs from the image's "
                    f"[height, width] = {[img['height'], img['width']]}"
                )


def results_to_rles(coco_gt: COCO, results: list[dict]) -> list[dict]:
    """Compressed RLEs (list of ``{"size": [H, W], "counts": ...}``, one per result) of the results'
    ``segmentation`` (compressed/uncompressed RLE or polygons, via ``COCO.annToRLE``)."""
    return [coco_gt.annToRLE(r) for r in results]


def scores_array(results: list[dict]) -> np.ndarray:
    """``float64[N]`` scores of ``results``."""
    return np.asarray([float(r["score"]) for r in results], dtype=np.float64).reshape(-1)
