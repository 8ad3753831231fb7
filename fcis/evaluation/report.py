"""All metrics in one call, a text table of them, and ``metrics.json`` on disk."""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections import Counter
from pathlib import Path

from pycocotools.coco import COCO

from ..json_io import write_json
from .class_agnostic import collapse_categories
from .coco_eval import COCO_METRICS, evaluate_coco
from .ground_truth import CocoLike, load_coco_gt
from .proposal_recall import mask_average_recall
from .voc_eval import evaluate_voc

__all__ = ["evaluate_results", "format_metrics_table", "write_metrics", "EvaluationWarning",
           "check_category_ids", "detection_cap_excess", "restrict_to_images"]


class EvaluationWarning(UserWarning):
    """Warned when a score would otherwise be wrong without a word (unknown category ids, more
    objects or detections per image than COCO AP counts)."""


def check_category_ids(gt: COCO, results: list[dict]) -> int:
    """Number of ``results`` whose ``category_id`` is not a GT category (they score nothing).

    Raises ``ValueError`` naming the ids when *no* result has a known category (for example
    0-based ids against 1-based ground truth: AP would be 0.0); warns (:class:`EvaluationWarning`)
    with the counts per unknown id when only some are unknown."""
    known = set(gt.getCatIds())
    unknown = Counter(r["category_id"] for r in results if r["category_id"] not in known)
    n = sum(unknown.values())
    if not n:
        return 0
    ids = ", ".join(f"{c!r} ({k}x)" for c, k in sorted(unknown.items(), key=lambda x: str(x[0])))
    if n == len(results):
        raise ValueError(f"none of the {n} predictions has a category id of the ground truth: predicted ids "
                         f"{ids}; ground-truth ids {sorted(known)} (0-based ids, or another dataset's?)")
    warnings.warn(f"{n} of {len(results)} predictions have category ids that are not in the ground truth "
                  f"and are not scored: {ids}; ground-truth ids {sorted(known)}", EvaluationWarning, stacklevel=3)
    return n


def detection_cap_excess(gt: COCO, results: list[dict], max_dets: int) -> list[str]:
    """Where COCO AP's cap of ``max_dets`` detections per image and category cuts: one line per
    (image, category) with more ground-truth objects or more predictions than ``max_dets``."""
    preds = Counter((r["image_id"], r["category_id"]) for r in results)
    objects = Counter((a["image_id"], a["category_id"]) for a in gt.dataset.get("annotations", [])
                      if not a.get("iscrowd", 0))
    lines = []
    for key in sorted(set(preds) | set(objects), key=str):
        if preds[key] > max_dets or objects[key] > max_dets:
            lines.append(f"image {key[0]} category {key[1]}: {objects[key]} objects, {preds[key]} predictions")
    return lines


def restrict_to_images(gt: COCO, image_ids) -> COCO:
    """A copy of ``gt`` holding only the images ``image_ids`` and their annotations."""
    keep = set(image_ids)
    dataset = copy.copy(gt.dataset)
    dataset["images"] = [im for im in gt.dataset.get("images", []) if im["id"] in keep]
    dataset["annotations"] = [a for a in gt.dataset.get("annotations", []) if a["image_id"] in keep]
    return load_coco_gt(dataset)


