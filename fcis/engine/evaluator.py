"""Run a model over a dataset and score it with the COCO (and VOC-style) evaluation."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import resolve_device


def _to_cpu(output: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in output.items()}


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset, device: str | torch.device = "cpu", *,
                    batch_size: int = 1, progress: bool = True, workers: int = 0,
                    label_to_cat_id: dict[int, int] | None = None) -> list[dict]:
    """COCO results entries (RLE masks, original category ids) for every readable image of a
    :class:`fcis.data.CocoInstances` ``dataset``, in dataset order.

    Masks are binarised at ``model.config.mask_threshold``; labels map to category ids through
    ``label_to_cat_id`` (default: the dataset's). The model's train/eval mode is restored after.
    """
    from fcis.data import collate
    from fcis.evaluation import predictions_to_coco_results

    device = resolve_device(device)
    mapping = dataset.label_to_cat_id if label_to_cat_id is None else label_to_cat_id
    threshold = model.config.mask_threshold
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    was_training = model.training
    model.eval()
    results: list[dict] = []
    try:
        for images, targets in tqdm(loader, desc="predict", unit="batch", disable=not progress, leave=False):
            if not images:  # every image of the batch was unreadable (skip mode)
                continue
            outputs = model([im.to(device) for im in images])
            image_ids = [int(t["image_id"]) for t in targets]
            results.extend(predictions_to_coco_results([_to_cpu(o) for o in outputs], image_ids, mapping,
                                                       mask_threshold=threshold))
    finally:
        model.train(was_training)
    return results


def evaluate_model(model: torch.nn.Module, dataset, device: str | torch.device = "cpu", *,
                   batch_size: int = 1, progress: bool = True, workers: int = 0, voc: bool = True,
                   proposal_recall: bool = False, label_to_cat_id: dict[int, int] | None = None) -> dict:
    """:func:`predict_dataset` then ``fcis.evaluation.evaluate_results`` against ``dataset.coco``:
    ``{"segm": {AP, AP50, ...}, "bbox": {...}, "voc": {...}}`` (and ``"ar"`` with
    ``proposal_recall``)."""
    from fcis.evaluation import evaluate_results

    results = predict_dataset(model, dataset, device, batch_size=batch_size, progress=progress,
                              workers=workers, label_to_cat_id=label_to_cat_id)
    return evaluate_results(dataset.coco, results, voc=voc, proposal_recall=proposal_recall)
