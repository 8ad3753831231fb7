"""The training loop: SGD with warm-up and step decay, periodic validation and checkpoints, and
exact resumption.

Files written to ``output_dir``:

- ``last.pt``: every ``checkpoint_every`` iterations and at the end (atomically);
- ``best.pt``: whenever the validation mask AP (``segm/AP``) improves;
- ``log.jsonl``: one JSON object per line, ``{"iteration", "loss", "losses", "lr", "time",
  "sec_per_iter"}`` every ``log_every`` iterations, ``{"iteration", "nonfinite": true, ...}``
  for a skipped step and ``{"iteration", "metrics"}`` after each validation;
- ``metrics.json``: the last validation; ``config.json``: the run's configuration;
- ``tb/``: TensorBoard events, when ``torch.utils.tensorboard`` can be imported;
- ``nonfinite.pt``: the state of a run stopped because it diverged (NaN/inf), for inspection.

When a checkpoint and a validation fall on the same iteration, ``last.pt`` is written first, so
that a validation that crashes (or is killed) loses no training. In a single process, a
validation that raises is reported (log, progress bar) and switches validation off for the rest
of the run; the run trains to the end, writes its checkpoints and ``summary.json``
(``validation_error``), then raises :class:`TrainingError` (a distributed run stops at once). A NaN/inf step changes nothing in the model (see
:func:`fcis.engine.step.train_step`); a run that ends in NaN/inf steps, or whose weights became
NaN/inf, raises :class:`TrainingError` without writing them to ``last.pt``/``best.pt``.

Resuming (``resume=True``) reloads ``output_dir/last.pt`` (weights, optimizer, scheduler,
iteration, RNG states and the data position) and continues as if never stopped: N iterations in
one go and N/2 + N/2 resumed give the same parameters. The resumed run takes its configuration
from the checkpoint; see :func:`fcis.engine.resume.resume_config` for what may change. Augmentation randomness is seeded per
sample (see :mod:`fcis.engine.data`), so this holds with DataLoader workers too.

Distributed data parallel (``torchrun --nproc_per_node N -m fcis train ...``; see
:mod:`fcis.engine.distributed`): one process per device, each taking its disjoint share of
every global batch of ``batch_size x N`` images; the default learning rate follows the global
batch. The model is wrapped in ``DistributedDataParallel`` (trainable BatchNorm synchronised
first). The per-process losses are averaged over the processes before anything looks at them,
so the NaN/inf guard decides the same on every process (if one skips, all skip) and rank 0 logs
the mean. Rank 0 alone writes the logs, TensorBoard events, ``metrics.json`` and checkpoints
(which hold every process's RNG state); validation predicts a shard per process and rank 0
scores the gathered results. Without torchrun's variables nothing of this happens.

Mixed precision (``cfg.amp``): the forward runs under ``torch.autocast`` (``cfg.amp_dtype``);
float16 scales the loss with a ``GradScaler`` whose state is saved under ``"scaler"`` and
restored on resume (see :mod:`fcis.engine.amp`).

Before the first step of a fresh run, :func:`fcis.engine.run_plan.plan_fresh_run` resolves the
recipe (every ``None`` field of the config; :mod:`fcis.engine.recipe`), fits the anchors to the
training boxes (:mod:`fcis.engine.anchor_fit`) and prints a summary of the data; all three are
recorded in ``config.json`` and the checkpoints (``recipe``, ``anchors``, ``data``). A resumed run
takes the decided values from its checkpoint.

This module holds the loop; one step and the optimizer are in :mod:`fcis.engine.step`, seeding
and the resume checks in :mod:`fcis.engine.resume`, the log files in :mod:`fcis.engine.run_log`.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..evaluation.report import pct
from ..json_io import write_json
from . import distributed as dist_utils
from .amp import check_amp, make_grad_scaler
from .checkpoint import (
    build_from_checkpoint,
    get_rng_state,
    load_checkpoint,
    nonfinite_tensors,
    resolve_device,
    save_checkpoint,
)
from .config import TrainConfig
from .data import TrainStream
from .errors import CheckpointError, TrainingError
from .resume import apply_schedule, check_resumable, restore_rng, seed_everything, seed_rank
from .run_log import RunLog, fmt_losses, segm_ap
from .run_plan import plan_fresh_run, plan_resumed_run
from .schedule import build_scheduler
from .step import build_optimizer, param_groups, train_step, validate

__all__ = ["train"]


def train(model_name: str, train_json: str | os.PathLike, val_json: str | os.PathLike | None,
          output_dir: str | os.PathLike, cfg: TrainConfig | None = None, *,
          model_overrides: dict[str, Any] | None = None, resume: bool = False,
          image_root: str | os.PathLike | None = None, weights_backbone: Any = None,
          overwrite: bool = False, progress: bool = True, explicit: Collection[str] | None = None
          ) -> dict[str, Any]:
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
        progress: show a tqdm bar (loss, lr, ETA); rank 0 only in a distributed run.
        explicit: on resume, the names of the fields of ``cfg`` the caller set on purpose (the
            CLI: the flags given); the others come from the checkpoint, and an explicit one that
            contradicts it is an error. None: the fields that differ from ``TrainConfig()``.

    Under ``torchrun`` (its ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` variables set) every process
    calls this; it joins the process group (and leaves it at the end if it created it), see
    the module docstring. ``output_dir`` must then be on a file system all processes share for
    ``resume`` (each process reads ``last.pt``).

    Returns a summary dict: ``iterations``, ``start_iteration``, ``losses`` (mean of the last
    log window, averaged over the processes), ``lr``, ``metrics`` (last validation or None),
    ``best_metric``, ``best_iteration``, ``last_checkpoint``, ``best_checkpoint``,
    ``nonfinite_steps``, ``bad_samples`` (of this process: dropped annotations and skipped
    images, also those skipped in DataLoader workers), ``skipped_images``, ``time_s``,
    ``output_dir``, ``world_size``, ``validation_error`` (None, or why validation failed; the
    run then raises :class:`TrainingError` after writing everything).
    """
    cfg = cfg or TrainConfig()
    ctx = dist_utils.init_distributed(cfg.device)
    try:
        return _train(model_name, train_json, val_json, Path(output_dir), cfg, ctx,
                      model_overrides=dict(model_overrides or {}), resume=resume, image_root=image_root,
                      weights_backbone=weights_backbone, overwrite=overwrite, progress=progress,
                      explicit=explicit)
    finally:
        dist_utils.cleanup(ctx)


