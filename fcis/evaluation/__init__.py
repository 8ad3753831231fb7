"""Evaluation of instance-segmentation results: COCO AP (masks and boxes), the VOC-style mask
mAP^r of FCIS/SDS, class-agnostic mask AR of InstanceFCN, and reporting.

Typical use::

    results = predictions_to_coco_results(outputs, image_ids, dataset.label_to_cat_id,
                                          mask_threshold=0.4)
    metrics = evaluate_results(coco_gt, results, proposal_recall=True)
    print(format_metrics_table(metrics))
    write_metrics(out_dir, metrics)
"""

from .coco_eval import evaluate_coco
from .coco_results import load_results, predictions_to_coco_results
from .proposal_recall import mask_average_recall
from .report import evaluate_results, format_metrics_table, write_metrics
from .voc_eval import evaluate_voc

__all__ = [
    "predictions_to_coco_results",
    "evaluate_coco",
    "evaluate_voc",
    "mask_average_recall",
    "evaluate_results",
    "format_metrics_table",
    "write_metrics",
    "load_results",
]