def evaluate_results(
    coco_gt: CocoLike, results: list[dict], *, voc: bool = True, proposal_recall: bool = False,
    class_agnostic: bool = False, max_dets: int = 100, skipped_images: list[dict] | None = None,
) -> dict:
    """Every metric of ``results`` (COCO results entries) against ``coco_gt``.

    Returns ``{"segm": evaluate_coco(.., "segm"), "bbox": evaluate_coco(.., "bbox"),
    "voc": evaluate_voc(..), "ar": mask_average_recall(..), "num_images": int,
    "num_detections": int}``. ``"voc"`` only with ``voc=True``, ``"ar"`` only with
    ``proposal_recall=True``; ``"segm"``, ``"voc"`` and ``"ar"`` need masks and are left out when
    the results are non-empty and none has a ``segmentation`` (box-only models).

    ``class_agnostic=True`` scores ``segm``, ``bbox`` and ``voc`` with every GT instance and
    every result in one category "object" (see :mod:`fcis.evaluation.class_agnostic`), always
    adds ``"ar"`` (when the results have masks) and records ``"class_agnostic": True``.

    Never silently wrong: predictions whose category ids are all unknown to the GT raise
    ``ValueError``; some unknown ones are warned about (:class:`EvaluationWarning`) and counted in
    ``"unknown_category_predictions"``. COCO AP counts the ``max_dets`` best detections per image
    and category (COCO: 100); where an image has more objects or predictions than that, a warning
    says so and ``"max_dets_exceeded"`` lists them. ``skipped_images`` (``[{"image_id",
    "file_name", "reason"}]``: images that could not be read, so have no predictions) are left out
    of the ground truth before scoring, and listed in ``"skipped_images"``.
    """
    if skipped_images:
        gt = load_coco_gt(coco_gt)
        skip = {s["image_id"] for s in skipped_images}
        coco_gt = restrict_to_images(gt, [i for i in gt.getImgIds() if i not in skip])
    if class_agnostic:
        coco_gt, results = collapse_categories(coco_gt, results)
        proposal_recall = True
    gt = load_coco_gt(coco_gt)
    unknown = check_category_ids(gt, results) if results else 0
    capped = detection_cap_excess(gt, results, max_dets)
    if capped:
        warnings.warn(f"COCO AP counts at most {max_dets} detections per image and category; "
                      f"{len(capped)} exceed it ({'; '.join(capped[:3])}{'; ...' if len(capped) > 3 else ''}): "
                      f"raise the cap (--max-detections)", EvaluationWarning, stacklevel=2)
    has_masks = not results or any("segmentation" in r for r in results)
    metrics: dict = {}
    if has_masks:
        metrics["segm"] = evaluate_coco(gt, results, "segm", max_dets=max_dets)
    metrics["bbox"] = evaluate_coco(gt, results, "bbox", max_dets=max_dets)
    if voc and has_masks:
        metrics["voc"] = evaluate_voc(gt, results)
    if proposal_recall and has_masks:
        metrics["ar"] = mask_average_recall(gt, results)
    if class_agnostic:
        metrics["class_agnostic"] = True
    metrics["num_images"] = len(gt.getImgIds())
    metrics["num_detections"] = len(results)
    if max_dets != 100 or capped:
        metrics["max_dets"] = int(max_dets)
    if capped:
        metrics["max_dets_exceeded"] = capped
    if unknown:
        metrics["unknown_category_predictions"] = unknown
    if skipped_images:
        metrics["skipped_images"] = list(skipped_images)
    return metrics


def pct(x) -> str:
    """A fraction as a percentage with one decimal; "-" for a missing or non-finite value."""
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def format_metrics_table(metrics: dict) -> str:
    """Aligned text table of an :func:`evaluate_results` dict: one row per COCO task (segm, bbox)
    with the AP columns ×100 to one decimal (``-`` for ``nan``), then a VOC line, an AR line and a
    counts line when those entries are present (headed by a note for class-agnostic metrics)."""
    lines = ["class-agnostic: every category scored as one 'object'"] if metrics.get("class_agnostic") else []
    tasks = [t for t in ("segm", "bbox") if t in metrics]
    if tasks:
        lines.append(f"{'':<6}" + "".join(f"{k:>7}" for k in COCO_METRICS))
        for t in tasks:
            lines.append(f"{t:<6}" + "".join(f"{pct(metrics[t].get(k)):>7}" for k in COCO_METRICS))
    if "voc" in metrics:
        voc = metrics["voc"]
        parts = [f"{k}: {pct(v)}" for k, v in voc.items() if k.startswith("mAP@")]
        lines.append("VOC mask mAP^r  " + "  ".join(parts) + f"  ({voc.get('rule', '')})")
    if "ar" in metrics:
        lines.append("mask AR (class-agnostic)  " + "  ".join(f"{k}: {pct(v)}" for k, v in metrics["ar"].items()))
    counts = [f"{k.replace('num_', '')}: {metrics[k]}" for k in ("num_images", "num_detections") if k in metrics]
    if counts:
        lines.append("  ".join(counts))
    for s in metrics.get("skipped_images", []):
        lines.append(f"skipped (not scored): {s.get('file_name', s['image_id'])}: {s.get('reason', 'unreadable')}")
    return "\n".join(lines)


def write_metrics(out_dir: str | os.PathLike, metrics: dict) -> Path:
    """Write ``metrics`` to ``out_dir/metrics.json`` (creating ``out_dir``) atomically: a temp file
    in the same folder, fsync'd, then ``os.replace``. ``nan``/``inf`` are written as ``null`` so the
    file is strict JSON. Returns the path."""
    return write_json(Path(out_dir) / "metrics.json", metrics)
