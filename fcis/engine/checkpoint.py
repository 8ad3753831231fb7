"""Checkpoints: atomic writes, clear errors on load, and rebuilding a model from one.

A checkpoint is a ``torch.save``-d dict with ``format == "fcis-checkpoint"`` holding:
``model`` (state dict), ``model_name``, ``model_config`` (``model.config.to_dict()``),
``optimizer``, ``scheduler``, ``iteration`` (iterations done), ``data_state``, ``rng``,
``train_config``, ``dataset`` (``class_names``, ``label_to_cat_id``, ``train_json``,
``val_json``, ``image_root``), ``best_metric`` and ``best_iteration``. Everything is plain
tensors and Python containers, so it loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError

FORMAT = "fcis-checkpoint"
VERSION = 1

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "get_rng_state", "set_rng_state",
           "checkpoint_meta", "FORMAT"]


def save_checkpoint(path: str | os.PathLike, **state: Any) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, flushed and
    fsync-ed, then ``os.replace``-d over ``path``. A crash at any point leaves the old file
    intact and no temporary file behind (unless the process itself dies mid-write)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "saved_at": time.time(), **state}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:  # make the rename durable; not possible on every OS / file system
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` (a ``ValueError``) naming the file when it is missing,
    unreadable/corrupt, or not an fcis checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (not a zip archive: wrong file, or corrupt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses arbitrary objects
        raise CheckpointError(f"{path} is not an fcis checkpoint (it holds Python objects other than "
                              "tensors and plain containers)") from e
    except Exception as e:  # noqa: BLE001 - torch raises many types for truncated/corrupt files
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or corrupt ({reason})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an fcis checkpoint (no 'format: {FORMAT}' entry); "
                              "was it written by fcis train?")
    missing = [k for k in ("model", "model_name", "model_config") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    return state


def checkpoint_meta(state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint without the heavy parts (weights, optimizer, scheduler, RNG)."""
    heavy = {"model", "optimizer", "scheduler", "rng"}
    meta = {k: v for k, v in state.items() if k not in heavy}
    dataset = meta.get("dataset") or {}
    meta["class_names"] = list(dataset.get("class_names") or [])
    meta["label_to_cat_id"] = {int(k): int(v) for k, v in (dataset.get("label_to_cat_id") or {}).items()}
    return meta


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint through ``BUILDERS[model_name](**model_config)``, load
    its weights and put it in eval mode on ``device``. Returns ``(model, meta)`` where ``meta``
    is :func:`checkpoint_meta` (class_names, label_to_cat_id, iteration, configs, ...)."""
    from fcis.models import BUILDERS

    state = load_checkpoint(path)
    name = state["model_name"]
    if name not in BUILDERS:
        raise CheckpointError(f"checkpoint {path} holds model {name!r}, which this fcis does not know "
                              f"(known: {', '.join(sorted(BUILDERS))})")
    model = BUILDERS[name](**dict(state["model_config"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: weights do not fit model {name!r}: "
                              f"{str(e).splitlines()[0]}") from e
    model.to(resolve_device(device)).eval()
    return model, checkpoint_meta(state)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None picks CUDA when available; a CUDA device without CUDA is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
    return dev


# --- random number generators -------------------------------------------------------------------

def get_rng_state() -> dict[str, Any]:
    """States of Python's ``random``, NumPy's global generator, torch CPU and (if any) CUDA."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
