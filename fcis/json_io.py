"""Strict JSON files: Python, NumPy and torch values made plain, written atomically (torch is not
needed: tensors are recognised only when torch is loaded)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

__all__ = ["jsonable", "write_atomic", "write_json"]


def jsonable(x: Any) -> Any:
    """Plain-JSON copy: tensors and NumPy arrays/scalars to Python, paths to strings, non-finite
    floats to ``None`` (so that ``json.dumps(..., allow_nan=False)`` accepts it)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray) or _is_tensor(x):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def _is_tensor(x: Any) -> bool:
    """A torch tensor, recognised without importing torch (a tensor exists only if torch is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, suffix: str = ".tmp",
                 fsync: bool = True) -> Path:
    """Write a file atomically: ``write(f)`` fills a temporary file in the same folder (``fsync``'d),
    which then replaces ``path`` (``os.replace``); a reader sees the old file or the new one, never
    half of one. Creates the folder; the temporary file is removed on any error. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> Path:
    """Write ``jsonable(data)`` to ``path`` atomically (:func:`write_atomic`). ``indent=None``
    writes compactly (large files). Returns the path."""
    text = json.dumps(jsonable(data), indent=indent, allow_nan=False) + "\n"
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")), suffix=".json.tmp")
