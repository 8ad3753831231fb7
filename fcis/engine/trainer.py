"""The training loop: SGD with warm-up and step decay, periodic validation and checkpoints, and
exact resumption.

Files written to ``output_dir``:

- ``last.pt``: every ``checkpoint_every`` iterations and at the end (atomically);
- ``best.pt``: whenever the validation mask AP (``segm/AP``) improves;
- ``log.jsonl``: one JSON object per line, ``{"iteration", "loss", "losses", "lr", "time",
  "sec_per_iter"}`` every ``log_every`` iterations, ``{"iteration", "nonfinite": true, ...}``
  for a skipped step and ``{"iteration", "metrics"}`` after each validation;
- ``metrics.json``: the last validation; ``config.json``: the run's configuration;
- ``curves.png``: the losses, learning rate and validation metrics against the iteration, redrawn
  as training goes (after a log line at most every few seconds, after each validation, at the
  end) and continued on resume (:mod:`fcis.engine.curves`; Pillow, no matplotlib);
- ``tb/``: TensorBoard events, when ``torch.utils.tensorboard`` can be imported (the
  ``tensorboard`` package: ``pip install fcis[tensorboard]``); ``tensorboard --logdir OUTPUT``;
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

This module holds the loop (:func:`_train`) and its steps (step, log, validate, finish); the
run's state, its setup and its checkpoints are in :mod:`fcis.engine.run_state`, one optimizer
step and the optimizer in :mod:`fcis.engine.step`, seeding and the resume checks in
:mod:`fcis.engine.resume`, the log files in :mod:`fcis.engine.run_log`.
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.report import pct
from ..json_io import write_json
from . import distributed as dist_utils
from .config import TrainConfig
from .errors import TrainingError
from .run_log import fmt_losses, segm_ap
from .run_state import (
    RunState,
    close_run,
    describe_kept,
    save_checkpoint_of,
    setup_run,
    skipped_images,
    summarise,
)
from .step import train_step, validate

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
    run then raises :class:`TrainingError` after writing everything), ``curves`` (the PNG) and
    ``tensorboard`` (the events' folder, None without the package); both None on ranks > 0.
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
    state = setup_run(model_name, train_json, val_json, output_dir, cfg, ctx, model_overrides=model_overrides,
                      resume=resume, image_root=image_root, weights_backbone=weights_backbone,
                      overwrite=overwrite, progress=progress, explicit=explicit)
    cfg = state.cfg   # resolved: the recipe's values, or the checkpoint's
    assert cfg.iterations is not None
    try:
        while state.it < cfg.iterations:
            images, targets = state.stream.next()
            if _unreadable_batch(state, images):
                continue
            _step(state, images, targets)
            final = state.it == cfg.iterations
            if _due(cfg.log_every, state.it, final):
                _log(state)
            if final and state.nonfinite_run:
                _stop_diverged(state)
            saved_last = _due(cfg.checkpoint_every, state.it, final)
            if saved_last:  # before validation: a crash there loses no training
                save_checkpoint_of(state, state.last_path)
            if state.val_ds is not None and _due(cfg.eval_every, state.it, final):
                _validate(state, saved_last)
    finally:
        close_run(state)
    return _finish(state)


def _due(every: int, iteration: int, final: bool) -> bool:
    """Whether a periodic action (every ``every`` iterations, 0: never, and at the end) is due."""
    return bool((every and iteration % every == 0) or final)


def _unreadable_batch(state: RunState, images: list) -> bool:
    """Whether the whole batch was unreadable images (skip mode) on this or another process: the
    loop then draws the next one; a whole epoch of them is a :class:`DataError`."""
    from fcis.data import DataError

    if dist_utils.all_reduce_min(bool(images), state.device):
        state.empty_run = 0
        return False
    state.empty_run += 1
    if state.empty_run > state.stream.per_epoch:
        raise DataError(f"{state.train_json}: none of the images could be read "
                        f"(e.g. {skipped_images(state.train_ds, state.stream.skipped)[:1]})")
    return True


def _step(state: RunState, images: list, targets: list) -> None:
    """One optimizer step and the schedule's; a NaN/inf step (which changes nothing in the
    model) is logged, and ``cfg.max_nonfinite`` of them in a row stop the run."""
    state.lr = state.optimizer.param_groups[0]["lr"]
    losses, finite = train_step(state.net, state.optimizer, state.params, images, targets, state.device,
                                state.cfg.clip_grad_norm, amp_dtype=state.amp_dtype, scaler=state.scaler)
    with warnings.catch_warnings():  # a skipped first step makes LambdaLR warn about the order
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        state.scheduler.step()
    state.it += 1
    state.bar.update(1)
    if finite:
        state.nonfinite_run = 0
        for k, v in losses.items():
            state.window[k].append(v)
        state.bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{state.lr:.2e}", refresh=False)
        return
    state.nonfinite_run += 1
    state.nonfinite_total += 1
    if state.log is not None:
        state.log.write({"iteration": state.it, "nonfinite": True, "losses": losses, "lr": state.lr})
    if state.nonfinite_run >= state.cfg.max_nonfinite:
        save_checkpoint_of(state, state.nonfinite_path)
        raise TrainingError(
            f"the loss was NaN/inf for {state.nonfinite_run} consecutive iterations (up to iteration "
            f"{state.it}: {fmt_losses(losses)}); lower the learning rate (--lr) or check the data; "
            f"state saved to {state.nonfinite_path}")


def _log(state: RunState) -> None:
    """A ``log.jsonl`` line with the mean losses since the last one (none when every step since
    was NaN/inf)."""
    if not state.window:
        return
    state.last_losses = {k: float(np.mean(v)) for k, v in state.window.items()}
    now = time.time()
    if state.log is not None:
        state.log.write({"iteration": state.it, "loss": state.last_losses.get("loss"), "losses": state.last_losses,
                         "lr": state.lr, "time": now,
                         "sec_per_iter": (now - state.t_window) / len(state.window["loss"])})
    state.t_window = now
    state.window.clear()


def _stop_diverged(state: RunState) -> None:
    """The run ended in NaN/inf steps: save the state to ``nonfinite.pt``, not ``last.pt``, and stop."""
    save_checkpoint_of(state, state.nonfinite_path)
    raise TrainingError(
        f"the run ended with {state.nonfinite_run} consecutive NaN/inf steps (iterations "
        f"{state.it - state.nonfinite_run + 1}-{state.it}): the weights cannot be trusted; lower the learning rate "
        f"(--lr) or check the data. {state.last_path.name} was not written ({describe_kept(state.last_path)}); "
        f"state saved to {state.nonfinite_path}")


def _validate(state: RunState, saved_last: bool) -> None:
    """Validate, log the metrics and checkpoint ``best.pt`` when the mask AP improved (and
    ``last.pt`` again when it was written this iteration, so that it records the new best).

    A validation that raises in a single process is reported and switches validation off (the
    run raises at its end, see :func:`_finish`); in a distributed run it raises at once (the
    other processes wait in validation's collectives)."""
    try:
        state.metrics = validate(state.model, state.val_ds, state.device, state.progress and state.main,
                                 state.amp_dtype)
    except Exception as e:  # noqa: BLE001 - reported, and raised at the end of the run
        if state.distributed:
            raise
        state.validation_error = (f"validation at iteration {state.it} failed ({type(e).__name__}: "
                                  f"{' '.join(str(e).split())[:300]})")
        state.val_ds = None  # no more validation in this run
        if state.log is not None:
            state.log.write({"iteration": state.it, "validation_error": state.validation_error,
                             "traceback": traceback.format_exc()})
            state.bar.write(f"fcis: warning: {state.validation_error}; training goes on without validation")
        return
    metrics = state.metrics
    ap = segm_ap(metrics)
    if state.log is not None:
        state.log.write({"iteration": state.it, "metrics": metrics})
        state.bar.write(f"iteration {state.it}: segm AP {pct(ap)}  bbox AP {pct(metrics.get('bbox', {}).get('AP'))}")
    if ap is not None and (state.best is None or ap > state.best):
        state.best, state.best_iter = ap, state.it
        save_checkpoint_of(state, state.best_path)
        if saved_last:  # last.pt of this iteration records the new best too
            save_checkpoint_of(state, state.last_path)


def _finish(state: RunState) -> dict[str, Any]:
    """Rank 0 writes ``metrics.json`` and ``summary.json``; every process returns the summary,
    or raises :class:`TrainingError` when a validation failed."""
    if state.metrics is not None and state.main:
        from fcis.evaluation import write_metrics
        write_metrics(state.output_dir, state.metrics)
    summary = summarise(state)
    if state.main:
        write_json(state.output_dir / "summary.json", summary)
    dist_utils.barrier()  # rank 0's files are complete when train() returns on any process
    if state.validation_error is not None:
        raise TrainingError(f"{state.validation_error}; training itself finished: the weights of iteration "
                            f"{state.it} are in {state.last_path} (evaluate them with fcis evaluate once the "
                            f"validation data is fixed); details in {state.output_dir / 'log.jsonl'}")
    return summary
