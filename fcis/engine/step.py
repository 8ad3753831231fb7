"""One training step (forward, NaN/inf guard, backward, clipping, update), the optimizer, and
validation during training."""

from __future__ import annotations

import math
from typing import Any

import torch

from . import distributed as dist_utils
from .amp import autocast
from .checkpoint import get_rng_state, set_rng_state
from .config import TrainConfig
from .errors import TrainingError
from .evaluator import evaluate_model, predict_dataset

__all__ = ["build_optimizer", "param_groups", "train_step", "validate"]


def _to_device(target: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The trainable parameters in optimizer groups, as the official FCIS: no weight decay on
    biases (MXNet's default, names ending in ``bias``; unless ``cfg.bias_weight_decay``), and the
    model's learning-rate multipliers (``model.lr_multipliers()``: name -> factor, e.g. 3× on
    FCIS's ``conv_new_1``) as a ``lr_mult`` key that :func:`build_optimizer` applies."""
    cfg.require_resolved("weight_decay")
    mults = model.lr_multipliers() if hasattr(model, "lr_multipliers") else {}  # type: ignore[operator]
    assert cfg.weight_decay is not None
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = cfg.weight_decay if (cfg.bias_weight_decay or not name.endswith("bias")) else 0.0
        groups.setdefault((float(mults.get(name, 1.0)), decay), []).append(param)
    return [{"params": ps, "lr_mult": m, "weight_decay": wd} for (m, wd), ps in groups.items()]


def build_optimizer(params: list[torch.nn.Parameter] | list[dict[str, Any]], cfg: TrainConfig,
                    world_size: int = 1) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW, at ``cfg.resolved_lr(world_size)``; ``params``
    is a list of parameters or of groups from :func:`param_groups` (``lr_mult`` scales a group)."""
    cfg.require_resolved("optimizer", "weight_decay")
    lr = cfg.resolved_lr(world_size)
    assert cfg.weight_decay is not None
    if params and isinstance(params[0], dict):
        params = [{**g, "lr": lr * g.get("lr_mult", 1.0)} for g in params]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_step(model, optimizer, params, images, targets, device, clip_grad_norm=None, *,
               amp_dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None
               ) -> tuple[dict[str, float], bool]:
    """One SGD step. Returns ``(losses as floats incl. "loss", finite)``; a NaN/inf loss (or,
    without a float16 scaler, a NaN/inf gradient) skips the step and leaves the model exactly as
    it was: no update, and the buffers the forward pass changed (BatchNorm running statistics)
    restored.

    The losses are averaged over the processes of a distributed run before they are looked at:
    a NaN/inf on any process makes the mean non-finite everywhere, so every process skips the
    backward pass together (one skipping alone would leave the others waiting in DDP's
    gradient all-reduce). ``amp_dtype`` runs the forward under autocast; an enabled float16
    ``scaler`` scales the loss, skips the update itself when gradients overflow and adapts its
    scale (an overflow is not counted as a non-finite step).
    """
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [_to_device(t, device) for t in targets]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]  # small: BatchNorm statistics
    with autocast(device, amp_dtype):
        loss_dict = model(images, targets)
    if not loss_dict:
        raise TrainingError("the model returned no losses in training mode")
    terms = [v.reshape(()).float() for v in loss_dict.values()]
    loss = torch.stack(terms).sum()
    mean = dist_utils.all_reduce_mean(torch.stack([loss.detach(), *[t.detach() for t in terms]])).tolist()
    losses = dict(zip(loss_dict, mean[1:]))
    losses["loss"] = mean[0]
    optimizer.zero_grad(set_to_none=True)
    if not math.isfinite(losses["loss"]):
        _restore(buffers)
        return losses, False
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        if clip_grad_norm is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        return losses, True
    loss.backward()
    if clip_grad_norm is not None:
        # after DDP's all-reduce the gradients, hence the norm, are the same on every process
        norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        if not torch.isfinite(norm):
            optimizer.zero_grad(set_to_none=True)
            losses["grad_norm"] = float(norm)
            _restore(buffers)
            return losses, False
    elif not _grads_finite(params):  # a finite loss can still give inf gradients
        optimizer.zero_grad(set_to_none=True)
        losses["grad_norm"] = float("inf")
        _restore(buffers)
        return losses, False
    optimizer.step()
    return losses, True


def _restore(buffers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for buf, saved in buffers:
            buf.copy_(saved)


def _grads_finite(params: list[torch.nn.Parameter]) -> bool:
    """Whether every gradient is finite (the same answer on every process: after DDP's all-reduce
    the gradients are the same)."""
    flags = [torch.isfinite(p.grad).all() for p in params if p.grad is not None]
    return bool(torch.stack(flags).all()) if flags else True


def validate(model, dataset, device, progress: bool, amp_dtype: torch.dtype | None = None) -> dict:
    """Evaluate without disturbing the training RNG streams or the model's train mode.

    In a distributed run every process must call it: each predicts its shard of ``dataset``
    (:func:`predict_dataset` shards and gathers), rank 0 scores all results through
    :func:`evaluate_model`, and the metrics are broadcast, so that every process takes the
    same best-checkpoint decision."""
    rng = get_rng_state()
    try:
        with autocast(device, amp_dtype):
            if not dist_utils.is_distributed():
                return evaluate_model(model, dataset, device, progress=progress)
            metrics = None
            if dist_utils.is_main_process():
                metrics = evaluate_model(model, dataset, device, progress=progress)
            else:  # the same predict_dataset call evaluate_model makes: this process's shard
                predict_dataset(model, dataset, device, progress=False)
        return dist_utils.broadcast_object(metrics)
    finally:
        set_rng_state(rng)
