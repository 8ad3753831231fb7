"""Mixed precision (``--amp``): ``torch.autocast`` for training and inference, and a
``torch.amp.GradScaler`` for float16 training.

- CUDA: ``bf16`` (default; needs a GPU with bfloat16, Ampere or newer) or ``fp16`` (any GPU;
  training then scales the loss with a ``GradScaler`` whose state goes into the checkpoint).
- CPU: ``bf16`` runs under CPU autocast (correct everywhere, but only faster on CPUs with
  bfloat16 instructions such as AVX512-BF16/AMX; mostly for trying things out and for tests);
  ``fp16`` is refused with a clear message, since CPU float16 autocast has no loss scaling here.

Autocast leaves numerically delicate ops (losses, softmax, ``roi_align``, ``nms``,
``grid_sample`` with float32 grids) in float32; the network's convolutions run in the low
precision. Outputs of inference are converted to float32 by the callers.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

__all__ = ["AMP_DTYPES", "amp_dtype", "check_amp", "autocast", "make_grad_scaler"]

#: ``--amp-dtype`` names and their torch dtypes.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(name: str) -> torch.dtype:
    """The torch dtype of an ``--amp-dtype`` name (``bf16`` or ``fp16``)."""
    if name not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {name!r}")
    return AMP_DTYPES[name]


def check_amp(enabled: bool, dtype_name: str, device: torch.device | str) -> torch.dtype | None:
    """Validate mixed precision for ``device``; returns the autocast dtype, or None when off.

    Raises ``ValueError`` for float16 on the CPU and for bfloat16 on a GPU without it."""
    dtype = amp_dtype(dtype_name)
    if not enabled:
        return None
    device = torch.device(device)
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("--amp-dtype fp16 needs a CUDA device; on the CPU, mixed precision runs "
                         "bfloat16 autocast (--amp-dtype bf16) or use no --amp")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{device} has no bfloat16 support; use --amp-dtype fp16 (with loss scaling)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--amp supports cpu and cuda devices, not {device.type!r}")
    return dtype


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast(device.type, dtype)``, or a do-nothing context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def make_grad_scaler(device: torch.device | str, dtype: torch.dtype | None,
                     state: dict[str, Any] | None = None) -> torch.amp.GradScaler:
    """A ``GradScaler``, enabled only for float16 (bfloat16 has float32's range and needs none);
    ``state`` (from ``scaler.state_dict()``, e.g. a checkpoint's ``"scaler"``) is restored."""
    device = torch.device(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    if state and scaler.is_enabled():
        scaler.load_state_dict(state)
    return scaler
