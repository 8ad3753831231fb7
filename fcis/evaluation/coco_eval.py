"""COCO AP (pycocotools ``COCOeval``) for masks (``"segm"``) and boxes (``"bbox"``)."""

from __future__ import annotations

import contextlib
import io
import math

from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .ground_truth import CocoLike, check_results, load_coco_gt

__all__ = ["evaluate_coco", "COCO_METRICS", "results_for_iou_type", "load_res"]

#: The keys returned by :func:`evaluate_coco`, in the order of ``COCOeval.stats[0:6]``.
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def results_for_iou_type(results: list[dict], iou_type: str) -> list[dict]:
    """Shallow copies of ``results`` shaped so that ``COCO.loadRes`` treats them right (as
    detectron2 does), leaving the caller's dicts untouched (``loadRes`` writes into them):

    * ``"segm"``: ``bbox`` is dropped, so ``loadRes`` takes ``area`` from the mask (otherwise it
      uses the box area and small/medium/large are defined by boxes). Every entry needs a
      ``segmentation``.
    * ``"bbox"``: ``segmentation`` is dropped; an entry with only a segmentation gets the mask's
      tight box (``mask.toBbox``), so all entries go through ``loadRes``'s box branch.
    """
    out = []
    for i, r in enumerate(results):
        r = dict(r)
        if iou_type == "segm":
            if "segmentation" not in r:
                raise ValueError(f"segm evaluation: result {i} (image_id {r.get('image_id')}) has no 'segmentation'")
            r.pop("bbox", None)
        elif iou_type == "bbox":
            seg = r.pop("segmentation", None)
            if "bbox" not in r or not r["bbox"]:
                if not isinstance(seg, dict):
                    raise ValueError(
                        f"bbox evaluation: result {i} (image_id {r.get('image_id')}) has no 'bbox' and no RLE "
                        "'segmentation' to derive one from"
                    )
                r["bbox"] = [float(v) for v in mask_utils.toBbox(seg)]
        else:
            raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
        out.append(r)
    return out


def load_res(coco_gt: COCO, results: list[dict]) -> COCO:
    """``coco_gt.loadRes(results)`` without its prints; an empty ``results`` gives an empty
    results ``COCO`` (``loadRes`` raises ``IndexError`` on ``[]``)."""
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            return coco_gt.loadRes(results)
        res = COCO()
        res.dataset = {
            "images": list(coco_gt.dataset.get("images", [])),
            "categories": list(coco_gt.dataset.get("categories", [])),
            "annotations": [],
        }
        res.createIndex()
        return res


def accumulated_cocoeval(gt: COCO, dt: COCO, iou_type: str, max_dets: int = 100) -> COCOeval:
    """``COCOeval`` of ``dt`` against ``gt`` over all GT image ids, counting the ``max_dets``
    best detections per image and category, evaluated and accumulated with its prints silenced
    (``ev.eval["precision"]`` is [IoU T, recall R, category K, area A, maxDets M])."""
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = sorted(gt.getImgIds())
        ev.params.maxDets = [1, 10, int(max_dets)]
        ev.evaluate()
        ev.accumulate()
    return ev


def evaluate_coco(coco_gt: CocoLike, results: list[dict], iou_type: str, *, max_dets: int = 100) -> dict[str, float]:
    """COCO AP of ``results`` (COCO results entries) against ``coco_gt`` (a ``COCO``, a JSON path
    or an annotation dict), ``iou_type`` ``"segm"`` (mask IoU) or ``"bbox"``.

    Runs ``COCOeval`` over *all* GT image ids (images without annotations included: detections
    there are false positives) and its default parameters (IoU 0.50:0.05:0.95, 101 recall points),
    except that AP counts the ``max_dets`` (COCO: 100) highest-scored detections per image and
    category (``maxDets = [1, 10, max_dets]``; see :func:`fcis.evaluation.report.detection_cap_excess`).
    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` = ``COCOeval.stats[0:6]`` (read from
    ``eval["precision"]`` at ``max_dets``) as fractions in [0, 1]. COCOeval reports ``-1`` when there is no GT
    in an area range (e.g. no large objects); that becomes ``nan``. Empty ``results`` give ``0.0``
    (``nan`` where COCOeval would say ``-1``) without running into ``loadRes``' ``IndexError``.
    Results whose image is not in the GT raise ``ValueError``. COCOeval's prints are silenced.
    """
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    gt = load_coco_gt(coco_gt)
    check_results(gt, results, need_segmentation=iou_type == "segm")
    prepared = results_for_iou_type(results, iou_type)
    ev = accumulated_cocoeval(gt, load_res(gt, prepared), iou_type, max_dets)
    # COCOeval.summarize's first line hard-codes maxDets=100: read the same numbers from
    # eval["precision"] [T, R, K, A, M] at the last maxDets (A: all, small, medium, large).
    precision = ev.eval["precision"]
    iou_index = {round(float(t), 2): i for i, t in enumerate(ev.params.iouThrs)}
    stats = [_mean_precision(precision[:, :, :, 0, -1]),
             _mean_precision(precision[iou_index[0.5], :, :, 0, -1]),
             _mean_precision(precision[iou_index[0.75], :, :, 0, -1]),
             *(_mean_precision(precision[:, :, :, a, -1]) for a in (1, 2, 3))]
    return dict(zip(COCO_METRICS, stats))


def _mean_precision(p) -> float:
    """COCOeval's mean over the defined entries (``> -1``); ``nan`` where none is (no GT)."""
    p = p[p > -1]
    return float(p.mean()) if p.size else math.nan
