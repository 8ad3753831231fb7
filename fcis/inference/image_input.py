"""Images from what users hold (a path, a PIL image, a NumPy array, a tensor) as ``float32[3, H, W]``
in [0, 1] — NumPy only, so that the ONNX runner needs no PyTorch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fcis.image_io import ImageReadError, pil_to_rgb_array, read_rgb
from fcis.runtime.errors import InputError

__all__ = ["load_image_array"]


def load_image_array(x: Any) -> np.ndarray:
    """``float32[3, H, W]`` in [0, 1], from a path or a PIL image (as displayed: EXIF orientation
    applied, 16-bit scaled; :mod:`fcis.image_io`, the reader training uses too), a numpy
    ``HxWx3`` (``HxW``, ``HxWx4``) array (uint8, or float in [0, 1]) or a ``3xHxW`` tensor
    (float in [0, 1], or uint8)."""
    if isinstance(x, (str, os.PathLike)):
        path = Path(x)
        if not path.is_file():
            raise InputError(f"{path}: image not found")
        try:
            array = read_rgb(path)
        except ImageReadError as e:
            raise InputError(str(e)) from None
        out = np.empty((3, *array.shape[:2]), dtype=np.float32)       # no uint8 CHW copy of a large photo
        np.copyto(out, array.transpose(2, 0, 1))
        out /= np.float32(255)
        return out
    if isinstance(x, Image.Image):
        x = pil_to_rgb_array(x)
    if isinstance(x, np.ndarray):
        if x.ndim == 2:
            x = np.repeat(x[:, :, None], 3, axis=2)
        if x.ndim != 3 or x.shape[2] not in (3, 4):
            raise InputError(f"a numpy image must be HxW, HxWx3 or HxWx4, got shape {x.shape}")
        return _chw_float(np.ascontiguousarray(x[:, :, :3].transpose(2, 0, 1)))
    if hasattr(x, "detach") and hasattr(x, "numpy"):          # a torch tensor, without importing torch
        if x.ndim != 3 or x.shape[0] != 3:
            raise InputError(f"an image tensor must be 3xHxW, got shape {tuple(x.shape)}")
        return _chw_float(x.detach().cpu().numpy())
    raise InputError(f"cannot use a {type(x).__name__} as an image (path, PIL image, numpy array or tensor)")


def _chw_float(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out /= np.float32(255)                # in place: one float copy of a large photo, not two
        return out
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"an image must be float in [0, 1] or uint8, got {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)