def _train(model_name: str, train_json, val_json, output_dir: Path, cfg: TrainConfig,
           ctx: dist_utils.DistContext | None, *, model_overrides: dict[str, Any], resume: bool, image_root,
           weights_backbone: Any, overwrite: bool, progress: bool,
           explicit: Collection[str] | None = None) -> dict[str, Any]:
    """:func:`train` once the process group (``ctx``, None for a single process) is set up."""
    from fcis.data import CocoInstances, DataError, build_transforms, collate
    from fcis.models import BUILDERS

    # Weights of a network trained from scratch drift into denormal floats, which make CPU
    # arithmetic orders of magnitude slower (seen here: BatchNorm steps going from 0.8 s to
    # minutes). Flushing them to zero changes no result that matters and keeps steps steady.
    torch.set_flush_denormal(True)
    last_path, best_path = output_dir / "last.pt", output_dir / "best.pt"
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    main = rank == 0
    if model_name not in BUILDERS:
        raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(sorted(BUILDERS))}")

    ckpt = None
    if resume:
        if not last_path.exists():
            raise CheckpointError(f"cannot resume: no checkpoint at {last_path}")
        ckpt = load_checkpoint(last_path)
        cfg = check_resumable(ckpt, model_name, cfg, last_path, world, warn=main, explicit=explicit)
        _check_model_overrides(ckpt, model_overrides, last_path)
        plan = plan_resumed_run(cfg, ckpt)   # the recipe's values as the checkpoint's run chose them
        cfg = plan.cfg
    elif last_path.exists() and not overwrite:
        raise CheckpointError(f"{last_path} already exists: resume it (--resume), or pick another "
                              "output folder (or pass --overwrite)")
    device = ctx.device if ctx is not None else resolve_device(cfg.device)
    amp_dtype = check_amp(cfg.amp, cfg.amp_dtype, device)

    seed_everything(cfg.seed)
    train_ds = CocoInstances(train_json, image_root, on_bad_sample=cfg.on_bad_sample)
    val_ds = CocoInstances(val_json, image_root, on_bad_sample=cfg.on_bad_sample) if val_json else None
    if len(train_ds) == 0:
        raise DataError(f"{train_json}: no images to train on")
    if not any(not a.get("iscrowd", 0) for a in train_ds.coco.anns.values()):
        dropped = sum(1 for _, reason in train_ds.bad_samples if reason.startswith("annotation "))
        raise DataError(f"{train_json}: no object annotations to train on ({len(train_ds)} images, "
                        + (f"all {dropped} annotations dropped as bad" if dropped else "no non-crowd annotations")
                        + "); a model trained on it would only learn background")
    if val_ds is not None and val_ds.class_names != train_ds.class_names:
        raise DataError(f"{val_json}: categories {val_ds.class_names} differ from the training set's "
                        f"{train_ds.class_names} ({train_json})")
    if ckpt is not None and list(ckpt["dataset"]["class_names"]) != train_ds.class_names:
        raise DataError(f"{train_json}: categories {train_ds.class_names} differ from those of "
                        f"{last_path} ({list(ckpt['dataset']['class_names'])})")

    if ckpt is None:   # the recipe, the fitted anchors and the data summary (printed by rank 0)
        plan = plan_fresh_run(BUILDERS[model_name], train_ds, cfg, model_overrides, weights_backbone is not None,
                              world, log=(lambda text: print(text, file=sys.stderr, flush=True)) if main else None)
        cfg, model_overrides = plan.cfg, plan.model_overrides

    # The model (built before any RNG restore, so that a resume consumes the same draws).
    if ckpt is not None:
        model = build_from_checkpoint(BUILDERS, ckpt, last_path)   # with its weights
    else:
        model = _build_model(BUILDERS, model_name, train_ds, train_json, cfg, model_overrides, weights_backbone)
    model.to(device).train()
    mcfg: Any = model.config
    train_ds.transforms = build_transforms(True, min_size=mcfg.min_size, max_size=mcfg.max_size,
                                           hflip_prob=cfg.hflip_prob)
    if val_ds is not None:
        val_ds.transforms = build_transforms(False)
    if ctx is not None and cfg.sync_bn and dist_utils.has_trainable_batchnorm(model):
        model = dist_utils.convert_sync_batchnorm(model, device)  # same parameters, global statistics

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(param_groups(model, cfg), cfg, world)
    scheduler = build_scheduler(optimizer, cfg)
    scaler = make_grad_scaler(device, amp_dtype)

    run = {  # what a checkpoint records besides the tensors
        "model_name": ckpt["model_name"] if ckpt else model_name,
        "model_config": mcfg.to_dict(),
        "train_config": cfg.to_dict(),
        "world_size": world,
        **plan.record,   # "recipe", "anchors", "data": what was chosen before training, and why
        "dataset": {"class_names": list(train_ds.class_names),
                    "label_to_cat_id": {int(k): int(v) for k, v in train_ds.label_to_cat_id.items()},
                    "train_json": str(train_json), "val_json": str(val_json) if val_json else None,
                    "image_root": str(image_root) if image_root is not None else None},
    }
    start_iter, best, best_iter, data_state = 0, None, None, None
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{last_path}: its optimizer state does not fit a {cfg.optimizer!r} "
                                  f"optimizer ({type(e).__name__}: {e})") from e
        scheduler.load_state_dict(ckpt["scheduler"])
        apply_schedule(optimizer, scheduler)
        if scaler.is_enabled() and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_iter = int(ckpt["iteration"])
        best, best_iter = ckpt.get("best_metric"), ckpt.get("best_iteration")
        data_state = ckpt.get("data_state")
        restore_rng(ckpt, rank, world, cfg.seed)
    else:
        seed_rank(cfg.seed, rank)
    net = _wrap_ddp(model, device, cfg) if ctx is not None else model
    # Every process has read last.pt (if resuming) before rank 0 may write a new one.
    dist_utils.barrier()

    log = None
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is None:  # a fresh run: no checkpoint of an earlier run here may pass for one of this run
            for stale in (last_path, best_path, output_dir / "nonfinite.pt"):
                stale.unlink(missing_ok=True)
        write_json(output_dir / "config.json", run)
        log = RunLog(output_dir, start_iter)

    def checkpoint(path: Path, iteration: int) -> None:
        """Called on every process (it gathers their RNG states); rank 0 writes. Weights or
        buffers holding NaN/inf go to ``nonfinite.pt`` instead, and every process raises
        :class:`TrainingError` (the weights are the same on every process)."""
        rng = dist_utils.gather(get_rng_state())
        weights = model.state_dict()
        bad = nonfinite_tensors(weights)
        target = output_dir / "nonfinite.pt" if bad else path
        if main:
            extra: dict[str, Any] = {}
            if world > 1:
                extra["rng_per_rank"] = rng
            if scaler.is_enabled():
                extra["scaler"] = scaler.state_dict()
            save_checkpoint(target, model=weights, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), iteration=iteration, data_state=stream.state(),
                            rng=rng[0], best_metric=best, best_iteration=best_iter, **extra, **run)
        if bad and target != path:
            raise TrainingError(
                f"the model's weights hold NaN/inf at iteration {iteration} ({len(bad)} tensors, e.g. "
                f"{', '.join(bad[:3])}): the run diverged; lower the learning rate (--lr). {path.name} was not "
                f"written ({_kept(path)}); the diverged state is in {target}")

    stream = TrainStream(train_ds, cfg.batch_size, cfg.seed, workers=cfg.workers, collate_fn=collate,
                         state=data_state, pin_memory=device.type == "cuda", rank=rank, world_size=world)
    assert cfg.iterations is not None  # resolved by the run plan
    bar = tqdm(total=cfg.iterations, initial=start_iter, desc="train", unit="it", dynamic_ncols=True,
               disable=not (progress and main))
    window: dict[str, list[float]] = defaultdict(list)
    it, nonfinite_run, nonfinite_total, empty_run = start_iter, 0, 0, 0
    metrics, t_start, t_window, validation_error = None, time.time(), time.time(), None
    last_losses: dict[str, float] = {}
    try:
        while it < cfg.iterations:
            images, targets = stream.next()
            # the whole batch was unreadable images (skip mode) on this or another process
            if not dist_utils.all_reduce_min(bool(images), device):
                empty_run += 1
                if empty_run > stream.per_epoch:
                    raise DataError(f"{train_json}: none of the images could be read "
                                    f"(e.g. {_skipped_images(train_ds, stream.skipped)[:1]})")
                continue
            empty_run = 0
            lr = optimizer.param_groups[0]["lr"]
            losses, finite = train_step(net, optimizer, params, images, targets, device, cfg.clip_grad_norm,
                                        amp_dtype=amp_dtype, scaler=scaler)
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
                if log is not None:
                    log.write({"iteration": it, "nonfinite": True, "losses": losses, "lr": lr})
                if nonfinite_run >= cfg.max_nonfinite:
                    checkpoint(output_dir / "nonfinite.pt", it)
                    raise TrainingError(
                        f"the loss was NaN/inf for {nonfinite_run} consecutive iterations (up to iteration "
                        f"{it}: {fmt_losses(losses)}); lower the learning rate (--lr) or check the data; "
                        f"state saved to {output_dir / 'nonfinite.pt'}")
            final = it == cfg.iterations
            if (cfg.log_every and it % cfg.log_every == 0) or final:
                if window:
                    last_losses = {k: float(np.mean(v)) for k, v in window.items()}
                    now = time.time()
                    if log is not None:
                        log.write({"iteration": it, "loss": last_losses.get("loss"), "losses": last_losses,
                                   "lr": lr, "time": now, "sec_per_iter": (now - t_window) / len(window["loss"])})
                    t_window = now
                    window.clear()
            if final and nonfinite_run:
                checkpoint(output_dir / "nonfinite.pt", it)
                raise TrainingError(
                    f"the run ended with {nonfinite_run} consecutive NaN/inf steps (iterations "
                    f"{it - nonfinite_run + 1}-{it}): the weights cannot be trusted; lower the learning rate "
                    f"(--lr) or check the data. {last_path.name} was not written ({_kept(last_path)}); "
                    f"state saved to {output_dir / 'nonfinite.pt'}")
            saved_last = bool((cfg.checkpoint_every and it % cfg.checkpoint_every == 0) or final)
            if saved_last:  # before validation: a crash there loses no training
                checkpoint(last_path, it)
            if val_ds is not None and ((cfg.eval_every and it % cfg.eval_every == 0) or final):
                try:
                    metrics = validate(model, val_ds, device, progress and main, amp_dtype)
                except Exception as e:  # noqa: BLE001 - reported, and raised at the end of the run
                    if ctx is not None:  # the other processes wait in validation's collectives: stop
                        raise
                    validation_error = (f"validation at iteration {it} failed ({type(e).__name__}: "
                                        f"{' '.join(str(e).split())[:300]})")
                    val_ds = None  # no more validation in this run
                    if log is not None:
                        log.write({"iteration": it, "validation_error": validation_error,
                                   "traceback": traceback.format_exc()})
                        bar.write(f"fcis: warning: {validation_error}; training goes on without validation")
                    continue
                ap = segm_ap(metrics)
                if log is not None:
                    log.write({"iteration": it, "metrics": metrics})
                    bar.write(f"iteration {it}: segm AP {pct(ap)}  bbox AP {pct(metrics.get('bbox', {}).get('AP'))}")
                if ap is not None and (best is None or ap > best):
                    best, best_iter = ap, it
                    checkpoint(best_path, it)
                    if saved_last:  # last.pt of this iteration records the new best too
                        checkpoint(last_path, it)
    finally:
        bar.close()
        stream.close()
        if log is not None:
            log.close()

    if metrics is not None and main:
        from fcis.evaluation import write_metrics
        write_metrics(output_dir, metrics)
    summary = {
        "output_dir": str(output_dir), "iterations": it, "start_iteration": start_iter,
        "losses": last_losses, "lr": optimizer.param_groups[0]["lr"], "metrics": metrics,
        "best_metric": best, "best_iteration": best_iter,
        "last_checkpoint": str(last_path) if last_path.exists() else None,
        "best_checkpoint": str(best_path) if best_path.exists() else None,
        "nonfinite_steps": nonfinite_total,
        "bad_samples": len(train_ds.bad_samples) + len(set(_skipped_images(train_ds, stream.skipped))
                                                        - {p for p, _ in train_ds.bad_samples}),
        "skipped_images": _skipped_images(train_ds, stream.skipped),
        "time_s": time.time() - t_start, "world_size": world, "validation_error": validation_error,
    }
    if main:
        write_json(output_dir / "summary.json", summary)
    dist_utils.barrier()  # rank 0's files are complete when train() returns on any process
    if validation_error is not None:
        raise TrainingError(f"{validation_error}; training itself finished: the weights of iteration {it} "
                            f"are in {last_path} (evaluate them with fcis evaluate once the validation data "
                            f"is fixed); details in {output_dir / 'log.jsonl'}")
    return summary


