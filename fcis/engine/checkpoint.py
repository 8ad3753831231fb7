"""Checkpoints: atomic writes, clear errors on load, and rebuilding a model from one.

A checkpoint is a ``torch.save``-d dict with ``format == "fcis-checkpoint"`` holding:
``model`` (state dict), ``model_name``, ``model_config`` (``model.config.to_dict()``),
``optimizer``, ``scheduler``, ``iteration`` (iterations done), ``data_state``, ``rng``,
``train_config``, ``dataset`` (``class_names``, ``label_to_cat_id``, ``train_json``,
``val_json``, ``image_root``), ``best_metric`` and ``best_iteration``. Everything is plain
tensors and Python containers, so it loads with ``torch.load(..., weights_only=True)``.

Integrity: ``sha256`` holds :func:`state_digest` of everything else in the dict (tensor bytes,
dtypes, shapes and the plain values), written by :func:`save_checkpoint` and checked by
:func:`load_checkpoint`, which refuses a file whose content does not match (a damaged disk
block, a partial copy) and, by default, one whose model holds NaN/inf. A checkpoint of an older
fcis without the entry loads with a warning.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcis.runtime.device import resolve_device

from .errors import CheckpointError

FORMAT = "fcis-checkpoint"
VERSION = 1

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "get_rng_state", "set_rng_state",
           "checkpoint_meta", "state_digest", "nonfinite_tensors", "FORMAT"]

#: The entry holding the digest of the rest of the checkpoint.
DIGEST_KEY = "sha256"


def state_digest(state: Any) -> str:
    """SHA-256 (hex) of a checkpoint's content: every tensor's dtype, shape and bytes, and every
    plain value, walked in a fixed order (dict keys sorted; lists and tuples alike), so the
    digest of the dict ``torch.load`` returns equals that of the dict that was saved."""
    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]  # ndarray is a buffer
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)};".encode())
        for key in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)};".encode())
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)};".encode() + data)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(f"B{len(obj)};".encode() + bytes(obj))
    else:  # None, bool, int, float and other plain values
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def nonfinite_tensors(tensors: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or inf."""
    return [name for name, t in tensors.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def save_checkpoint(path: str | os.PathLike, **state: Any) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, flushed and
    fsync-ed, then ``os.replace``-d over ``path``. A crash at any point leaves the old file
    intact and no temporary file behind; the temporary file of a process that died mid-write
    (``.<name>.<random>.tmp``) is removed by the next successful write of ``path``.
    The payload gets a ``sha256`` entry (:func:`state_digest`; one passed in is replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in state.items() if k != DIGEST_KEY}
    payload = {"format": FORMAT, "version": VERSION, "saved_at": time.time(), **state}
    payload[DIGEST_KEY] = state_digest(payload)
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
    _remove_stale_temps(path, keep=Path(tmp))
    return path


def _remove_stale_temps(path: Path, keep: Path) -> None:
    """Temporary files of ``path`` left by writers that died mid-write (one writer per file)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        if stale != keep:
            try:
                stale.unlink()
            except OSError:
                pass


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


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    require_finite: bool = True) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and check its ``sha256`` digest.

    Raises :class:`CheckpointError` (a ``ValueError``) naming the file when it is missing,
    unreadable/corrupt (content not matching its digest), not an fcis checkpoint, or, with
    ``require_finite``, when its model weights or buffers hold NaN/inf. A checkpoint without a
    digest (older fcis) loads with a warning. The returned dict has no ``sha256`` entry.
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
    digest = state.pop(DIGEST_KEY, None)
    if digest is None:
        warnings.warn(f"{path} has no integrity digest (written by an older fcis); loaded unchecked",
                      stacklevel=2)
    elif digest != state_digest(state):
        raise CheckpointError(f"{path} is corrupt: its content does not match the sha256 digest stored in it "
                              "(damaged on disk or in a copy); use another checkpoint (e.g. best.pt) or retrain")
    if require_finite and isinstance(state["model"], dict):
        bad = nonfinite_tensors(state["model"])
        if bad:
            raise CheckpointError(f"{path}: {len(bad)} model tensor(s) hold NaN/inf (e.g. {', '.join(bad[:3])}): "
                                  "the run that wrote it diverged; use an earlier checkpoint or retrain "
                                  "with a lower --lr")
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
    model = build_from_checkpoint(BUILDERS, state, path)
    model.to(resolve_device(device)).eval()
    return model, checkpoint_meta(state)


def build_from_checkpoint(builders: dict[str, Any], state: dict[str, Any], path: str | os.PathLike) -> torch.nn.Module:
    """``builders[model_name](**model_config)`` of a checkpoint with its weights loaded; a config
    that the builder refuses or weights that do not fit (the checkpoint of another model, or of
    another fcis version) are a :class:`CheckpointError` naming ``path``."""
    name = state["model_name"]
    try:
        model = builders[name](**dict(state["model_config"]))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: its model configuration does not fit model {name!r} "
                              f"({e}); was it written for another model or another fcis version?") from e
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: its weights do not fit model {name!r}: "
                              f"{str(e).strip().splitlines()[0]}") from e
    return model


# --- random number generators -------------------------------------------------------------------

def get_rng_state() -> dict[str, Any]:
    """States of Python's ``random``, NumPy's global generator, torch CPU and (if any) CUDA."""
    np_state: Any = np.random.get_state()
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
