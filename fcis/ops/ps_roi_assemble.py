"""Position-sensitive RoI assembling: FCIS's parameter-free per-RoI op.

A RoI is cut into a P×P grid. Output cell (i, j) of channel group g takes the RoIAlign value
(torchvision's ``roi_align`` with ``aligned=True``) of input channel
``g·k² + floor(i·k/P)·k + floor(j·k/P)`` at that cell, so each of the k×k position-sensitive
score maps feeds one (P/k)×(P/k) block of the output. With P == k this is torchvision's
``ps_roi_align``; FCIS uses k = 7 and P = 21, which ``ps_roi_align`` cannot express.

Two implementations in plain, vectorised PyTorch give the same values: for float32/float64 maps
of >= 8 groups in eager mode a weighted gather of channel vectors from a channels-last table with
a hand-written backward (:mod:`fcis.ops.ps_roi_gather`, several times faster); otherwise (tracing
and ONNX export, fp16/bf16, fewer groups) ``grid_sample`` with the coordinates computed exactly as torchvision's RoIAlign
kernel computes them, which runs on any device and dtype that ``grid_sample`` supports and exports
to ONNX without custom operators.
"""

from __future__ import annotations

import functools
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ps_roi_gather import assemble_by_gather, assemble_rows_in_chunks, roi_geometry, samples_per_bin
from .ps_roi_pool_avg import ps_roi_pool_avg

__all__ = ["ps_roi_assemble", "ps_roi_assemble_rows", "rows_to_maps", "rows_layout_applies", "PSRoIAssemble", "boxes_to_rois"]


def boxes_to_rois(boxes: Tensor | list[Tensor], like: Tensor | None = None) -> Tensor:
    """Return ``Tensor[K, 5]`` (batch index, x1, y1, x2, y2) from either that form or a list of
    ``Tensor[L, 4]`` per image, as torchvision's RoI ops accept."""
    if isinstance(boxes, (list, tuple)):
        for b in boxes:
            if b.dim() != 2 or b.shape[1] != 4:
                raise ValueError(f"each per-image box tensor must be [L, 4], got {tuple(b.shape)}")
        if len(boxes) == 0:
            dtype = like.dtype if like is not None else torch.float32
            device = like.device if like is not None else None
            return torch.zeros(0, 5, dtype=dtype, device=device)
        cat = torch.cat(list(boxes), dim=0)
        idx = torch.cat([torch.full((len(b), 1), i, dtype=cat.dtype, device=cat.device)
                         for i, b in enumerate(boxes)], dim=0)
        return torch.cat([idx, cat], dim=1)
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f"boxes must be Tensor[K, 5] or a list of Tensor[L, 4], got {tuple(boxes.shape)}")
    return boxes


def _known_zero(n: int | torch.SymInt) -> bool:
    """``n == 0``, but False for a size unknown while exporting (the RoI count after NMS), which
    then takes the general path (it handles zero RoIs too) instead of failing on a guard."""
    if isinstance(n, int):
        return n == 0
    from torch.fx.experimental.symbolic_shapes import guard_or_false

    return guard_or_false(n == 0)


def _gather_path_applies(input: Tensor, groups: int) -> bool:
    """The fast path (:mod:`fcis.ops.ps_roi_gather`) serves float32/float64 maps of at least 8
    groups in eager mode (measured on the CPU at k = 7, P = 21, 300 RoIs, forward + backward: the
    gather is 0.54× grid_sample's speed at 4 groups, 1.1× at 8, 1.95× at 16, 4.9-7.5× at FCIS's
    162); tracing/export (ONNX), fp16/bf16 (autocast) and fewer groups (InstanceFCN's single one,
    FCIS's box maps) take the ``grid_sample`` path."""
    return (groups >= 8 and input.dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export())


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


@functools.lru_cache(maxsize=None)
def _cell_table_lists(k: int, ph: int, pw: int) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Plain-Python form of :func:`_cell_tables` (cached; constants for tracing and export)."""
    members: list[list[int]] = [[] for _ in range(k * k)]
    for i in range(ph):
        for j in range(pw):
            members[(i * k // ph) * k + j * k // pw].append(i * pw + j)
    b = max(len(m) for m in members)
    inverse = [0] * (ph * pw)
    for group, cells in enumerate(members):
        for slot, cell in enumerate(cells):
            inverse[cell] = group * b + slot
    table = tuple(tuple(m + [0] * (b - len(m))) for m in members)
    return table, tuple(inverse)


def _cell_tables(k: int, ph: int, pw: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Group the P×P output cells by position group p = row_group·k + col_group.

    Returns ``table`` (k², B) of flat cell indices (groups smaller than B are padded with cell 0,
    computed and then never read) and ``inverse`` (ph·pw,): each cell's slot in the flattened
    (k², B) table."""
    table, inverse = _cell_table_lists(k, ph, pw)
    return (torch.tensor(table, dtype=torch.long, device=device),
            torch.tensor(inverse, dtype=torch.long, device=device))


