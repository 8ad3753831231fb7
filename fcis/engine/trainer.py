"""The training loop: SGD with warm-up and step decay, periodic validation and checkpoints, and
exact resumption.

Files written to ``output_dir``:

- ``last.pt``: every ``checkpoint_every`` iterations and at the end (atomically);
- ``best.pt``: whenever the validation mask AP (``segm/AP``) improves;
- ``log.jsonl``: one JSON object per line, ``{"iteration", "loss", "losses", "lr", "time",
  "sec_per_iter"}`` every ``log_every`` iterations, ``{"iteration", "nonfinite": true, ...}``
  for a skipped step and ``{"iteration", "metrics"}`` after each validation;
- ``metrics.json``: the last validation; ``config.json``: the run's configuration;
- ``tb/``: TensorBoard events, when ``torch.utils.tensorboard`` can be imported.

Resuming (``resume=True``) reloads ``output_dir/last.pt`` (weights, optimizer, scheduler,
iteration, RNG states and the data position) and continues as if never stopped: N iterations in
one go and N/2 + N/2 resumed give the same parameters. Augmentation randomness is seeded per
sample (see :mod:`fcis.engine.data`), so this holds with DataLoader workers too.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import get_rng_state, load_checkpoint, resolve_device, save_checkpoint, set_rng_state
from .config import TrainConfig
from .data import TrainStream
from .errors import CheckpointError, TrainingError
from .evaluator import evaluate_model
from .schedule import build_scheduler

__all__ = ["train"]

#: Fields of TrainConfig that change the result; a resume with different values warns.
_RESULT_FIELDS = ("batch_size", "lr", "momentum", "weight_decay", "warmup_iters", "warmup_factor", "lr_steps",
                  "gamma", "clip_grad_norm", "seed", "hflip_prob", "min_size", "max_size", "on_bad_sample")


def train(model_name: str, train_json: str | os.PathLike, val_json: str | os.PathLike | None,
          output_dir: str | os.PathLike, cfg: TrainConfig | None = None, *,
          model_overrides: dict[str, Any] | None = None, resume: bool = False,
          image_root: str | os.PathLike | None = None, weights_backbone: Any = None,
          overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``model_name`` (a key of ``fcis.models.BUILDERS``) on a COCO instances JSON.

    Args:
        model_name: e.g. ``"fcis_resnet50"``.
        train_json, val_json: COCO instances files; ``val_json=None`` skips validation.
        output_dir: where checkpoints and logs go (see the module docstring).
        cfg: hyper-parameters (default ``TrainConfig()``).
        model_overrides: fields of the model's config (e.g. ``anchor_sizes``); ``cfg.min_size``
            and ``cfg.max_size`` are added when set. Ignored on resume (the checkpoint's model
            config is used).
        resume: continue from ``output_dir/last.pt``.
        image_root: folder of the images (default: each JSON's folder).
        weights_backbone: passed to the builder (torchvision weights enum or state-dict path).
        overwrite: allow a fresh run in a folder that already holds ``last.pt``.
        progress: show a tqdm bar (loss, lr, ETA).

    Returns a summary dict: ``iterations``, ``start_iteration``, ``losses`` (mean of the last
    log window), ``lr``, ``metrics`` (last validation or None), ``best_metric``,
    ``best_iteration``, ``last_checkpoint``, ``best_checkpoint``, ``nonfinite_steps``,
    ``bad_samples``, ``time_s``, ``output_dir``.
    """
    from fcis.data import CocoInstances, DataError, build_transforms, collate
    from fcis.models import BUILDERS

    cfg = cfg or TrainConfig()
    # Weights of a network trained from scratch drift into denormal floats, which make CPU
    # arithmetic orders of magnitude slower (seen here: BatchNorm steps going from 0.8 s to
    # minutes). Flushing them to zero changes no result that matters and keeps steps steady.
    torch.set_flush_denormal(True)
    model_overrides = dict(model_overrides or {})
    output_dir = Path(output_dir)
    last_path, best_path = output_dir / "last.pt", output_dir / "best.pt"
    device = resolve_device(cfg.device)
    if model_name not in BUILDERS:
        raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(sorted(BUILDERS))}")

    ckpt = None
    if resume:
        if not last_path.exists():
            raise CheckpointError(f"cannot resume: no checkpoint at {last_path}")
        ckpt = load_checkpoint(last_path)
        _check_resumable(ckpt, model_name, cfg, last_path)
    elif last_path.exists() and not overwrite:
        raise CheckpointError(f"{last_path} already exists: resume it (--resume), or pick another "
                              "output folder (or pass --overwrite)")

    _seed_everything(cfg.seed)
    train_ds = CocoInstances(train_json, image_root, on_bad_sample=cfg.on_bad_sample)
    val_ds = CocoInstances(val_json, image_root, on_bad_sample=cfg.on_bad_sample) if val_json else None
    if len(train_ds) == 0:
        raise DataError(f"{train_json}: no images to train on")
    if val_ds is not None and val_ds.class_names != train_ds.class_names:
        raise DataError(f"{val_json}: categories {val_ds.class_names} differ from the training set's "
                        f"{train_ds.class_names} ({train_json})")
    if ckpt is not None and list(ckpt["dataset"]["class_names"]) != train_ds.class_names:
        raise DataError(f"{train_json}: categories {train_ds.class_names} differ from those of "
                        f"{last_path} ({list(ckpt['dataset']['class_names'])})")

    # The model (built before any RNG restore, so that a resume consumes the same draws).
    if ckpt is not None:
        model = BUILDERS[ckpt["model_name"]](**dict(ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
    else:
        overrides = {**model_overrides, **cfg.model_overrides()}
        if overrides.pop("num_classes", train_ds.num_classes) != train_ds.num_classes:
            raise ValueError(f"num_classes comes from the data ({train_ds.num_classes} in {train_json})")
        if weights_backbone is not None:
            overrides["weights_backbone"] = weights_backbone
        try:
            model = BUILDERS[model_name](num_classes=train_ds.num_classes, **overrides)
        except TypeError as e:  # a misspelt override; other TypeErrors are bugs and propagate
            if "unexpected keyword argument" not in str(e):
                raise
            raise ValueError(f"{model_name}: unknown model option ({e}); options are the fields of "
                             f"the model's config") from None
    model.to(device).train()
    mcfg = model.config
    train_ds.transforms = build_transforms(True, min_size=mcfg.min_size, max_size=mcfg.max_size,
                                           hflip_prob=cfg.hflip_prob)
    if val_ds is not None:
        val_ds.transforms = build_transforms(False)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.resolved_lr(), momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, cfg)

    run = {  # what a checkpoint records besides the tensors
        "model_name": ckpt["model_name"] if ckpt else model_name,
        "model_config": mcfg.to_dict(),
        "train_config": cfg.to_dict(),
        "dataset": {"class_names": list(train_ds.class_names),
                    "label_to_cat_id": {int(k): int(v) for k, v in train_ds.label_to_cat_id.items()},
                    "train_json": str(train_json), "val_json": str(val_json) if val_json else None,
                    "image_root": str(image_root) if image_root is not None else None},
    }
    start_iter, best, best_iter, data_state = 0, None, None, None
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_iter = int(ckpt["iteration"])
        best, best_iter = ckpt.get("best_metric"), ckpt.get("best_iteration")
        data_state = ckpt.get("data_state")
        set_rng_state(ckpt["rng"])

    output_dir.mkdir(parents=True, exist_ok=True)
    _write_json(output_dir / "config.json", run)
    log = RunLog(output_dir, start_iter)

    def checkpoint(path: Path, iteration: int) -> None:
        save_checkpoint(path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), iteration=iteration, data_state=stream.state(),
                        rng=get_rng_state(), best_metric=best, best_iteration=best_iter, **run)

    stream = TrainStream(train_ds, cfg.batch_size, cfg.seed, workers=cfg.workers, collate_fn=collate,
                         state=data_state, pin_memory=device.type == "cuda")
    bar = tqdm(total=cfg.iterations, initial=start_iter, desc="train", unit="it", dynamic_ncols=True,
               disable=not progress)
    window: dict[str, list[float]] = defaultdict(list)
    it, nonfinite_run, nonfinite_total, empty_run = start_iter, 0, 0, 0
    metrics, t_start, t_window = None, time.time(), time.time()
    last_losses: dict[str, float] = {}
    try:
        while it < cfg.iterations:
            images, targets = stream.next()
            if not images:  # the whole batch was unreadable images (skip mode)
                empty_run += 1
                if empty_run > stream.per_epoch:
                    raise DataError(f"{train_json}: none of the images could be read "
                                    f"(e.g. {train_ds.bad_samples[:1]})")
                continue
            empty_run = 0
            lr = optimizer.param_groups[0]["lr"]
            losses, finite = train_step(model, optimizer, params, images, targets, device, cfg.clip_grad_norm)
            with warnings.catch_warnings():  # a skipped first step makes LambdaLR warn about the order
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
                scheduler.step()
            it += 1
            bar.update(1)
            if finite:
                nonfinite_run = 0
                for k, v in losses.items():
                    window[k].append(v)
                bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
            else:
                nonfinite_run += 1
                nonfinite_total += 1
                log.write({"iteration": it, "nonfinite": True, "losses": losses, "lr": lr})
                if nonfinite_run >= cfg.max_nonfinite:
                    checkpoint(output_dir / "nonfinite.pt", it)
                    raise TrainingError(
                        f"the loss was NaN/inf for {nonfinite_run} consecutive iterations (up to iteration "
                        f"{it}: {_fmt_losses(losses)}); lower the learning rate (--lr) or check the data; "
                        f"state saved to {output_dir / 'nonfinite.pt'}")
            final = it == cfg.iterations
            if (cfg.log_every and it % cfg.log_every == 0) or final:
                if window:
                    last_losses = {k: float(np.mean(v)) for k, v in window.items()}
                    now = time.time()
                    log.write({"iteration": it, "loss": last_losses.get("loss"), "losses": last_losses,
                               "lr": lr, "time": now, "sec_per_iter": (now - t_window) / len(window["loss"])})
                    t_window = now
                    window.clear()
            if val_ds is not None and ((cfg.eval_every and it % cfg.eval_every == 0) or final):
                metrics = validate(model, val_ds, device, progress)
                log.write({"iteration": it, "metrics": metrics})
                ap = _segm_ap(metrics)
                bar.write(f"iteration {it}: segm AP {_pct(ap)}  bbox AP {_pct(metrics.get('bbox', {}).get('AP'))}")
                if ap is not None and (best is None or ap > best):
                    best, best_iter = ap, it
                    checkpoint(best_path, it)
            if (cfg.checkpoint_every and it % cfg.checkpoint_every == 0) or final:
                checkpoint(last_path, it)
    finally:
        bar.close()
        stream.close()
        log.close()

    if metrics is not None:
        from fcis.evaluation import write_metrics
        write_metrics(output_dir, metrics)
    summary = {
        "output_dir": str(output_dir), "iterations": it, "start_iteration": start_iter,
        "losses": last_losses, "lr": optimizer.param_groups[0]["lr"], "metrics": metrics,
        "best_metric": best, "best_iteration": best_iter,
        "last_checkpoint": str(last_path) if last_path.exists() else None,
        "best_checkpoint": str(best_path) if best_path.exists() else None,
        "nonfinite_steps": nonfinite_total, "bad_samples": len(train_ds.bad_samples),
        "time_s": time.time() - t_start,
    }
    _write_json(output_dir / "summary.json", summary)
    return summary


