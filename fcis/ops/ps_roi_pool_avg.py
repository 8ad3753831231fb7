"""Position-sensitive RoI *average* pooling: the official FCIS's PSROIPooling, in PyTorch.

``ps_roi_assemble(..., mode="average")`` dispatches here. The formula of the official kernel
(msracver/FCIS ``fcis/operator_cxx/psroi_pooling.cu``), for RoI ``(b, x1, y1, x2, y2)`` in input
pixels, spatial scale ``s``, group size ``k`` and output ``Ph × Pw``:

- corners rounded to pixels (C ``round``, half away from zero), the end made inclusive:
  ``start_w = round(x1)·s``, ``end_w = (round(x2) + 1)·s`` (likewise for y);
- ``roi_w = max(end_w - start_w, 0.1)``, ``bin_w = roi_w / Pw``;
- bin ``(i, j)`` covers the integer cells ``h in [floor(i·bin_h + start_h), ceil((i+1)·bin_h + start_h))``
  and ``w in [floor(j·bin_w + start_w), ceil((j+1)·bin_w + start_w))``, clipped to the map;
- its value is the mean of channel ``(g·k + floor(i·k/Ph))·k + floor(j·k/Pw)`` over those cells,
  0 when the clipped bin is empty.

The sums come from a summed-area table (two ``cumsum``), accumulated in float64 (float32 where a
device has no float64), so one gather per bin corner replaces the loop over cells; gradients
flow to the input (not to the box coordinates, which only choose integer cells, as in the
original).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ps_roi_pool_avg", "summed_area_table"]


def _round_half_away(t: Tensor) -> Tensor:
    return torch.where(t >= 0, torch.floor(t + 0.5), torch.ceil(t - 0.5))


def _bin_edges(start: Tensor, end: Tensor, n_bins: int, size: int) -> tuple[Tensor, Tensor]:
    """Integer [lo, hi) cell ranges (K, n_bins) of the bins along one axis, clipped to [0, size]."""
    length = (end - start).clamp(min=0.1)
    bin_size = length / n_bins
    idx = torch.arange(n_bins, dtype=start.dtype, device=start.device)
    lo = torch.floor(idx[None] * bin_size[:, None] + start[:, None])
    hi = torch.ceil((idx[None] + 1) * bin_size[:, None] + start[:, None])
    return lo.clamp(0, size).long(), hi.clamp(0, size).long()


def _accumulator(input: Tensor) -> torch.dtype:
    return torch.float32 if input.device.type == "mps" else torch.float64


def summed_area_table(input: Tensor, group_size: int) -> Tensor:
    """(N, G·k·k, H, W) maps -> their summed-area table (N, k², H+1, W+1, G) in the accumulation
    dtype (float64; float32 on MPS): ``table[., ., y, x, .]`` = sum of rows < y, columns < x.
    Pass it to :func:`ps_roi_pool_avg` (``table=``) to pool several RoI chunks of the same maps."""
    k2 = int(group_size) ** 2
    n, c, h, w = input.shape
    table = F.pad(input.to(_accumulator(input)).cumsum(2).cumsum(3), (1, 0, 1, 0))
    return table.view(n, c // k2, k2, h + 1, w + 1).permute(0, 2, 3, 4, 1)


def ps_roi_pool_avg(input: Tensor, rois: Tensor, group_size: int, output_size: tuple[int, int],
                    spatial_scale: float, geometry_dtype: torch.dtype | None = None,
                    table: Tensor | None = None) -> Tensor:
    """Official PS-RoI average pooling.

    Args:
        input: (N, G·k·k, H, W) score maps, channels group-major, then row, then column.
        rois: (K, 5) batch index, x1, y1, x2, y2 in input-image pixels.
        group_size: k. output_size: (Ph, Pw). spatial_scale: 1 / feature stride.
        geometry_dtype: the dtype of the bin geometry (corners, bin sizes, floor/ceil arguments);
            default float64. ``torch.float32`` reproduces the float32 kernel (MXNet's
            ``PSROIPooling`` on float32 maps, whose ``floor(ph · bin + start)`` is rounded in
            float32; the official variant of FCIS uses it).
        table: ``summed_area_table(input, group_size)``, when already made.

    Returns:
        (K, G, Ph, Pw) in ``input``'s dtype (see the module docstring for the formula).
    """
    k = int(group_size)
    ph, pw = output_size
    n, c, h, w = input.shape
    g = c // (k * k)
    num = rois.shape[0]
    if num == 0 or h == 0 or w == 0:
        return input.new_zeros(num, g, ph, pw) + 0.0 * input.sum()
    acc = _accumulator(input)
    with torch.no_grad():
        r = rois.to(device=input.device, dtype=geometry_dtype or acc)
        x1, y1 = _round_half_away(r[:, 1]) * spatial_scale, _round_half_away(r[:, 2]) * spatial_scale
        x2, y2 = (_round_half_away(r[:, 3]) + 1) * spatial_scale, (_round_half_away(r[:, 4]) + 1) * spatial_scale
        hs, he = _bin_edges(y1, y2, ph, h)                                    # (K, Ph)
        ws, we = _bin_edges(x1, x2, pw, w)                                    # (K, Pw)
        rows = torch.arange(ph, device=input.device) * k // ph
        cols = torch.arange(pw, device=input.device) * k // pw
        pos = (rows[:, None] * k + cols[None, :])[None]                       # (1, Ph, Pw)
        area = ((he - hs)[:, :, None] * (we - ws)[:, None, :]).to(acc)       # (K, Ph, Pw)
        batch = rois[:, 0].to(device=input.device).long()[:, None, None]
        hs, he, ws, we = hs[:, :, None], he[:, :, None], ws[:, None, :], we[:, None, :]
    if table is None:
        table = summed_area_table(input, k)
    total = (table[batch, pos, he, we] - table[batch, pos, hs, we]
             - table[batch, pos, he, ws] + table[batch, pos, hs, ws])          # (K, Ph, Pw, G)
    mean = torch.where(area[..., None] > 0, total / area.clamp(min=1.0)[..., None], torch.zeros_like(total))
    return mean.permute(0, 3, 1, 2).to(input.dtype)