def _sample_coords(start: Tensor, bin_size: Tensor, n_bins: int, grid: int, size: int) -> tuple[Tensor, Tensor]:
    """Sampling coordinates along one axis, as torchvision's RoIAlign kernel computes them.

    ``start``/``bin_size``: (M,). Returns the clamped pixel coordinate (M, n_bins, grid) and a
    mask of samples that lie inside the map's [-1, size] band (others contribute zero)."""
    bins = torch.arange(n_bins, dtype=start.dtype, device=start.device)
    sub = torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5
    c = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]
         + sub[None, None, :] * bin_size[:, None, None] / grid)
    inside = (c >= -1.0) & (c <= size)
    return c.clamp(min=0.0, max=size - 1.0), inside  # a float bound (exports with a symbolic size)


def _to_grid_coord(c: Tensor, size: int) -> Tensor:
    # grid_sample with align_corners=False maps normalised u to pixel ((u + 1) * size - 1) / 2.
    return (2.0 * c + 1.0) / size - 1.0


def ps_roi_assemble(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    group_size: int,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    mode: str = "bilinear",
) -> Tensor:
    """Assemble position-sensitive score maps per RoI.

    Args:
        input: (N, G·k·k, H, W) score maps, channels group-major, then row, then column of the
            k×k grid of relative positions.
        boxes: Tensor[K, 5] (batch index, x1, y1, x2, y2) in image coordinates, or a list of
            Tensor[L, 4] per image.
        group_size: k, the side of the grid of relative positions.
        output_size: P (or (Ph, Pw)), the side of the output grid.
        spatial_scale: factor mapping box coordinates to ``input`` coordinates (1/stride).
        sampling_ratio: samples per cell and axis; <= 0 means ceil(roi_size / P) as RoIAlign.
        mode: "bilinear" (this docstring) or "average": the official PS-RoI pooling, the mean over
            the integer cells of each bin (:mod:`fcis.ops.ps_roi_pool_avg`; ignores sampling_ratio).

    Returns:
        (K, G, Ph, Pw): cell (i, j) of group g is RoIAlign (aligned=True) of channel
        g·k² + floor(i·k/Ph)·k + floor(j·k/Pw).
    """
    k = int(group_size)
    ph, pw = _pair(output_size)
    if input.dim() != 4:
        raise ValueError(f"input must be (N, C, H, W), got {tuple(input.shape)}")
    n, c, h, w = input.shape
    if k < 1 or c % (k * k) != 0:
        raise ValueError(f"input channels ({c}) must be a multiple of group_size² ({k}² = {k * k})")
    if ph < k or pw < k:
        raise ValueError(f"output_size {(ph, pw)} must be at least group_size {k}")
    g = c // (k * k)
    if mode != "bilinear":
        if mode != "average":
            raise ValueError(f"mode must be 'bilinear' or 'average', got {mode!r}")
        return ps_roi_pool_avg(input, boxes_to_rois(boxes, input), k, (ph, pw), spatial_scale)
    rois = coordinate_rois(boxes, input)
    num = rois.shape[0]
    if _known_zero(num) or h == 0 or w == 0:
        return input.new_zeros(num, g, ph, pw) + 0.0 * input.sum()
    if _gather_path_applies(input, g):
        return assemble_by_gather(input, rois, k, ph, pw, spatial_scale, sampling_ratio)

    with torch.no_grad():
        x1, y1, roi_w, roi_h = roi_geometry(rois, spatial_scale)
        bin_w, bin_h = roi_w / pw, roi_h / ph
        table, inverse = _cell_tables(k, ph, pw, input.device)
    # (N, G, k², H, W) -> per image (k², G, H, W): position groups become grid_sample's batch.
    maps = input.view(n, g, k * k, h, w).transpose(1, 2)
    if n == 1 and sampling_ratio > 0:
        # One image and a fixed number of samples: a single bucket of every RoI, in order, with
        # no data-dependent bucketing (the path that ONNX export traces; the batch index is 0).
        values = _assemble_rois(maps[0], x1, y1, bin_w, bin_h, sampling_ratio, sampling_ratio,
                                table, inverse, k, ph, pw)
        return values.view(num, g, ph, pw)

    with torch.no_grad():
        grid_h, grid_w = samples_per_bin(roi_h, roi_w, ph, pw, sampling_ratio)
        batch = rois[:, 0].long()
        # One bucket per (image, grid_h, grid_w): every RoI in it has the same number of samples.
        key = torch.stack([batch, grid_h.clamp(min=0), grid_w.clamp(min=0)], dim=1)
        buckets, bucket_of = torch.unique(key, dim=0, return_inverse=True)

    pieces, piece_index = [], []
    for bucket_id, (b_img, gh, gw) in enumerate(buckets.tolist()):
        idx = torch.nonzero(bucket_of == bucket_id).flatten()
        m = idx.numel()
        if gh <= 0 or gw <= 0:
            pieces.append(input.new_zeros(m, g, ph * pw))
            piece_index.append(idx)
            continue
        pieces.append(_assemble_rois(maps[b_img], x1[idx], y1[idx], bin_w[idx], bin_h[idx], gh, gw,
                                     table, inverse, k, ph, pw))
        piece_index.append(idx)
    if len(pieces) == 1:                                                  # one bucket: all RoIs, in order
        return pieces[0].view(num, g, ph, pw)
    values = torch.cat(pieces, dim=0)
    order = torch.cat(piece_index, dim=0)
    out = values.new_zeros(num, g, ph * pw).index_copy(0, order, values)
    return out.view(num, g, ph, pw)


