"""The state of one training run between its steps (:class:`RunState`), how a run sets it up
(:func:`setup_run`: fresh or resumed), and what the run writes from it: checkpoints
(:func:`save_checkpoint_of`) and the summary (:func:`summarise`).

The loop that advances the state is in :mod:`fcis.engine.trainer`.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

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
from .data import TrainStream, aspect_groups
from .errors import CheckpointError, TrainingError
from .resume import apply_schedule, check_resumable, restore_rng, seed_everything, seed_rank
from .run_log import RunLog
from .run_plan import plan_fresh_run, plan_resumed_run
from .schedule import build_scheduler
from .step import build_optimizer, param_groups

__all__ = ["RunState", "setup_run", "save_checkpoint_of", "summarise", "close_run", "describe_kept",
           "skipped_images"]


@dataclass(eq=False)
class RunState:
    """Everything a training run holds between two steps, in one process.

    ``model`` is the network itself (its ``state_dict`` goes to the checkpoints), ``net`` what
    the step runs (``model``, or ``DistributedDataParallel`` around it). ``record`` is what a
    checkpoint stores besides the tensors (also written as ``config.json``). ``val_ds`` is None
    without validation, and becomes None when a validation fails (``validation_error``).
    """

    cfg: TrainConfig
    output_dir: Path
    train_json: str | os.PathLike
    rank: int
    world: int
    distributed: bool                     # under torchrun (a process group was set up)
    device: torch.device
    amp_dtype: torch.dtype | None
    progress: bool
    model: torch.nn.Module
    net: torch.nn.Module
    params: list[torch.nn.Parameter]      # the trainable ones
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    record: dict[str, Any]
    train_ds: Any
    val_ds: Any
    stream: TrainStream
    log: RunLog | None                    # rank 0 only
    bar: tqdm
    start_iter: int
    it: int                               # iterations done
    best: float | None                    # best validation mask AP so far, and its iteration
    best_iter: int | None
    lr: float = 0.0                       # the rate of the last step
    window: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # losses since the last log line
    last_losses: dict[str, float] = field(default_factory=dict)  # their mean at the last log line
    nonfinite_run: int = 0                # consecutive NaN/inf steps up to now
    nonfinite_total: int = 0
    empty_run: int = 0                    # consecutive batches of only unreadable images
    metrics: dict | None = None           # of the last validation
    validation_error: str | None = None
    t_start: float = field(default_factory=time.time)
    t_window: float = field(default_factory=time.time)  # when the last log line was written

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the files."""
        return self.rank == 0

    @property
    def last_path(self) -> Path:
        return self.output_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.output_dir / "best.pt"

    @property
    def nonfinite_path(self) -> Path:
        return self.output_dir / "nonfinite.pt"