def _kept(path: Path) -> str:
    """What ``path`` holds now, for a message."""
    if not path.exists():
        return "there is none yet"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return f"it keeps iteration {load_checkpoint(path, require_finite=False)['iteration']}"
    except CheckpointError:
        return "the one there is unreadable"


def _skipped_images(dataset, indices: set[int]) -> list[str]:
    """Paths of the images the data stream skipped (sorted)."""
    if not hasattr(dataset, "image_path"):
        return [str(i) for i in sorted(indices)]
    return sorted(str(dataset.image_path(i)) for i in indices)


def _check_model_overrides(ckpt: dict, overrides: dict[str, Any], path: Path) -> None:
    """On resume the model is the checkpoint's: a model option that contradicts it is an error.
    Both sides under today's field names (a checkpoint or ``--set`` may use a former one)."""
    from fcis.models import BUILDERS

    if not overrides:
        return
    with torch.device("meta"):   # the checkpoint's config rebuilt: no memory, no RNG draws
        built: Any = BUILDERS[ckpt["model_name"]](**ckpt["model_config"]).config
    config, overrides = built.to_dict(), type(built).current_names(overrides)
    wrong = [f"{k}={v!r} (the checkpoint has {config.get(k, '<no such option>')!r})" for k, v in overrides.items()
             if k not in config or _deep_list(config[k]) != _deep_list(v)]
    if wrong:
        raise CheckpointError(f"{path}: a resumed run keeps the checkpoint's model, but --set asks for "
                              f"{'; '.join(wrong)}; drop it, or start a new run in another --output")