def rows_layout_applies(input: Tensor, groups: int) -> bool:
    """Whether :func:`ps_roi_assemble_rows` reads (N, H, W, k², ``groups``) rows of ``input``'s
    dtype as they are (its fast gather path applies), so that a producer may write the maps in
    that layout instead of (N, G·k², H, W)."""
    return _gather_path_applies(input, groups)


def rows_to_maps(rows: Tensor) -> Tensor:
    """(N, H, W, k², G) rows -> the (N, G·k², H, W) maps of :func:`ps_roi_assemble` (a copy)."""
    n, h, w, k2, g = rows.shape
    return rows.permute(0, 4, 3, 1, 2).reshape(n, g * k2, h, w)


def coordinate_rois(boxes: Tensor | list[Tensor], like: Tensor) -> Tensor:
    """(K, 5) RoIs of ``boxes`` on ``like``'s device in at least float32: under bf16/fp16 autocast,
    RoIs rounded to the maps' dtype would move by pixels (only the normalised sampling grid takes
    the maps' dtype)."""
    return boxes_to_rois(boxes, like).to(dtype=torch.promote_types(like.dtype, torch.float32), device=like.device)


def _check_rows(rows: Tensor, group_size: int, output_size: int | tuple[int, int]) -> tuple[int, int, int]:
    """k, Ph, Pw of a call on (N, H, W, k², G) ``rows``; ValueError for a wrong shape or size."""
    k = int(group_size)
    ph, pw = _pair(output_size)
    if rows.dim() != 5 or rows.shape[3] != k * k:
        raise ValueError(f"rows must be (N, H, W, k², G) with k² = {k * k}, got {tuple(rows.shape)}")
    if ph < k or pw < k:
        raise ValueError(f"output_size {(ph, pw)} must be at least group_size {k}")
    return k, ph, pw


def ps_roi_assemble_rows(
    rows: Tensor,
    boxes: Tensor | list[Tensor],
    group_size: int,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
) -> Tensor:
    """:func:`ps_roi_assemble` (mode "bilinear") of maps given as the fast path's table of rows:
    ``rows`` (N, H, W, k², G) with ``rows[b, y, x, p, g] == maps[b, g·k² + p, y, x]``. The gather
    reads this layout as it is, so neither the maps nor their gradient are copied (a 1×1
    convolution written as a matmul produces it directly: ``FCISHead``). Same values and gradients
    as ``ps_roi_assemble(rows_to_maps(rows), ...)``, which is what runs where the fast path does
    not apply (fp16/bf16, tracing/export, < 8 groups). Returns (K, G, Ph, Pw)."""
    k, ph, pw = _check_rows(rows, group_size, output_size)
    n, h, w, _, g = rows.shape
    if not _gather_path_applies(rows, g):
        return ps_roi_assemble(rows_to_maps(rows), boxes, k, (ph, pw), spatial_scale, sampling_ratio)
    rois = coordinate_rois(boxes, rows)
    if rois.shape[0] == 0 or h == 0 or w == 0:
        return rows.new_zeros(rois.shape[0], g, ph, pw) + 0.0 * rows.sum()
    return assemble_by_gather(rows.contiguous(), rois, k, ph, pw, spatial_scale, sampling_ratio)


