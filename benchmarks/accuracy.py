"""Sections 4 and 5: accuracy at equal training budget, and the FCIS paper's ablation.

Every model trains from scratch (random backbone) through ``fcis.engine.train`` with one
``TrainConfig`` (same iterations, batch, learning rate, schedule, gradient clipping, seed and data
order), then is evaluated on a held-out split with ``fcis.evaluation.evaluate_results``: COCO mask
AP ("segm"), the paper's VOC mask mAP^r at IoU 0.5/0.7 ("voc") and class-agnostic mask AR@N
("ar", InstanceFCN's metric; given for every model). Training time is the wall time of the
training loop (``train``'s ``time_s``, no validation inside); inference time per image is the
median time of ``model([image])`` during the evaluation (batch 1, masks pasted at full size).

Datasets:
- shapes: ``fcis.data.make_shapes`` with the demo's settings (256×320 images, <= 4 objects of
  32 px to 45% of the short side, 20% held out).
- PennFudanPed: converted with ``fcis.data.convert.convert_instance_masks`` and split once into a
  fixed 130/40 train/held-out split: images sorted by file name, shuffled by ``random.Random(0)``;
  the held-out names are recorded in the JSON. Images are resized by the models to short side 320
  (long side <= 512). Skipped when the data folder is absent.

Ablation (section 5, paper docs/ARCHITECTURE.md §5.1): FCIS joint (default), k = 1 (``group_size=1``),
separate score maps (``score_maps="separate"``), no OHEM (``ohem=False``), each trained with the
same budget; and no mask voting: the joint model evaluated again with ``config.mask_voting=False``.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from .common import Budget, detections_override, log

#: The FCIS paper's VOC 2012 val ablation (mAP^r at IoU 0.5, 0.7), docs/ARCHITECTURE.md §5.1. None: not in that table.
PAPER_VOC = {
    "joint": (65.7, 52.1),
    "k1": (52.5, 38.5),
    "separate": (63.9, 49.7),
    "no_ohem": (None, None),
    "no_voting": (None, None),
}
PAPER_NOTES = {
    "no_ohem": "paper: COCO test-dev mask AP 28.8 with random sampling vs 29.2 with OHEM (R-101)",
    "no_voting": "not in the paper's VOC ablation table",
}
ABLATION_LABELS = {
    "joint": "FCIS joint (default)", "k1": "k = 1 (translation-invariant)",
    "separate": "separate score maps", "no_ohem": "without OHEM (random sampling)",
    "no_voting": "without mask voting (joint model, inference only)",
}

#: run key -> (builder name, model family, config overrides of the run itself)
RUNS = {
    "fcis": ("fcis_resnet18", "fcis", {}),
    "maskrcnn": ("maskrcnn_resnet18_fpn", "maskrcnn", {}),
    "instancefcn": ("instancefcn_resnet18", "instancefcn", {}),
    "fcis_k1": ("fcis_resnet18", "fcis", {"group_size": 1}),
    "fcis_separate": ("fcis_resnet18", "fcis", {"score_maps": "separate"}),
    "fcis_no_ohem": ("fcis_resnet18", "fcis", {"ohem": False}),
}
ABLATION_RUNS = {"joint": "fcis", "k1": "fcis_k1", "separate": "fcis_separate", "no_ohem": "fcis_no_ohem"}

#: Per dataset and model family: the anchors (and proposal counts) chosen for the objects' sizes.
FAMILY_OVERRIDES = {
    "shapes": {
        # objects of 32..115 px in 256×320 images (as the demo)
        "fcis": {"anchor_sizes": (16, 32, 64, 128), "rpn_pre_nms_top_n_test": 1000},
        # one size per FPN level P2..P6: torchvision's (32..512) halved; 128 sampled RoIs per
        # image as FCIS's OHEM keeps 128 (and Detectron2's small-dataset setting), not 512
        "maskrcnn": {"anchor_sizes": (16, 32, 64, 128, 256), "roi_batch_size_per_image": 128},
        "instancefcn": {},
    },
    "pennfudan": {
        # pedestrians of about 40..300 px tall at short side 320
        "fcis": {"anchor_sizes": (32, 64, 128, 256)},
        "maskrcnn": {"roi_batch_size_per_image": 128},  # anchors: torchvision's (32, 64, 128, 256, 512)
        "instancefcn": {},
    },
}
SPLIT_SEED = 0


def default_data_root() -> Path:
    import os

    from .common import REPO

    return Path(os.environ.get("FCIS_SHARED_DATA", REPO.parent / "shared" / "data"))


def _subset(src: Path, dst: Path, image_ids: list[int] | None = None, limit: int = 0) -> Path:
    data = json.loads(src.read_text())
    images = data["images"]
    if image_ids is not None:
        keep_ids = set(image_ids)
        images = [im for im in images if im["id"] in keep_ids]
    if limit:
        images = images[:limit]
    keep = {im["id"] for im in images}
    data["images"] = images
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    dst.write_text(json.dumps(data))
    return dst


def prepare_shapes(budget: Budget, work: Path) -> dict[str, Any]:
    from fcis.data import make_shapes

    paths = make_shapes(work / "shapes", num_images=budget.shapes_num_images, seed=budget.seed,
                        image_size=budget.shapes_image, min_object_size=budget.shapes_min_object_size)
    val = paths["val"]
    if budget.shapes_val_limit:
        val = _subset(val, work / "shapes" / "val_subset.json", limit=budget.shapes_val_limit)
    train_data, val_data = json.loads(paths["train"].read_text()), json.loads(val.read_text())
    return {"train": paths["train"], "val": val, "min_size": min(budget.shapes_image),
            "max_size": max(budget.shapes_image),
            "info": {"images": budget.shapes_num_images, "image_size": list(budget.shapes_image),
                     "min_object_size": budget.shapes_min_object_size,
                     "seed": budget.seed, "train_images": len(train_data["images"]),
                     "val_images": len(val_data["images"]), "val_instances": len(val_data["annotations"]),
                     "classes": [c["name"] for c in train_data["categories"]]}}


def prepare_pennfudan(budget: Budget, work: Path, root: Path) -> dict[str, Any] | None:
    src = root / "PennFudanPed"
    if not (src / "PNGImages").is_dir() or not (src / "PedMasks").is_dir():
        return None
    from fcis.data.convert import convert_instance_masks

    folder = work / "pennfudan"
    folder.mkdir(parents=True, exist_ok=True)
    everything = convert_instance_masks(src / "PNGImages", src / "PedMasks", folder / "all.json",
                                        category="pedestrian")
    images = sorted(json.loads(everything.read_text())["images"], key=lambda im: Path(im["file_name"]).name)
    order = list(range(len(images)))
    random.Random(SPLIT_SEED).shuffle(order)
    train_ids = [images[i]["id"] for i in order[:budget.penn_train]]
    val_ids = [images[i]["id"] for i in order[budget.penn_train:]]
    train = _subset(everything, folder / "train.json", train_ids)
    val_all = _subset(everything, folder / "val.json", val_ids)
    val = val_all
    if budget.penn_val_limit:
        val = _subset(val_all, folder / "val_subset.json", limit=budget.penn_val_limit)
    val_data = json.loads(val.read_text())
    names = {im["id"]: Path(im["file_name"]).name for im in images}
    return {"train": train, "val": val, "min_size": budget.penn_min_size, "max_size": budget.penn_max_size,
            "info": {"source": str(src), "split": f"sorted file names shuffled by random.Random({SPLIT_SEED}); "
                                                  f"first {budget.penn_train} train, the rest held out",
                     "train_images": len(train_ids), "held_out_images": len(val_ids),
                     "evaluated_images": len(val_data["images"]), "val_instances": len(val_data["annotations"]),
                     "held_out_files": sorted(names[i] for i in val_ids),
                     "resize": [budget.penn_min_size, budget.penn_max_size]}}


class TimedModel(torch.nn.Module):
    """Wraps a model for ``predict_dataset``, recording the time of each forward call."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config
        self.times: list[float] = []

    def forward(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.times.append(time.perf_counter() - start)
        return out


def evaluate(model: torch.nn.Module, val_json: Path) -> dict[str, Any]:
    from fcis.data import CocoInstances
    from fcis.engine import predict_dataset
    from fcis.evaluation import evaluate_results

    dataset = CocoInstances(val_json)
    timed = TimedModel(model)
    start = time.perf_counter()
    results = predict_dataset(timed, dataset, "cpu", progress=False, workers=0)
    wall = time.perf_counter() - start
    metrics = evaluate_results(dataset.coco, results, voc=True, proposal_recall=True)
    return {"metrics": metrics, "num_images": len(dataset),
            "inference_s_per_image": statistics.median(timed.times) if timed.times else None,
            "inference_mean_s_per_image": statistics.fmean(timed.times) if timed.times else None,
            "predict_wall_s": wall}


def _loss_curve(run_dir: Path) -> list[list[float]]:
    curve = []
    log_file = run_dir / "log.jsonl"
    if log_file.exists():
        for line in log_file.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("loss") is not None:
                curve.append([rec["iteration"], rec["loss"]])
    return curve


class AccuracyRunner:
    """Trains and evaluates each (dataset, run) once; sections 4 and 5 share the joint FCIS."""

    def __init__(self, budget: Budget, work: Path, data_root: Path | None = None) -> None:
        self.budget, self.work = budget, Path(work)
        self.data_root = Path(data_root) if data_root is not None else default_data_root()
        self._data: dict[str, Any] = {}
        self._runs: dict[tuple[str, str], dict[str, Any]] = {}

    def has_data(self, name: str) -> bool:
        """Whether dataset ``name`` can be prepared (shapes always; PennFudanPed when its folder exists)."""
        src = self.data_root / "PennFudanPed"
        return name == "shapes" or ((src / "PNGImages").is_dir() and (src / "PedMasks").is_dir())

    def dataset(self, name: str) -> dict[str, Any] | None:
        if name not in self._data:
            log(f"accuracy: preparing {name}")
            if name == "shapes":
                self._data[name] = prepare_shapes(self.budget, self.work)
            else:
                self._data[name] = prepare_pennfudan(self.budget, self.work, self.data_root)
        return self._data[name]

    def train_config(self, iterations: int, data: dict[str, Any]):
        from fcis.engine import TrainConfig

        b = self.budget
        return TrainConfig(iterations=iterations, batch_size=b.batch_size, optimizer=b.optimizer, lr=b.lr, warmup_iters=b.warmup_iters,
                           lr_steps=b.lr_steps, clip_grad_norm=b.clip_grad_norm, workers=b.train_workers,
                           seed=b.seed, device="cpu", eval_every=0, checkpoint_every=0,
                           log_every=max(1, iterations // 25), min_size=data["min_size"], max_size=data["max_size"],
                           anchors="paper")  # the anchors chosen per dataset above, not fitted (comparable runs)

    def iterations(self, dataset: str) -> int:
        return self.budget.shapes_iterations if dataset == "shapes" else self.budget.penn_iterations

    def run(self, dataset: str, key: str) -> dict[str, Any]:
        if (dataset, key) in self._runs:
            return self._runs[(dataset, key)]
        from fcis.engine import load_model, train
        from fcis.models import BUILDERS

        model_name, family, run_overrides = RUNS[key]
        data = self.dataset(dataset)
        overrides = {**FAMILY_OVERRIDES[dataset][family], **run_overrides}
        overrides.update(self.budget.model_overrides.get(model_name, {}))
        if self.budget.eval_detections:
            overrides.update(detections_override(model_name, self.budget.eval_detections))
        cfg = self.train_config(self.iterations(dataset), data)
        record: dict[str, Any] = {"model": model_name, "overrides": overrides, "train_config": cfg.to_dict()}
        if model_name not in BUILDERS:
            record["available"] = False
            self._runs[(dataset, key)] = record
            return record
        record["available"] = True
        out_dir = self.work / "runs" / dataset / key
        log(f"accuracy: training {key} ({model_name}) on {dataset}, {cfg.iterations} iterations")
        try:
            summary = train(model_name, data["train"], None, out_dir, cfg, model_overrides=overrides,
                            overwrite=True, progress=False)
        except Exception as e:  # noqa: BLE001 - a diverged or broken run is a result, not a crash
            record["error"] = f"{type(e).__name__}: {e}"
            record["loss_curve"] = _loss_curve(out_dir)
            self._runs[(dataset, key)] = record
            return record
        images = cfg.iterations * cfg.batch_size
        record.update({
            "train_time_s": summary["time_s"], "train_s_per_iter": summary["time_s"] / cfg.iterations,
            "train_images_per_s": images / summary["time_s"], "final_losses": summary["losses"],
            "nonfinite_steps": summary["nonfinite_steps"], "checkpoint": summary["last_checkpoint"],
            "loss_curve": _loss_curve(out_dir),
        })
        log(f"accuracy: evaluating {key} on {dataset}")
        model, _ = load_model(summary["last_checkpoint"], "cpu")
        record["class_agnostic"] = model.config.class_agnostic
        record.update(evaluate(model, data["val"]))
        self._runs[(dataset, key)] = record
        return record

    def no_voting(self, dataset: str) -> dict[str, Any]:
        """The joint FCIS of ``dataset`` evaluated with ``config.mask_voting = False``."""
        from fcis.engine import load_model

        joint = self.run(dataset, "fcis")
        if joint.get("error") or not joint.get("available"):
            return {"error": "the joint model did not train", "available": joint.get("available", False)}
        log(f"accuracy: evaluating the joint FCIS on {dataset} without mask voting")
        model, _ = load_model(joint["checkpoint"], "cpu")
        model.config.mask_voting = False
        return {"available": True, "model": joint["model"], "overrides": {"mask_voting": False},
                "same_weights_as": "joint", **evaluate(model, self.dataset(dataset)["val"])}

    def cleanup(self) -> None:
        shutil.rmtree(self.work / "runs", ignore_errors=True)


def _settings(runner: AccuracyRunner) -> dict[str, Any]:
    b = runner.budget
    return {"batch_size": b.batch_size, "optimizer": b.optimizer, "lr": b.lr, "warmup_iters": b.warmup_iters, "lr_steps": list(b.lr_steps),
            "clip_grad_norm": b.clip_grad_norm, "momentum": 0.9, "weight_decay": 5e-4, "seed": b.seed,
            "workers": b.train_workers, "shapes_iterations": b.shapes_iterations,
            "penn_iterations": b.penn_iterations, "family_overrides": FAMILY_OVERRIDES}


def run_accuracy(runner: AccuracyRunner, datasets: tuple[str, ...] = ("shapes", "pennfudan")) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": _settings(runner), "datasets": {}}
    for ds in datasets:
        data = runner.dataset(ds)
        if data is None:
            out["datasets"][ds] = {"skipped": f"data not found under {runner.data_root}"}
            continue
        out["datasets"][ds] = {"info": data["info"], "iterations": runner.iterations(ds),
                               "runs": {key: runner.run(ds, key) for key in ("fcis", "maskrcnn", "instancefcn")}}
    return out


def run_ablation(runner: AccuracyRunner, datasets: tuple[str, ...] = ("shapes", "pennfudan")) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": _settings(runner), "paper_voc": PAPER_VOC, "paper_notes": PAPER_NOTES,
                           "labels": ABLATION_LABELS, "datasets": {}}
    for ds in datasets:
        data = runner.dataset(ds)
        if data is None:
            out["datasets"][ds] = {"skipped": f"data not found under {runner.data_root}"}
            continue
        variants = {name: runner.run(ds, key) for name, key in ABLATION_RUNS.items()}
        variants["no_voting"] = runner.no_voting(ds)
        out["datasets"][ds] = {"info": data["info"], "iterations": runner.iterations(ds), "variants": variants}
    return out


def voc_pair(record: dict[str, Any]) -> tuple[float | None, float | None]:
    """(mAP^r@0.5, mAP^r@0.7) × 100 of an evaluated record, or (None, None)."""
    voc = (record.get("metrics") or {}).get("voc") or {}
    a, b = voc.get("mAP@0.5"), voc.get("mAP@0.7")
    return (None if a is None else 100 * a, None if b is None else 100 * b)