def _deep_list(v):
    return [_deep_list(x) for x in v] if isinstance(v, (list, tuple)) else v


def _build_model(builders, model_name: str, train_ds, train_json, cfg: TrainConfig,
                 model_overrides: dict[str, Any], weights_backbone: Any) -> torch.nn.Module:
    """A fresh model: ``builders[model_name]`` with the data's classes and the overrides."""
    overrides = {**model_overrides, **cfg.model_overrides()}
    if overrides.pop("num_classes", train_ds.num_classes) != train_ds.num_classes:
        raise ValueError(f"num_classes comes from the data ({train_ds.num_classes} in {train_json})")
    if weights_backbone is not None:
        overrides["weights_backbone"] = weights_backbone
    try:
        return builders[model_name](num_classes=train_ds.num_classes, **overrides)
    except TypeError as e:  # a misspelt override; other TypeErrors are bugs and propagate
        if "unexpected keyword argument" not in str(e):
            raise
        raise ValueError(f"{model_name}: unknown model option ({e}); options are the fields of "
                         f"the model's config") from None


def _wrap_ddp(model: torch.nn.Module, device: torch.device, cfg: TrainConfig) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` (one device per process).

    ``find_unused_parameters`` is ``cfg.find_unused_parameters`` (False by default: with the
    models here every trainable parameter gets a gradient in every step, also from an image
    without objects, whose mask and box losses are zeros still connected to the graph, so DDP
    need not search the graph after each forward). Buffers are not re-broadcast before each
    forward: the only buffers are BatchNorm statistics, which are synchronised (or frozen) and so
    already equal on every process.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # newer torch renamed broadcast_buffers (still accepted there, with a FutureWarning)
    no_buffer_sync = ({"forward_sync_buffers": False}
                      if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                      else {"broadcast_buffers": False})
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None,
                                   find_unused_parameters=cfg.find_unused_parameters,
                                   **no_buffer_sync)  # type: ignore[arg-type]  # bool keywords
