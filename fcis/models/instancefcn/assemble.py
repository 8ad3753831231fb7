"""InstanceFCN's instance assembling module: parameter-free m×m windows from k² score maps.

A window of m×m cells is split into k×k sub-windows; cell (u, v) of the window is copied from
score map ``floor(u·k/m)·k + floor(v·k/m)`` at the same place. ``dense_assemble`` does this for
the window centred on every cell of the map (the paper's dense sliding window);
``assemble_windows`` does it for chosen windows of any size in input pixels, through
:func:`fcis.ops.ps_roi_assemble` (RoIAlign sampling, one sample per output cell). For a window
of side m·stride centred on a cell the two agree exactly wherever the window lies at least one
cell inside the map (at the border RoIAlign reads the edge cell for samples less than one cell
outside, where the dense copy reads zero).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ...ops import ps_roi_assemble

__all__ = ["dense_assemble", "window_centers", "window_boxes", "assemble_windows"]


def _bounds(i: int, k: int, m: int) -> tuple[int, int]:
    """Cells u of the window with floor(u·k/m) == i: [ceil(i·m/k), ceil((i+1)·m/k))."""
    return -(-i * m // k), -(-(i + 1) * m // k)


def dense_assemble(maps: Tensor, window_size: int) -> Tensor:
    """Assemble the m×m window centred on every position of the k² instance-sensitive maps.

    Args:
        maps: (N, k², H, W) score maps (any float dtype), channel i·k + j = relative position
            (row i, column j) of the k×k grid.
        window_size: m >= k, the window side in cells.

    Returns:
        (N, m², H, W): channel u·m + v at (y, x) is
        ``maps[n, floor(u·k/m)·k + floor(v·k/m), y - m//2 + u, x - m//2 + v]`` (zero outside the
        map). Plain copies (unfold), so it is differentiable.
    """
    n, c, h, w = maps.shape
    k, m = math.isqrt(c), int(window_size)
    if k * k != c or k < 1:
        raise ValueError(f"maps must have k² channels, got {c}")
    if m < k:
        raise ValueError(f"window_size ({m}) must be >= group_size ({k})")
    lo = m // 2
    padded = F.pad(maps, (lo, m - 1 - lo, lo, m - 1 - lo))             # (N, k², H+m-1, W+m-1)
    rows = []
    for i in range(k):
        u0, u1 = _bounds(i, k, m)
        blocks = []
        for j in range(k):
            v0, v1 = _bounds(j, k, m)
            bh, bw = u1 - u0, v1 - v0
            sub = padded[:, i * k + j:i * k + j + 1, u0:u0 + h + bh - 1, v0:v0 + w + bw - 1]
            blocks.append(F.unfold(sub, (bh, bw)).view(n, bh, bw, h, w))  # patch (a, b) at (y, x)
        rows.append(torch.cat(blocks, dim=2))
    return torch.cat(rows, dim=1).reshape(n, m * m, h, w)


def window_centers(height: int, width: int, stride: int, *, dtype: torch.dtype = torch.float32,
                   device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Centres (input pixels) of the windows of a (H, W) feature map: cell centres,
    ys (H,) = (y + 0.5)·stride and xs (W,) = (x + 0.5)·stride."""
    ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) * stride
    xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) * stride
    return ys, xs


def window_boxes(cy: Tensor, cx: Tensor, side: Tensor) -> Tensor:
    """(K, 4) xyxy boxes of square windows with centres (cy, cx) and sides ``side``, each (K,)."""
    half = side / 2
    return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1)


def assemble_windows(maps: Tensor, rois: Tensor, window_size: int, stride: int) -> Tensor:
    """Assemble chosen windows of the k² maps at m×m resolution.

    Args:
        maps: (N, k², H, W) instance-sensitive score maps at ``stride``.
        rois: (K, 5) batch index, x1, y1, x2, y2 of each window in input pixels.
        window_size: m, the output side.
        stride: input pixels per map cell.

    Returns:
        (K, m, m) logits.
    """
    k = math.isqrt(maps.shape[1])
    out = ps_roi_assemble(maps, rois, k, window_size, 1.0 / stride, sampling_ratio=1)
    return out[:, 0]