# --- steps ---------------------------------------------------------------------------------------

def _to_device(target: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


def train_step(model, optimizer, params, images, targets, device, clip_grad_norm=None) -> tuple[dict[str, float], bool]:
    """One SGD step. Returns ``(losses as floats incl. "loss", finite)``; a NaN/inf loss (or
    gradient norm when clipping) skips the update."""
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [_to_device(t, device) for t in targets]
    loss_dict = model(images, targets)
    if not loss_dict:
        raise TrainingError("the model returned no losses in training mode")
    loss = torch.stack([v.reshape(()) for v in loss_dict.values()]).sum()
    losses = {k: float(v.detach()) for k, v in loss_dict.items()}
    losses["loss"] = float(loss.detach())
    optimizer.zero_grad(set_to_none=True)
    if not math.isfinite(losses["loss"]):
        return losses, False
    loss.backward()
    if clip_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        if not torch.isfinite(norm):
            optimizer.zero_grad(set_to_none=True)
            losses["grad_norm"] = float(norm)
            return losses, False
    optimizer.step()
    return losses, True


def validate(model, dataset, device, progress: bool) -> dict:
    """Evaluate without disturbing the training RNG streams or the model's train mode."""
    rng = get_rng_state()
    try:
        return evaluate_model(model, dataset, device, progress=progress)
    finally:
        set_rng_state(rng)


# --- helpers -------------------------------------------------------------------------------------

def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_resumable(ckpt: dict, model_name: str, cfg: TrainConfig, path: Path) -> None:
    if ckpt["model_name"] != model_name:
        raise CheckpointError(f"{path} was trained as {ckpt['model_name']!r}, not {model_name!r}")
    for key in ("optimizer", "scheduler", "iteration", "rng", "dataset", "train_config"):
        if key not in ckpt:
            raise CheckpointError(f"{path} cannot be resumed: it lacks {key!r}")
    old = ckpt["train_config"]
    now = cfg.to_dict()
    changed = [f"{k}: {old.get(k)!r} -> {now[k]!r}" for k in _RESULT_FIELDS
               if k in old and _norm(old[k]) != _norm(now[k])]
    if changed:
        warnings.warn(f"resuming {path} with a different configuration ({'; '.join(changed)}); "
                      "the result will differ from an uninterrupted run", stacklevel=3)


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def _segm_ap(metrics: dict) -> float | None:
    ap = (metrics.get("segm") or {}).get("AP")
    if ap is None or not math.isfinite(ap):
        return None
    return float(ap)


def _pct(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def _fmt_losses(losses: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in losses.items())


def jsonable(x):
    """Strict-JSON copy: tensors/numpy to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2) + "\n")
    os.replace(tmp, path)


class RunLog:
    """``log.jsonl`` (and TensorBoard when available). A resumed run drops the lines written
    after its checkpoint, so the log reads as one uninterrupted run."""

    def __init__(self, output_dir: Path, start_iter: int) -> None:
        self.path = output_dir / "log.jsonl"
        kept = []
        if start_iter > 0 and self.path.exists():
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("iteration", 0) <= start_iter:
                        kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))
        self.file = open(self.path, "a", buffering=1)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # noqa: BLE001 - tensorboard not installed
            SummaryWriter = None
        if SummaryWriter is not None:
            self.tb = SummaryWriter(str(output_dir / "tb"), purge_step=start_iter or None)

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(jsonable(record)) + "\n")
        if self.tb is not None:
            it = record["iteration"]
            for k, v in (record.get("losses") or {}).items():
                if isinstance(v, float) and math.isfinite(v):
                    self.tb.add_scalar(f"loss/{k}", v, it)
            if "lr" in record and not record.get("nonfinite"):
                self.tb.add_scalar("lr", record["lr"], it)
            for task, values in (record.get("metrics") or {}).items():
                if isinstance(values, dict):
                    for k, v in values.items():
                        if isinstance(v, (int, float)) and math.isfinite(v):
                            self.tb.add_scalar(f"{task}/{k}", v, it)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
