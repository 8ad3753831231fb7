"""Seeding and resumption: the RNG streams of each process, the checks before resuming a
checkpoint, and restoring its schedule and RNG states."""

from __future__ import annotations

import random
import warnings
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch

from .checkpoint import set_rng_state
from .config import TrainConfig
from .errors import CheckpointError

#: Fields of TrainConfig that change the result: a resumed run keeps the checkpoint's values, and
#: asking for another one is an error (see :func:`resume_config`).
RESULT_FIELDS = ("recipe", "anchors", "init_from", "init_class_map", "batch_size", "lr", "optimizer", "bias_weight_decay", "momentum", "weight_decay", "warmup_iters", "warmup_factor",
                 "lr_steps", "gamma", "clip_grad_norm", "seed", "hflip_prob", "min_size", "max_size", "input_size",
                 "on_bad_sample", "amp", "amp_dtype", "sync_bn", "group_aspect", "scale_jitter", "photometric",
                 "copy_paste")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_rank(seed: int, rank: int) -> None:
    """Give process ``rank > 0`` of a fresh distributed run its own RNG streams (the model's
    sampling draws), after the model was built identically everywhere. Rank 0 (and a single
    process) keeps the stream of ``seed``."""
    if rank > 0:
        seed_everything(int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]))


def apply_schedule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set the rate of the restored iteration from the schedule of *this* run's config.

    The optimizer's saved rate is the old schedule's; when ``iterations`` changed (2 trained,
    resumed to 4) the step milestones, fractions of ``iterations``, moved with it. For an
    unchanged config this recomputes the very same number."""
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)


def restore_rng(ckpt: dict, rank: int, world: int, seed: int) -> None:
    """This process's RNG states from a checkpoint: its own when the checkpoint has one per
    process of the same world size, else rank 0's (``rng``) for rank 0 and a fresh per-rank seed
    for the others."""
    per_rank = ckpt.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == world:
        set_rng_state(per_rank[rank])
    elif rank == 0:
        set_rng_state(ckpt["rng"])
    else:
        seed_rank(seed, rank)


def resume_config(ckpt: dict, cfg: TrainConfig, path: Path, explicit: Collection[str] | None = None,
                  world: int = 1) -> TrainConfig:
    """The configuration of a resumed run: the checkpoint's ``train_config``, with the fields
    named in ``explicit`` (those the caller set on purpose, e.g. the flags given on the command
    line; None: the fields of ``cfg`` that differ from ``TrainConfig()``'s) taken from ``cfg``.

    Fields outside ``RESULT_FIELDS`` (``iterations``, ``device``, ``workers``, the log, eval
    and checkpoint periods, ...) may change; an explicit value of a ``RESULT_FIELDS`` field
    that contradicts the checkpoint raises one ``CheckpointError`` naming the flags and ``path``.
    Fields the checkpoint lacks (written by an older fcis) keep ``cfg``'s values."""
    now = cfg.to_dict()
    if explicit is None:
        default = TrainConfig().to_dict()
        explicit = [k for k in now if _norm(now[k]) != _norm(default[k])]
    old = {k: v for k, v in dict(ckpt["train_config"]).items() if k in now}
    merged = {**now, **old}
    contradictions = []
    for key in explicit:
        if key not in now:
            continue
        if key in RESULT_FIELDS and key in old and not _same(key, old, now, world):
            had = _show(old[key]) if old[key] is not None or key != "lr" else f"the default, {_rate(old, world):g}"
            contradictions.append(f"--{key.replace('_', '-')} {_show(now[key])} (the checkpoint has {had})")
        merged[key] = now[key]
    if contradictions:
        raise CheckpointError(f"{path}: a resumed run keeps the configuration it started with, but "
                              f"{'; '.join(contradictions)}; drop the flag(s), or start a new run "
                              "in another --output")
    return TrainConfig.from_dict(merged)


def _same(key: str, old: dict, now: dict, world: int) -> bool:
    if key == "lr":  # None means the default rule: compare the rates it gives
        return abs(_rate(old, world) - _rate(now, world)) <= 1e-12 * max(abs(_rate(old, world)), 1.0)
    return _norm(old[key]) == _norm(now[key])


def _rate(cfg: dict, world: int) -> float:
    return cfg["lr"] if cfg.get("lr") is not None else TrainConfig(batch_size=cfg.get("batch_size", 1)).resolved_lr(world)


def _show(v) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


def check_resumable(ckpt: dict, model_name: str, cfg: TrainConfig, path: Path, world: int = 1,
                    warn: bool = True, explicit: Collection[str] | None = None) -> TrainConfig:
    """Raise ``CheckpointError`` when ``ckpt`` cannot continue this run; warn when a setting that
    changes the result (the process count) differs from the checkpoint's. Returns the run's
    configuration, :func:`resume_config` of ``cfg`` and ``explicit``."""
    if ckpt["model_name"] != model_name:
        raise CheckpointError(f"{path} was trained as {ckpt['model_name']!r}, not {model_name!r}")
    for key in ("optimizer", "scheduler", "iteration", "rng", "dataset", "train_config"):
        if key not in ckpt:
            raise CheckpointError(f"{path} cannot be resumed: it lacks {key!r}")
    cfg = resume_config(ckpt, cfg, path, explicit, world)
    old = ckpt["train_config"]
    now = cfg.to_dict()
    changed = [f"{k}: {old.get(k)!r} -> {now[k]!r}" for k in RESULT_FIELDS
               if k in old and not _same(k, old, now, world)]
    old_world = int(ckpt.get("world_size", 1))
    if old_world != world:
        changed.append(f"processes (WORLD_SIZE): {old_world} -> {world}")
    if changed and warn:
        warnings.warn(f"resuming {path} with a different configuration ({'; '.join(changed)}); "
                      "the result will differ from an uninterrupted run", stacklevel=3)
    return cfg


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v
