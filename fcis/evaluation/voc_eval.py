"""Mask mAP^r: the VOC-style instance-segmentation AP of SDS (Hariharan et al., ECCV 2014) that
FCIS and InstanceFCN report on PASCAL VOC / SBD, computed on a COCO-format ground truth.

Protocol, for each category ``c`` of the GT and each IoU threshold ``t``:

1. **Detections.** All results of category ``c`` over all images, ranked by score, descending
   (stable sort: ties keep their order in ``results``). Results of categories absent from the GT
   are not evaluated.
2. **Overlaps.** Mask IoU (``pycocotools.mask.iou``) of each detection with every GT instance of
   ``c`` in the same image. For crowd regions (``iscrowd=1``) pycocotools' crowd overlap is used:
   ``|det ∩ crowd| / |det|``.
3. **Greedy matching** (VOC ``voc_eval`` logic, with crowd regions in the role of VOC's
   "difficult" objects). Going down the ranking, a detection's candidate is the GT region of
   ``c`` in its image with the highest overlap, crowd or not, already matched or not.
   If that overlap is ``>= t``:

   * candidate is a crowd region → the detection is **ignored** (neither TP nor FP);
   * candidate not yet matched → **TP**, and the candidate is marked matched;
   * candidate already matched (a duplicate) → **FP** (the detection is *not* re-assigned to
     another GT, exactly like VOC and FCIS's ``mask_voc_eval``).

   Otherwise (overlap ``< t`` or no GT of ``c`` in the image) → **FP**.
   Note: ``>= t`` (as COCO); the original VOC/FCIS scripts test ``> t`` — the two differ only
   for an IoU exactly equal to the threshold.
4. **Precision/recall.** ``recall = cumTP / npos`` with ``npos`` = number of non-crowd GT
   instances of ``c``; ``precision = cumTP / (cumTP + cumFP)``.
5. **AP** (default, VOC2010+ rule): area under the interpolated PR curve using all points —
   append sentinels ``(recall 0, precision 0)`` and ``(recall 1, precision 0)``, make precision
   monotone non-increasing from the right (``p(r) = max_{r' >= r} p(r')``) and sum
   ``Δrecall × precision`` over the points where recall changes. With ``use_07_metric=True``,
   the VOC2007 11-point rule: mean over ``r in {0, 0.1, ..., 1}`` of the max precision at
   recall ``>= r`` (0 when that recall is never reached); ``r`` is ``i/10`` exactly, avoiding
   the ``np.arange(0, 1.1, 0.1)`` rounding of the original script (``0.30000000000000004``).
6. **mAP@t** = mean of the per-class APs over classes with at least one non-crowd GT instance;
   classes without GT get AP ``nan`` and are excluded (``nan`` if no class has GT).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils

from .ground_truth import CocoLike, check_results, load_coco_gt, results_to_rles, scores_array

__all__ = ["evaluate_voc", "voc_ap", "RULE_ALL_POINTS", "RULE_07"]

RULE_ALL_POINTS = "VOC2010+ all-points area under the monotone PR curve"
RULE_07 = "VOC2007 11-point interpolated AP"


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """AP from ``recall``/``precision`` ``float[D]`` (cumulative, in ranking order); see the module
    docstring, step 5. Empty inputs (no detections) give 0."""
    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    precision = np.asarray(precision, dtype=np.float64).reshape(-1)
    if recall.size == 0:
        return 0.0
    if use_07_metric:
        ap = 0.0
        for i in range(11):
            reached = recall >= i / 10
            ap += (precision[reached].max() if reached.any() else 0.0) / 11
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changed = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changed + 1] - mrec[changed]) * mpre[changed + 1]))


def _best_overlaps(gt, results, rles):
    """For each result: ``(best overlap, GT annotation id of the best region, is that region
    crowd)`` over the GT regions of its category in its image (overlap ``-inf`` when there are
    none). One ``mask.iou`` call per (image, category)."""
    n = len(results)
    best_iou = np.full(n, -np.inf)
    best_gt = np.full(n, -1, dtype=np.int64)
    best_crowd = np.zeros(n, dtype=bool)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, r in enumerate(results):
        groups[(r["image_id"], r["category_id"])].append(i)
    for (img_id, cat_id), idx in groups.items():
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[img_id], catIds=[cat_id]))
        if not anns:
            continue
        gt_rles = [gt.annToRLE(a) for a in anns]
        crowd = [int(bool(a.get("iscrowd", 0))) for a in anns]
        ious = np.asarray(mask_utils.iou([rles[i] for i in idx], gt_rles, crowd), dtype=np.float64)
        ious = ious.reshape(len(idx), len(anns))
        j = ious.argmax(axis=1)
        best_iou[idx] = ious[np.arange(len(idx)), j]
        best_gt[idx] = np.asarray([anns[k]["id"] for k in j], dtype=np.int64)
        best_crowd[idx] = np.asarray(crowd, dtype=bool)[j]
    return best_iou, best_gt, best_crowd


def _class_pr(best_iou, best_gt, best_crowd, npos, thr):
    """Cumulative recall/precision ``float[D']`` for one class's detections (already in ranking
    order) at IoU threshold ``thr``; ignored detections are dropped."""
    hit = best_iou >= thr
    keep = ~(hit & best_crowd)
    hit, gt_ids = hit[keep], best_gt[keep]
    tp = np.zeros(hit.size, dtype=bool)
    matched: set[int] = set()
    for k in np.flatnonzero(hit):
        g = int(gt_ids[k])
        if g not in matched:
            matched.add(g)
            tp[k] = True
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    recall = ctp / npos
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return recall, precision


def evaluate_voc(
    coco_gt: CocoLike,
    results: list[dict],
    *,
    iou_thresholds: tuple[float, ...] = (0.5, 0.7),
    use_07_metric: bool = False,
) -> dict:
    """Mask mAP^r of ``results`` (COCO results entries with RLE/polygon ``segmentation``, already
    binary — no mask threshold here) against ``coco_gt`` (``COCO``, JSON path or dict), following
    the protocol in this module's docstring.

    Returns ``{"mAP@0.5": float, "mAP@0.7": float, "per_class": {cat_name: {"AP@0.5": float,
    "AP@0.7": float}}, "rule": str}`` (keys follow ``iou_thresholds``, formatted with ``:g``; APs
    are fractions in [0, 1], ``nan`` for classes without GT).
    """
    gt = load_coco_gt(coco_gt)
    check_results(gt, results, need_segmentation=True)
    cats = gt.loadCats(sorted(gt.getCatIds()))
    cat_ids = {c["id"] for c in cats}
    results = [r for r in results if r["category_id"] in cat_ids]
    rles = results_to_rles(gt, results)
    best_iou, best_gt, best_crowd = _best_overlaps(gt, results, rles)
    scores = scores_array(results)
    cat_of = np.asarray([r["category_id"] for r in results], dtype=np.int64)

    keys = [f"{t:g}" for t in iou_thresholds]
    per_class: dict[str, dict[str, float]] = {}
    aps: dict[str, list[float]] = {k: [] for k in keys}
    for c in cats:
        npos = sum(1 for a in gt.loadAnns(gt.getAnnIds(catIds=[c["id"]])) if not a.get("iscrowd", 0))
        name = str(c.get("name", c["id"]))
        if name in per_class:  # duplicate category names: disambiguate by id
            name = f"{name} (id {c['id']})"
        if npos == 0:
            per_class[name] = {f"AP@{k}": math.nan for k in keys}
            continue
        idx = np.flatnonzero(cat_of == c["id"])
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        entry = {}
        for k, t in zip(keys, iou_thresholds):
            rec, prec = _class_pr(best_iou[idx], best_gt[idx], best_crowd[idx], npos, t)
            ap = voc_ap(rec, prec, use_07_metric)
            entry[f"AP@{k}"] = ap
            aps[k].append(ap)
        per_class[name] = entry
    out: dict = {f"mAP@{k}": (float(np.mean(aps[k])) if aps[k] else math.nan) for k in keys}
    out["per_class"] = per_class
    out["rule"] = RULE_07 if use_07_metric else RULE_ALL_POINTS
    return out
