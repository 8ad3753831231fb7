"""Class-agnostic mask average recall (AR@N), the proposal metric of InstanceFCN (Dai et al.,
ECCV 2016), computed with pycocotools ``COCOeval`` (``useCats=0``) as COCO does for AR.

Per image the results are ranked by score regardless of category and the top ``N`` kept
(``N`` in ``max_dets``). At each IoU threshold ``t`` in 0.50:0.05:0.95, COCOeval matches them to
the image's GT instances one-to-one, greedily in score order (each proposal takes the unmatched
non-crowd GT with the highest mask IoU ``>= t``; a proposal matching only a crowd region is
ignored). Recall at ``t`` = matched non-crowd GT / all non-crowd GT over the dataset; AR@N =
mean of the recall over the 10 thresholds (area range "all"). Because the matching is greedy by
score, the matches of the top ``N`` do not depend on lower-ranked proposals.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
from pycocotools.cocoeval import COCOeval

from .coco_eval import load_res, results_for_iou_type
from .ground_truth import CocoLike, check_results, load_coco_gt

__all__ = ["mask_average_recall"]


def mask_average_recall(
    coco_gt: CocoLike, results: list[dict], *, max_dets: tuple[int, ...] = (10, 100, 1000)
) -> dict[str, float]:
    """Class-agnostic mask AR of ``results`` (COCO results entries with ``segmentation``) against
    the non-crowd instances of ``coco_gt`` (``COCO``, JSON path or dict), see the module
    docstring. Returns ``{"AR@10": float, "AR@100": float, "AR@1000": float}`` (keys follow
    ``max_dets``; fractions in [0, 1]; ``nan`` when the GT has no non-crowd instance).

    Categories are ignored: each result's ``category_id`` is replaced (on a copy) by one GT
    category id, because COCOeval with ``useCats=0`` still drops results whose category is not
    among the GT's.
    """
    max_dets = tuple(sorted(int(m) for m in max_dets))
    if not max_dets or max_dets[0] < 1:
        raise ValueError(f"max_dets must be positive integers, got {max_dets}")
    gt = load_coco_gt(coco_gt)
    check_results(gt, results, need_segmentation=True)
    cat_ids = sorted(gt.getCatIds())
    if not cat_ids:
        return {f"AR@{m}": math.nan for m in max_dets}
    prepared = results_for_iou_type(results, "segm")
    for r in prepared:
        r["category_id"] = cat_ids[0]
    dt = load_res(gt, prepared)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, dt, "segm")
        ev.params.imgIds = sorted(gt.getImgIds())
        ev.params.useCats = 0
        ev.params.maxDets = list(max_dets)
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    recall = ev.eval["recall"]  # [T, K=1, A=1, M]
    out = {}
    for m_idx, m in enumerate(max_dets):
        r = recall[:, 0, 0, m_idx]
        r = r[r > -1]
        out[f"AR@{m}"] = float(np.mean(r)) if r.size else math.nan
    return out
