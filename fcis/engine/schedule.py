"""Learning-rate schedule: linear warm-up, then step decay, as a checkpointable ``LambdaLR``."""

from __future__ import annotations

import bisect
from typing import Callable

import torch

from .config import TrainConfig


def milestones(cfg: TrainConfig) -> list[int]:
    """Iterations (0-based) from which the rate is multiplied by ``gamma`` once more."""
    cfg.require_resolved("iterations", "warmup_iters", "warmup_factor", "lr_steps")
    assert cfg.iterations is not None and cfg.lr_steps is not None
    return [int(round(f * cfg.iterations)) for f in cfg.lr_steps]


def lr_factor_fn(cfg: TrainConfig) -> Callable[[int], float]:
    """Multiplier of the base rate at (0-based) iteration ``it``.

    ``warmup_factor`` rising linearly to 1 over ``warmup_iters`` iterations, times
    ``gamma ** (number of milestones <= it)``.
    """
    steps = milestones(cfg)
    warmup_iters, warmup_factor, gamma = cfg.warmup_iters, cfg.warmup_factor, cfg.gamma
    assert warmup_iters is not None and warmup_factor is not None  # milestones() required them

    def factor(it: int) -> float:
        decay = gamma ** bisect.bisect_right(steps, it)
        if it < warmup_iters:
            alpha = it / warmup_iters
            return decay * (warmup_factor * (1 - alpha) + alpha)
        return decay

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR``: call ``step()`` once per iteration, after ``optimizer.step()``.

    The factor is a plain function, so ``state_dict()`` stores only the position (``last_epoch``);
    the shape of the schedule always comes from ``cfg``.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_fn(cfg))
