"""Seeding and resumption: the RNG streams of each process, the checks before resuming a
checkpoint, and restoring its schedule and RNG states."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch

from .checkpoint import set_rng_state
from .config import TrainConfig
from .errors import CheckpointError

#: Fields of TrainConfig that change the result; a resume with different values warns.
RESULT_FIELDS = ("batch_size", "lr", "optimizer", "momentum", "weight_decay", "warmup_iters", "warmup_factor",
                 "lr_steps", "gamma", "clip_grad_norm", "seed", "hflip_prob", "min_size", "max_size",
                 "on_bad_sample", "amp", "amp_dtype", "sync_bn")


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


def check_resumable(ckpt: dict, model_name: str, cfg: TrainConfig, path: Path, world: int = 1,
                    warn: bool = True) -> None:
    """Raise ``CheckpointError`` when ``ckpt`` cannot continue this run; warn when a setting that
    changes the result (``RESULT_FIELDS``, the process count) differs from the checkpoint's."""
    if ckpt["model_name"] != model_name:
        raise CheckpointError(f"{path} was trained as {ckpt['model_name']!r}, not {model_name!r}")
    for key in ("optimizer", "scheduler", "iteration", "rng", "dataset", "train_config"):
        if key not in ckpt:
            raise CheckpointError(f"{path} cannot be resumed: it lacks {key!r}")
    old = ckpt["train_config"]
    now = cfg.to_dict()
    changed = [f"{k}: {old.get(k)!r} -> {now[k]!r}" for k in RESULT_FIELDS
               if k in old and _norm(old[k]) != _norm(now[k])]
    old_world = int(ckpt.get("world_size", 1))
    if old_world != world:
        changed.append(f"processes (WORLD_SIZE): {old_world} -> {world}")
    if changed and warn:
        warnings.warn(f"resuming {path} with a different configuration ({'; '.join(changed)}); "
                      "the result will differ from an uninterrupted run", stacklevel=3)


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v