def setup_run(model_name: str, train_json, val_json, output_dir: Path, cfg: TrainConfig,
              ctx: dist_utils.DistContext | None, *, model_overrides: dict[str, Any], resume: bool, image_root,
              weights_backbone: Any, overwrite: bool, progress: bool,
              explicit: Collection[str] | None = None) -> RunState:
    """The state before the first step of this call (see :func:`fcis.engine.train` for the
    arguments): the configuration (resumed or resolved by the run plan), the data, the model and
    its optimizer (restored on resume), the output folder, ``config.json`` and the log opened.

    The order of the steps here is part of the results: the RNG draws they make (the model's
    initialisation, the anchor fit) must be the same in a fresh and an equal resumed run."""
    from fcis.data import CocoInstances, build_transforms, collate
    from fcis.data.copy_paste import CopyPaste
    from fcis.models import BUILDERS

    # Weights of a network trained from scratch drift into denormal floats, which make CPU
    # arithmetic orders of magnitude slower (seen here: BatchNorm steps going from 0.8 s to
    # minutes). Flushing them to zero changes no result that matters and keeps steps steady.
    torch.set_flush_denormal(True)
    last_path = output_dir / "last.pt"
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
    _check_datasets(train_ds, val_ds, train_json, val_json, ckpt, last_path)

    init: Any = None     # the trained model a fresh run starts from (cfg.init_from), and its config fields
    inherited: dict[str, Any] = {}
    if ckpt is None and cfg.init_from:
        init, inherited = _init_source(BUILDERS, model_name, cfg, weights_backbone)
    if ckpt is None:   # the recipe, the fitted anchors and the data summary (printed by rank 0)
        plan = plan_fresh_run(BUILDERS[model_name], train_ds, cfg, model_overrides,
                              weights_backbone is not None or init is not None, world,
                              log=(lambda text: print(text, file=sys.stderr, flush=True)) if main else None,
                              inherited=inherited)
        cfg, model_overrides = plan.cfg, plan.model_overrides

    # The model (built before any RNG restore, so that a resume consumes the same draws).
    if ckpt is not None:
        model = build_from_checkpoint(BUILDERS, ckpt, last_path)   # with its weights
    else:
        model = _build_model(BUILDERS, model_name, train_ds, train_json, cfg, model_overrides, weights_backbone,
                             pretrained=init is not None)
    if init is not None:   # its weights, but the class-dependent rows of new classes and the background
        from fcis.weights.init_from import init_model, parse_class_map

        report = init_model(model, init, list(train_ds.class_names), class_map=parse_class_map(cfg.init_class_map),
                            inherited=inherited)
        plan.record["init_from"] = report.to_dict()
        if main:
            print(report.describe(), file=sys.stderr, flush=True)
        init = None
    model.to(device).train()
    mcfg: Any = model.config
    train_ds.input_size = (mcfg.min_size, mcfg.max_size)   # images and masks made at the input size
    train_ds.transforms = build_transforms(True, min_size=mcfg.min_size, max_size=mcfg.max_size,
                                           hflip_prob=cfg.hflip_prob, scale_jitter=cfg.scale_jitter,
                                           photometric=bool(cfg.photometric),
                                           fill=tuple(getattr(mcfg, "image_mean", (0.0, 0.0, 0.0))))
    if val_ds is not None:
        val_ds.transforms = build_transforms(False)
    if ctx is not None and cfg.sync_bn and dist_utils.has_trainable_batchnorm(model):
        model = dist_utils.convert_sync_batchnorm(model, device)  # same parameters, global statistics

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(param_groups(model, cfg), cfg, world)
    scheduler = build_scheduler(optimizer, cfg)
    scaler = make_grad_scaler(device, amp_dtype)

    record = {  # what a checkpoint records besides the tensors
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

    log = _open_output(output_dir, record, start_iter, fresh=ckpt is None) if main else None
    groups = aspect_groups(train_ds.index.heights, train_ds.index.widths) if cfg.group_aspect else None
    samples = CopyPaste(train_ds, cfg.copy_paste) if cfg.copy_paste else train_ds
    stream = TrainStream(samples, cfg.batch_size, cfg.seed, workers=cfg.workers, collate_fn=collate,
                         state=data_state, pin_memory=device.type == "cuda", rank=rank, world_size=world,
                         groups=groups)
    assert cfg.iterations is not None  # resolved by the run plan
    bar = tqdm(total=cfg.iterations, initial=start_iter, desc="train", unit="it", dynamic_ncols=True,
               disable=not (progress and main))
    return RunState(cfg=cfg, output_dir=output_dir, train_json=train_json, rank=rank, world=world,
                    distributed=ctx is not None, device=device, amp_dtype=amp_dtype, progress=progress,
                    model=model, net=net, params=params, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                    record=record, train_ds=train_ds, val_ds=val_ds, stream=stream, log=log, bar=bar,
                    start_iter=start_iter, it=start_iter, best=best, best_iter=best_iter)


def _check_datasets(train_ds, val_ds, train_json, val_json, ckpt: dict | None, last_path: Path) -> None:
    """Refuse data nothing can be learnt from, or whose categories differ from the validation
    set's or the resumed checkpoint's."""
    from fcis.data import DataError

    if len(train_ds) == 0:
        raise DataError(f"{train_json}: no images to train on")
    if not (~train_ds.index.ann_crowd).any():
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


def _open_output(output_dir: Path, record: dict[str, Any], start_iter: int, fresh: bool) -> RunLog:
    """Rank 0: the output folder with ``config.json``, and the log (with the curves and
    TensorBoard events) from ``start_iter`` on; says where the curves are."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if fresh:  # a fresh run: no checkpoint of an earlier run here may pass for one of this run
        for stale in ("last.pt", "best.pt", "nonfinite.pt", "curves.png"):
            (output_dir / stale).unlink(missing_ok=True)
    write_json(output_dir / "config.json", record)
    log = RunLog(output_dir, start_iter, total_iterations=record["train_config"].get("iterations"),
                 title=f"{record['model_name']} · {output_dir}")
    print(log.where(), file=sys.stderr, flush=True)
    return log


def save_checkpoint_of(state: RunState, path: Path) -> None:
    """Checkpoint ``state`` at its iteration to ``path``. Called on every process (it gathers
    their RNG states); rank 0 writes. Weights or buffers holding NaN/inf go to ``nonfinite.pt``
    instead, and every process raises :class:`TrainingError` (the weights are the same on every
    process)."""
    rng = dist_utils.gather(get_rng_state())
    weights = state.model.state_dict()
    bad = nonfinite_tensors(weights)
    target = state.nonfinite_path if bad else path
    if state.main:
        extra: dict[str, Any] = {}
        if state.world > 1:
            extra["rng_per_rank"] = rng
        if state.scaler.is_enabled():
            extra["scaler"] = state.scaler.state_dict()
        save_checkpoint(target, model=weights, optimizer=state.optimizer.state_dict(),
                        scheduler=state.scheduler.state_dict(), iteration=state.it, data_state=state.stream.state(),
                        rng=rng[0], best_metric=state.best, best_iteration=state.best_iter, **extra, **state.record)
    if bad and target != path:
        raise TrainingError(
            f"the model's weights hold NaN/inf at iteration {state.it} ({len(bad)} tensors, e.g. "
            f"{', '.join(bad[:3])}): the run diverged; lower the learning rate (--lr). {path.name} was not "
            f"written ({describe_kept(path)}); the diverged state is in {target}")


def close_run(state: RunState) -> None:
    """Close the progress bar, the data stream and the log (also after an error)."""
    state.bar.close()
    state.stream.close()
    if state.log is not None:
        state.log.close()


def summarise(state: RunState) -> dict[str, Any]:
    """The summary :func:`fcis.engine.train` returns (and rank 0 writes as ``summary.json``)."""
    skipped = skipped_images(state.train_ds, state.stream.skipped)
    return {
        "output_dir": str(state.output_dir), "iterations": state.it, "start_iteration": state.start_iter,
        "losses": state.last_losses, "lr": state.optimizer.param_groups[0]["lr"], "metrics": state.metrics,
        "best_metric": state.best, "best_iteration": state.best_iter,
        "last_checkpoint": str(state.last_path) if state.last_path.exists() else None,
        "best_checkpoint": str(state.best_path) if state.best_path.exists() else None,
        "nonfinite_steps": state.nonfinite_total,
        "bad_samples": len(state.train_ds.bad_samples) + len(set(skipped) - {p for p, _ in state.train_ds.bad_samples}),
        "skipped_images": skipped,
        "time_s": time.time() - state.t_start, "world_size": state.world, "validation_error": state.validation_error,
        "curves": str(state.log.curves_path) if state.log is not None and state.log.curves_path.exists() else None,
        "tensorboard": str(state.log.tensorboard_dir) if state.log is not None and state.log.tensorboard_dir else None,
    }


def describe_kept(path: Path) -> str:
    """What ``path`` holds now, for a message."""
    if not path.exists():
        return "there is none yet"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return f"it keeps iteration {load_checkpoint(path, require_finite=False)['iteration']}"
    except CheckpointError:
        return "the one there is unreadable"


def skipped_images(dataset, indices: set[int]) -> list[str]:
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


def _init_source(builders, model_name: str, cfg: TrainConfig, weights_backbone: Any) -> tuple[Any, dict[str, Any]]:
    """The model ``cfg.init_from`` names (:func:`fcis.weights.init_from.load_init_source`) and the
    config fields the new model takes from it; its class map checked before anything is built."""
    from fcis.weights.init_from import inherited_config, load_init_source, parse_class_map

    if weights_backbone is not None:
        raise ValueError("--init-from and --weights-backbone both give the starting weights: pass one of them "
                         "(--init-from keeps the source's backbone)")
    parse_class_map(cfg.init_class_map)
    source = load_init_source(cfg.init_from)  # type: ignore[arg-type]  # checked by the caller
    return source, inherited_config(source, model_name, builders)


def _build_model(builders, model_name: str, train_ds, train_json, cfg: TrainConfig,
                 model_overrides: dict[str, Any], weights_backbone: Any, pretrained: bool = False) -> torch.nn.Module:
    """A fresh model: ``builders[model_name]`` with the data's classes and the overrides.
    ``pretrained``: built as for ImageNet weights (frozen BatchNorm and early stages) without
    loading any (``--init-from`` copies trained weights into it afterwards)."""
    overrides = {**model_overrides, **cfg.model_overrides()}
    if pretrained:
        overrides.setdefault("backbone_pretrained", True)
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
