"""Run a model over a dataset and score it with the COCO (and VOC-style) evaluation."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from fcis.runtime.device import resolve_device


def predict_dataset(model: torch.nn.Module, dataset, device: str | torch.device = "cpu", *,
                    batch_size: int = 1, progress: bool = True, workers: int = 0,
                    label_to_cat_id: dict[int, int] | None = None, amp: bool = False,
                    amp_dtype: str = "bf16", distributed: bool | None = None) -> list[dict]:
    """COCO results entries (RLE masks, original category ids) for every readable image of a
    :class:`fcis.data.CocoInstances` ``dataset``, in dataset order: :func:`predict_dataset_with_skips`'
    results (see there)."""
    return predict_dataset_with_skips(model, dataset, device, batch_size=batch_size, progress=progress,
                                      workers=workers, label_to_cat_id=label_to_cat_id, amp=amp,
                                      amp_dtype=amp_dtype, distributed=distributed)[0]


@torch.no_grad()
def predict_dataset_with_skips(model: torch.nn.Module, dataset, device: str | torch.device = "cpu", *,
                               batch_size: int = 1, progress: bool = True, workers: int = 0,
                               label_to_cat_id: dict[int, int] | None = None, amp: bool = False,
                               amp_dtype: str = "bf16", distributed: bool | None = None
                               ) -> tuple[list[dict], list[dict]]:
    """``(results, skipped)``: COCO results entries (RLE masks, original category ids) for every
    readable image of a :class:`fcis.data.CocoInstances` ``dataset``, in dataset order, and the
    images that could not be read (``[{"image_id", "file_name", "reason"}]``: they have no
    predictions, so score them with ``evaluate_results(..., skipped_images=skipped)``, which
    leaves their ground truth out instead of counting its objects as missed).

    Each mask is pasted into its box window and encoded straight into RLE
    (``fcis.models.mask_paste.detect_windows``): memory does not grow with detections × image size.

    Masks are binarised at ``model.config.mask_threshold``; labels map to category ids through
    ``label_to_cat_id`` (default: the dataset's). The model's train/eval mode is restored after.
    ``amp`` runs the model under ``torch.autocast`` with ``amp_dtype`` (``"bf16"``/``"fp16"``,
    see :mod:`fcis.engine.amp`); outputs are converted to float32.

    Distributed (``distributed=True``, or ``None`` while a process group of several processes
    is active, e.g. under torchrun): each process predicts the images ``rank, rank + W, ...``
    (W = world size), the results are gathered with ``all_gather_object``, and every process
    returns all of them in dataset order. It must then be called on every process.
    """
    from fcis.data import collate
    from fcis.evaluation.coco_results import window_result
    from fcis.models.mask_paste import detect_windows

    from . import distributed as dist_utils
    from .amp import autocast, check_amp

    device = resolve_device(device)
    dtype = check_amp(amp, amp_dtype, device)
    mapping = dataset.label_to_cat_id if label_to_cat_id is None else label_to_cat_id
    model_config: Any = model.config
    threshold = model_config.mask_threshold
    shard = dist_utils.is_distributed() if distributed is None else bool(distributed)
    rank, world = (dist_utils.rank(), dist_utils.world_size()) if shard else (0, 1)
    indices = list(range(rank, len(dataset), world))
    loader = DataLoader(_IndexedSubset(dataset, indices), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=partial(_collate_indexed, collate=collate))
    was_training = model.training
    model.eval()
    per_image: list[tuple[int, list[dict]]] = []
    try:
        for idxs, images, targets in tqdm(loader, desc="predict", unit="batch", leave=False,
                                          disable=not progress or rank != 0):
            if not images:  # every image of the batch was unreadable (skip mode)
                continue
            with autocast(device, dtype):
                per_det = detect_windows(model, [im.to(device) for im in images])
                for index, windows, target in zip(idxs, per_det, targets):
                    image_id = int(target["image_id"])
                    per_image.append((index, [window_result(det, image_id, mapping, threshold) for det in windows]))
    finally:
        model.train(was_training)
    if shard:
        per_image = [item for part in dist_utils.gather(per_image) for item in part]
    done = {index for index, _ in per_image}
    reasons = {path: reason for path, reason in getattr(dataset, "bad_samples", [])}
    skipped = []
    for index in range(len(dataset)):
        if index not in done:
            path = str(dataset.image_path(index))
            skipped.append({"image_id": int(dataset.image_ids[index]), "file_name": path,
                            "reason": reasons.get(path, "cannot read image")})
    results = [entry for _, entries in sorted(per_image, key=lambda item: item[0]) for entry in entries]
    return results, skipped


class _IndexedSubset(torch.utils.data.Dataset):
    """``dataset[indices[k]]`` as ``(indices[k], sample)``, or None for an unreadable sample."""

    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        sample = self.dataset[self.indices[k]]
        return None if sample is None else (self.indices[k], sample)


def _collate_indexed(batch: list, collate) -> tuple[list[int], list, list]:
    kept = [b for b in batch if b is not None]
    images, targets = collate([sample for _, sample in kept])
    return [i for i, _ in kept], images, targets


def evaluate_model(model: torch.nn.Module, dataset, device: str | torch.device = "cpu", *,
                   batch_size: int = 1, progress: bool = True, workers: int = 0, voc: bool = True,
                   proposal_recall: bool = False, label_to_cat_id: dict[int, int] | None = None) -> dict:
    """:func:`predict_dataset` then ``fcis.evaluation.evaluate_results`` against ``dataset.coco``:
    ``{"segm": {AP, AP50, ...}, "bbox": {...}, "voc": {...}}`` (and ``"ar"`` with
    ``proposal_recall``). A model whose config says ``class_agnostic`` (InstanceFCN) is scored
    with all categories as one and always gets ``"ar"``."""
    from fcis.evaluation import evaluate_results

    model_config: Any = model.config
    class_agnostic = model_config.class_agnostic
    results, skipped = predict_dataset_with_skips(model, dataset, device, batch_size=batch_size, progress=progress,
                                                  workers=workers, label_to_cat_id=label_to_cat_id)
    return evaluate_results(dataset.coco, results, voc=voc, proposal_recall=proposal_recall or class_agnostic,
                            class_agnostic=class_agnostic, skipped_images=skipped)