def ps_roi_assemble_rows_chunks(
    rows: Tensor,
    boxes: Tensor | list[Tensor],
    group_size: int,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    chunk: int = 16,
) -> Iterator[tuple[int, Tensor]]:
    """:func:`ps_roi_assemble_rows` ``chunk`` RoIs at a time, for inference (detached: no autograd): yields
    ``(start, values)`` with ``values`` (m, G, Ph, Pw), the same values as
    ``ps_roi_assemble_rows(rows, boxes, ...)[start:start + m]``. A consumer that reduces each chunk
    at once keeps the (K, G, Ph, Pw) result from ever existing whole."""
    k, ph, pw = _check_rows(rows, group_size, output_size)
    n, h, w, _, g = rows.shape
    rows = rows.detach()
    rois = coordinate_rois(boxes, rows)
    if not _gather_path_applies(rows, g) or h == 0 or w == 0:
        for start in range(0, rois.shape[0], chunk):
            yield start, ps_roi_assemble_rows(rows, rois[start:start + chunk], k, (ph, pw), spatial_scale,
                                              sampling_ratio)
        return
    yield from assemble_rows_in_chunks(rows.contiguous(), rois.detach(), k, ph, pw, spatial_scale, sampling_ratio,
                                       chunk)


def _assemble_rois(maps: Tensor, x1: Tensor, y1: Tensor, bin_w: Tensor, bin_h: Tensor, gh: int, gw: int,
                   table: Tensor, inverse: Tensor, k: int, ph: int, pw: int) -> Tensor:
    """RoIs of one image, all with gh×gw samples per cell: ``maps`` (k², G, H, W) and per-RoI
    ``x1``, ``y1``, ``bin_w``, ``bin_h`` (m,) in map pixels -> (m, G, ph·pw)."""
    _, g, h, w = maps.shape
    m = x1.shape[0]
    with torch.no_grad():
        ys, y_in = _sample_coords(y1, bin_h, ph, gh, h)   # (m, ph, gh)
        xs, x_in = _sample_coords(x1, bin_w, pw, gw, w)   # (m, pw, gw)
        far = torch.tensor(-10.0, dtype=x1.dtype, device=maps.device)
        # Full per-cell sample grid (m, ph, pw, gh, gw); samples outside the band read zero.
        inside = y_in[:, :, None, :, None] & x_in[:, None, :, None, :]
        gy = _to_grid_coord(ys, h)[:, :, None, :, None].expand(m, ph, pw, gh, gw)
        gx = _to_grid_coord(xs, w)[:, None, :, None, :].expand(m, ph, pw, gh, gw)
        grid = torch.stack([torch.where(inside, gx, far), torch.where(inside, gy, far)], dim=-1)
        # Reorder cells by position group: (m, ph*pw, S, 2) -> (k², m * B * S, 1, 2).
        grid = grid.reshape(m, ph * pw, gh * gw, 2)[:, table]         # (m, k², B, S, 2)
        grid = grid.permute(1, 0, 2, 3, 4).reshape(k * k, -1, 1, 2).to(maps.dtype)
    sampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)                      # (k², G, m*B*S, 1)
    cells = sampled.view(k * k, g, m, table.shape[1], gh * gw).sum(dim=-1)
    if gh * gw > 1:
        cells = cells * (1.0 / (gh * gw))                             # (k², G, m, B)
    return _cells_to_grid(cells, k, ph, pw, inverse)


def _cells_to_grid(cells: Tensor, k: int, ph: int, pw: int, inverse: Tensor) -> Tensor:
    """(k², G, m, B) values grouped by position -> (m, G, ph·pw) in row-major cell order."""
    _, g, m, _ = cells.shape
    if ph % k == 0 and pw % k == 0:      # equal blocks: a pure permutation of axes
        bh, bw = ph // k, pw // k
        return cells.view(k, k, g, m, bh, bw).permute(3, 2, 0, 4, 1, 5).reshape(m, g, ph * pw)
    return cells.permute(2, 1, 0, 3).reshape(m, g, -1).index_select(2, inverse)


class PSRoIAssemble(nn.Module):
    """Module form of :func:`ps_roi_assemble`; holds k, P, spatial scale and sampling ratio."""

    def __init__(self, group_size: int, output_size: int | tuple[int, int],
                 spatial_scale: float = 1.0, sampling_ratio: int = -1, mode: str = "bilinear") -> None:
        super().__init__()
        self.mode = mode
        self.group_size = group_size
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio

    def forward(self, input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        return ps_roi_assemble(input, boxes, self.group_size, self.output_size,
                               self.spatial_scale, self.sampling_ratio, self.mode)

    def extra_repr(self) -> str:
        return (f"group_size={self.group_size}, output_size={self.output_size}, "
                f"spatial_scale={self.spatial_scale}, sampling_ratio={self.sampling_ratio}, mode={self.mode!r}")
