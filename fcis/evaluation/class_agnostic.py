"""Class-agnostic scoring: every ground-truth instance and every result becomes one category.

Used for models that propose segments without classes (InstanceFCN) and, on request, for any
model: AP, AP^r and AR then measure how well instances are found and segmented, whatever the
predicted category.
"""

from __future__ import annotations

import copy

from pycocotools.coco import COCO

from .ground_truth import CocoLike, load_coco_gt

__all__ = ["OBJECT_CATEGORY", "collapse_categories"]

#: The single category of class-agnostic evaluation.
OBJECT_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def collapse_categories(coco_gt: CocoLike, results: list[dict]) -> tuple[COCO, list[dict]]:
    """Copies of ``coco_gt`` (``COCO``, JSON path or dict) and ``results`` (COCO results
    entries) with one category, ``OBJECT_CATEGORY`` (id 1): every annotation and result gets
    ``category_id = 1``. Crowd flags, areas, masks and scores are kept; the inputs are not
    modified."""
    gt = load_coco_gt(coco_gt)
    dataset = copy.deepcopy(gt.dataset)
    dataset["categories"] = [dict(OBJECT_CATEGORY)]
    for ann in dataset.get("annotations", []):
        ann["category_id"] = OBJECT_CATEGORY["id"]
    collapsed = [{**r, "category_id": OBJECT_CATEGORY["id"]} for r in results]
    return load_coco_gt(dataset), collapsed
