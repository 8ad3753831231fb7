"""All metrics in one call, a text table of them, and ``metrics.json`` on disk."""

from __future__ import annotations

import math
import os
from pathlib import Path


from ..json_io import write_json
from .coco_eval import COCO_METRICS, evaluate_coco
from .class_agnostic import collapse_categories
from .ground_truth import CocoLike, load_coco_gt
from .proposal_recall import mask_average_recall
from .voc_eval import evaluate_voc

__all__ = ["evaluate_results", "format_metrics_table", "write_metrics"]


def evaluate_results(
    coco_gt: CocoLike, results: list[dict], *, voc: bool = True, proposal_recall: bool = False,
    class_agnostic: bool = False,
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
    """
    if class_agnostic:
        coco_gt, results = collapse_categories(coco_gt, results)
        proposal_recall = True
    gt = load_coco_gt(coco_gt)
    has_masks = not results or any("segmentation" in r for r in results)
    metrics: dict = {}
    if has_masks:
        metrics["segm"] = evaluate_coco(gt, results, "segm")
    metrics["bbox"] = evaluate_coco(gt, results, "bbox")
    if voc and has_masks:
        metrics["voc"] = evaluate_voc(gt, results)
    if proposal_recall and has_masks:
        metrics["ar"] = mask_average_recall(gt, results)
    if class_agnostic:
        metrics["class_agnostic"] = True
    metrics["num_images"] = len(gt.getImgIds())
    metrics["num_detections"] = len(results)
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
    return "\n".join(lines)


def write_metrics(out_dir: str | os.PathLike, metrics: dict) -> Path:
    """Write ``metrics`` to ``out_dir/metrics.json`` (creating ``out_dir``) atomically: a temp file
    in the same folder, fsync'd, then ``os.replace``. ``nan``/``inf`` are written as ``null`` so the
    file is strict JSON. Returns the path."""
    return write_json(Path(out_dir) / "metrics.json", metrics)
