"""FCIS head: shared position-sensitive score maps and their per-RoI assembling (no RoI parameters)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...ops import (
    ps_roi_assemble,
    ps_roi_assemble_rows,
    ps_roi_assemble_rows_chunks,
    rows_layout_applies,
    rows_to_maps,
)
from ...ops.ps_roi_assemble import coordinate_rois
from ...ops.ps_roi_gather import gather_in_chunks, gather_plan, scatter_to_table
from ..derived_cache import DerivedCache
from ..norm import head_norm, init_normalised_conv
from .config import FCISConfig

__all__ = ["FCISHead", "ScoreMaps", "RoIScores", "DetectionScores", "MaskProbs"]

#: RoIs assembled at a time at inference (``FCISHead.score_rois_for_detection``): the chunk's
#: (16, 2(C+1), P, P) logits (4.6 MB at 81 classes, P = 21) are reduced while in the cache.
_DETECT_CHUNK = 16


class ScoreMaps:
    """Score maps of a batch at the feature stride.

    inside_outside: (N, 2·k²·(C+1), H, W), groups ordered (class, inside/outside), then k×k positions.
    boxes: (N, 4·k², H, W), class-agnostic box deltas per position.
    detection: (N, k²·(C+1), H, W) only with ``score_maps="separate"``; else None.
    inside_outside_rows: the inside/outside maps laid out as the assembling op's table of rows,
        (N, H, W, k², 2·(C+1)), the last axis ordered (inside/outside, class):
        ``rows[b, y, x, p, s·(C+1) + c] == inside_outside[b, (2c + s)·k² + p, y, x]``; or None.
        Where the head produces this layout (eager float32/float64, see ``FCISHead.forward``)
        the (N, 2·k²·(C+1), H, W) tensor is only made (a copy) when read.
    """

    def __init__(self, inside_outside: Tensor | None, boxes: Tensor, detection: Tensor | None,
                 inside_outside_rows: Tensor | None = None) -> None:
        if inside_outside is None and inside_outside_rows is None:
            raise ValueError("ScoreMaps needs inside_outside or inside_outside_rows")
        self._inside_outside = inside_outside
        self.boxes = boxes
        self.detection = detection
        self.inside_outside_rows = inside_outside_rows

    def release_inside_outside(self) -> None:
        """Drop the inside/outside maps (after their last use in a training step: their memory is
        then free for the rest of the step); reading them afterwards is an error."""
        self._inside_outside = self.inside_outside_rows = None

    @property
    def inside_outside(self) -> Tensor:
        if self._inside_outside is None:
            if self.inside_outside_rows is None:
                raise RuntimeError("the inside/outside score maps were released (release_inside_outside)")
            rows = self.inside_outside_rows
            n, h, w, k2, g = rows.shape
            by_class = rows.view(n, h, w, k2, 2, g // 2).transpose(4, 5).reshape(n, h, w, k2, g)
            self._inside_outside = rows_to_maps(by_class)
        return self._inside_outside


@dataclass
class RoIScores:
    """Per-RoI outputs. class_logits (R, C+1); mask_logits (R, C+1, 2, P, P) with [:, :, 0] the
    inside and [:, :, 1] the outside score; box_deltas (R, 4). Where ``FCISHead.score_rois`` was
    given the labels (training's gradient pass) it keeps only their classes' mask logits,
    ``label_mask_logits`` (R, 2, P, P), and ``mask_logits`` may be None."""

    class_logits: Tensor
    mask_logits: Tensor | None
    box_deltas: Tensor
    #: (R, 2, P, P) mask logits of the ``labels`` given to ``FCISHead.score_rois``, or None.
    label_mask_logits: Tensor | None = None

    def all_mask_logits(self) -> Tensor:
        """``mask_logits``; an error where only the labels' were kept."""
        if self.mask_logits is None:
            raise RuntimeError("these RoIScores keep only the labels' mask logits (score_rois(..., labels=...))")
        return self.mask_logits

    def select(self, index: Tensor) -> "RoIScores":
        return RoIScores(self.class_logits[index], self.all_mask_logits()[index], self.box_deltas[index])

    @staticmethod
    def cat(parts: list["RoIScores"]) -> "RoIScores":
        return RoIScores(torch.cat([p.class_logits for p in parts]), torch.cat([p.all_mask_logits() for p in parts]),
                         torch.cat([p.box_deltas for p in parts]))

    def mask_probs(self) -> Tensor:
        """(R, C+1, P, P): per-pixel softmax over (inside, outside), probability of inside."""
        logits = self.all_mask_logits()
        return torch.sigmoid(logits[:, :, 0] - logits[:, :, 1])

    def lazy_mask_probs(self) -> "MaskProbs":
        """The same probabilities, computed only for the (RoI, class) pairs that are read."""
        return MaskProbs(self.all_mask_logits())


@dataclass
class DetectionScores:
    """Per-RoI outputs at inference (``FCISHead.score_rois_for_detection``): class_logits (R, C+1);
    mask_diff (R, C+1, P, P), the inside minus the outside logit (the mask probability is its
    sigmoid: the per-pixel softmax over (inside, outside)); box_deltas (R, 4)."""

    class_logits: Tensor
    mask_diff: Tensor
    box_deltas: Tensor

    def mask_probs(self) -> Tensor:
        """(R, C+1, P, P) probability of inside, as ``RoIScores.mask_probs()``."""
        return torch.sigmoid(self.mask_diff)

    def lazy_mask_probs(self) -> "MaskProbs":
        """The same probabilities, computed only for the (RoI, class) pairs that are read."""
        return MaskProbs(self.mask_diff, diff=True)


class MaskProbs:
    """Mask probabilities of chosen (RoI, class) pairs, computed on demand from mask logits
    (R, C+1, 2, P, P), or with ``diff`` from their inside - outside differences (R, C+1, P, P):
    ``probs[rows, classes]`` -> (K, P, P) = sigmoid(inside - outside), as
    ``RoIScores.mask_probs()[rows, classes]`` without computing the other R·(C+1)·P² values.
    ``select(rows)`` gives the probabilities of a subset of the RoIs without copying."""

    def __init__(self, mask_logits: Tensor, rows: Tensor | None = None, diff: bool = False) -> None:
        self.mask_logits = mask_logits
        self.rows = rows
        self.diff = diff

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.mask_logits)

    def select(self, rows: Tensor) -> "MaskProbs":
        return MaskProbs(self.mask_logits, rows if self.rows is None else self.rows[rows], self.diff)

    def __getitem__(self, index: tuple[Tensor, Tensor | int]) -> Tensor:
        rows, classes = index
        if self.rows is not None:
            rows = self.rows[rows]
        if self.diff:
            return torch.sigmoid(self.mask_logits[rows, classes])              # (K, P, P)
        io = self.mask_logits[rows, classes]                                 # (K, 2, P, P)
        return torch.sigmoid(io[:, 0] - io[:, 1])


class FCISHead(nn.Module):
    """conv5 -> 1×1 conv (1024) + ReLU -> inside/outside maps and box maps; assembles RoIs.

    Joint formulation (paper §3): per pixel and class, the mask probability is
    softmax(inside, outside) and the detection score max(inside, outside); the detection
    scores are averaged over the P×P RoI into C+1 logits.

    With ``cfg.norm == "gn"`` the 1×1 conv has no bias, He-normal weights
    (:func:`~fcis.models.norm.init_normalised_conv`) and is followed by GroupNorm (``reduce_norm``)
    before the ReLU (:mod:`fcis.models.norm`); the score-map convs stay plain.
    """

    def __init__(self, cfg: FCISConfig, in_channels: int, feature_stride: int) -> None:
        super().__init__()
        k2, classes = cfg.group_size ** 2, cfg.num_classes + 1
        self.cfg = cfg
        self.spatial_scale = 1.0 / feature_stride
        norm = head_norm(cfg.norm)
        self.reduce = nn.Conv2d(in_channels, cfg.head_channels, 1, bias=norm is None)
        self.reduce_norm = norm(cfg.head_channels) if norm is not None else None
        self.inside_outside = nn.Conv2d(cfg.head_channels, 2 * k2 * classes, 1)
        self.boxes = nn.Conv2d(cfg.head_channels, 4 * k2, 1)
        self.detection = (nn.Conv2d(cfg.head_channels, k2 * classes, 1)
                          if cfg.score_maps == "separate" else None)
        self._reordered = DerivedCache()      # the table matmul's reordered weight, at inference
        for layer in (self.reduce, self.inside_outside, self.boxes, self.detection):
            if layer is not None:
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        if self.reduce_norm is not None:
            init_normalised_conv(self.reduce)

    def forward(self, c5: Tensor) -> ScoreMaps:
        x = self.reduce(c5)
        if self.reduce_norm is not None:
            x = self.reduce_norm(x)
        x = x.relu_()
        det = self.detection(x) if self.detection is not None else None
        if self._rows_layout(x):
            return ScoreMaps(None, self.boxes(x), det, self._inside_outside_rows(x))
        return ScoreMaps(self.inside_outside(x), self.boxes(x), det)

    def _rows_layout(self, x: Tensor) -> bool:
        """Whether the inside/outside maps are produced as the assembling op's table of rows:
        where the op's fast gather serves them (eager float32/float64), outside autocast, in
        bilinear mode."""
        groups = self.inside_outside.out_channels // self.cfg.group_size ** 2
        return (self.cfg.assemble_mode == "bilinear" and not torch.is_autocast_enabled(x.device.type)
                and rows_layout_applies(x, groups))

    def _inside_outside_rows(self, x: Tensor) -> Tensor:
        """``self.inside_outside(x)`` (a 1×1 convolution) as a matmul whose output is already the
        assembling op's (N, H, W, k², 2·(C+1)) table, groups ordered (inside/outside, class) (see
        ``ScoreMaps``; :class:`_RowsLinear`)."""
        n, cin, h, w = x.shape
        k2 = self.cfg.group_size ** 2
        classes = self.cfg.num_classes + 1
        bias = self.inside_outside.bias
        assert bias is not None
        if torch.is_grad_enabled():
            rows = _RowsLinear.apply(x, self.inside_outside.weight, bias, classes, k2)
        else:             # inference: the reordered weight is kept between calls (remade when it changes)
            weight = self.inside_outside.weight
            reordered = self._reordered.get((classes, k2), (weight, bias),
                                            lambda: _RowsLinear.reordered(weight.detach(), bias.detach(), classes, k2))
            rows = _RowsLinear.matmul(x, *reordered)
        return rows.view(n, h, w, k2, 2 * classes)

    def box_deltas(self, maps: ScoreMaps, rois: Tensor) -> Tensor:
        """(R, 4) class-agnostic box deltas of ``rois`` alone (as ``score_rois(...).box_deltas``)."""
        k = self.cfg.group_size
        return ps_roi_assemble(maps.boxes, rois, k, k, self.spatial_scale, self.cfg.sampling_ratio,
                               mode=self.cfg.assemble_mode).mean(dim=(2, 3))

    def score_rois(self, maps: ScoreMaps, rois: Tensor, release_maps: bool = False,
                   labels: Tensor | None = None) -> RoIScores:
        """Assemble RoIs (Tensor[R, 5]: batch index, x1, y1, x2, y2 in input pixels).
        ``release_maps``: this is the inside/outside maps' last use (training's gradient pass):
        they are released once assembled (``ScoreMaps.release_inside_outside``).
        ``labels`` (R,): the classes whose mask logits the loss reads (training's gradient pass);
        they are then picked with the class scores (``RoIScores.label_mask_logits``)."""
        cfg, k, p = self.cfg, self.cfg.group_size, self.cfg.mask_size
        num, classes = rois.shape[0], cfg.num_classes + 1
        rows = maps.inside_outside_rows
        rows_layout = rows is not None                        # (read before the maps are released)
        if rows is not None and labels is not None and maps.detection is None and num and torch.is_grad_enabled():
            # Training's gradient pass: assembled and reduced 16 RoIs at a time (_AssembleAndPick),
            # so the (R, 2(C+1), P, P) logits are never stored.
            class_logits, label_logits = _AssembleAndPick.apply(rows, coordinate_rois(rois, rows), labels, k, p,
                                                                self.spatial_scale, cfg.sampling_ratio)
            if release_maps:
                maps.release_inside_outside()
            return RoIScores(class_logits, None, self.box_deltas(maps, rois), label_logits)
        if rows is not None:
            # groups ordered (inside/outside, class): the inside and outside scores of a cell are
            # two contiguous runs of C+1 values.
            assembled = ps_roi_assemble_rows(rows, rois, k, p, self.spatial_scale, cfg.sampling_ratio)
            mask_logits = assembled.view(num, 2, classes, p, p).transpose(1, 2)
            if release_maps:
                maps.release_inside_outside()
        else:
            assembled = ps_roi_assemble(maps.inside_outside, rois, k, p, self.spatial_scale, cfg.sampling_ratio,
                                        mode=cfg.assemble_mode)
            mask_logits = assembled.view(num, classes, 2, p, p)
        if maps.detection is None and rows_layout:
            class_logits = _MeanOfMax.apply(mask_logits)
        elif maps.detection is None:
            # max(inside, outside) as an elementwise maximum: the same values and gradients as
            # amax(dim=2), which was as slow as the assembling itself on the op's channels-last output.
            class_logits = torch.maximum(mask_logits[:, :, 0], mask_logits[:, :, 1]).mean(dim=(2, 3))
        else:
            det = ps_roi_assemble(maps.detection, rois, k, k, self.spatial_scale, cfg.sampling_ratio,
                                  mode=cfg.assemble_mode)
            class_logits = det.mean(dim=(2, 3))
        # The box maps are assembled on the k×k grid and averaged (the original's PS-RoI pooling).
        return RoIScores(class_logits, mask_logits, self.box_deltas(maps, rois))


    def score_rois_for_detection(self, maps: ScoreMaps, rois: Tensor) -> DetectionScores:
        """Inference's scoring of ``rois`` (Tensor[R, 5]): ``score_rois``' class logits and box
        deltas, and its mask logits as inside - outside differences. Where the maps are the
        gather's table and autograd is off, the RoIs are assembled ``_DETECT_CHUNK`` at a time and
        each chunk reduced at once (class scores: the mean of max over cells; mask: the
        difference), so the (R, 2(C+1), P, P) logits are never stored; the same values."""
        cfg, k, p = self.cfg, self.cfg.group_size, self.cfg.mask_size
        rows = maps.inside_outside_rows
        if rows is None or maps.detection is not None or torch.is_grad_enabled():
            scores = self.score_rois(maps, rois)
            logits = scores.all_mask_logits()
            return DetectionScores(scores.class_logits, logits[:, :, 0] - logits[:, :, 1], scores.box_deltas)
        num, classes = rois.shape[0], cfg.num_classes + 1
        class_logits = rows.new_empty(num, classes)
        # (R, C+1, P, P) laid out as the assembled chunks are (class innermost): a plain
        # elementwise subtraction, not a transposing one (measured ~3× faster).
        mask_diff = rows.new_empty(num, p, p, classes).permute(0, 3, 1, 2)
        for start, part in ps_roi_assemble_rows_chunks(rows, rois, k, p, self.spatial_scale, cfg.sampling_ratio,
                                                       chunk=_DETECT_CHUNK):
            io = part.view(part.shape[0], 2, classes, p, p)        # groups ordered (inside/outside, class)
            stop = start + part.shape[0]
            torch.sub(io[:, 0], io[:, 1], out=mask_diff[start:stop])
            class_logits[start:stop] = torch.maximum(io[:, 0], io[:, 1]).mean(dim=(2, 3))
        return DetectionScores(class_logits, mask_diff, self.box_deltas(maps, rois))


class _RowsLinear(torch.autograd.Function):
    """The inside/outside 1×1 convolution, (N, Cin, H, W) ``x`` -> (N, H·W, k²·2·(C+1)) rows in
    the order (pixel, position, inside/outside, class), as one matmul per image over a transposed
    view of ``x`` with the weight's rows reordered from (class, inside/outside, position). Saves
    ``x`` and the parameters themselves (no reordered copy of the weight or of ``x``: the weight
    is reordered again in the backward), and takes the rows' gradient as it is."""

    @staticmethod
    def reordered(weight: Tensor, bias: Tensor, classes: int, k2: int) -> tuple[Tensor, Tensor]:
        cin = weight.shape[1]
        return (weight.view(classes, 2, k2, cin).permute(2, 1, 0, 3).reshape(-1, cin),
                bias.view(classes, 2, k2).permute(2, 1, 0).reshape(-1))

    @staticmethod
    def matmul(x: Tensor, wr: Tensor, br: Tensor) -> Tensor:
        """(N, Cin, H, W) ``x`` and reordered (K, Cin) ``wr``, (K,) ``br`` -> (N, H·W, K) rows."""
        n, cin, h, w = x.shape
        rows = x.new_empty(n, h * w, wr.shape[0])
        for b in range(n):
            torch.addmm(br, x[b].reshape(cin, h * w).t(), wr.t(), out=rows[b])
        return rows

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, classes: int, k2: int) -> Tensor:
        rows = _RowsLinear.matmul(x, *_RowsLinear.reordered(weight, bias, classes, k2))
        ctx.save_for_backward(x, weight, bias)
        ctx.sizes = (classes, k2)
        return rows

    @staticmethod
    def backward(ctx, grad_rows: Tensor):
        x, weight, bias = ctx.saved_tensors
        classes, k2 = ctx.sizes
        n, cin, h, w = x.shape
        wr, _ = _RowsLinear.reordered(weight, bias, classes, k2)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = x.new_empty(x.shape)
            for b in range(n):                    # (Cin, H·W) = Wr^T · grad_rows[b]^T
                torch.mm(wr.t(), grad_rows[b].t(), out=grad_x[b].view(cin, h * w))
        if ctx.needs_input_grad[1]:
            grad_wr = sum(grad_rows[b].t() @ x[b].reshape(cin, h * w).t() for b in range(n))  # (k²·2(C+1), Cin)
            grad_w = grad_wr.view(k2, 2, classes, cin).permute(2, 1, 0, 3).reshape(weight.shape)
        if ctx.needs_input_grad[2]:
            grad_b = grad_rows.sum(dim=(0, 1)).view(k2, 2, classes).permute(2, 1, 0).reshape(bias.shape)
        return grad_x, grad_w, grad_b, None, None


class _AssembleAndPick(torch.autograd.Function):
    """Training's gradient pass from the gather's table: (N, H, W, k², 2(C+1)) ``rows``, (R, 5)
    ``rois`` and (R,) ``labels`` -> (the (R, C+1) class logits, the labels' (R, 2, P, P) mask
    logits), the values and gradients of ``ps_roi_assemble_rows`` followed by
    :class:`_MeanOfMax` and the labels' logits. The RoIs are gathered ``chunk`` at a time and each chunk reduced
    at once, so the (R, 2(C+1), P, P) logits are never stored (peak training memory); saved for
    the backward: the gather's pairs, one byte per cell (which side won) and the labels. The
    backward writes the logits' gradient once and scatters it into the table (the gather's own
    transposed gather)."""

    @staticmethod
    def forward(ctx, rows: Tensor, rois: Tensor, labels: Tensor, k: int, p: int, spatial_scale: float,
                sampling_ratio: int, chunk: int = 16) -> tuple[Tensor, Tensor]:
        n, h, w, k2, g = rows.shape
        classes = g // 2
        num = rois.shape[0]
        indices, offsets, weights, counts = gather_plan(rois, n, h, w, k, p, p, spatial_scale, sampling_ratio,
                                                        rows.dtype)
        class_logits = rows.new_empty(num, classes)
        picked = rows.new_empty(num, 2, p, p)
        won = torch.empty(num, p, p, classes, dtype=torch.uint8, device=rows.device)
        for start, stop, part in gather_in_chunks(rows.reshape(-1, g), indices, offsets, weights, num, p * p, chunk):
            io = part.view(stop - start, p, p, 2, classes)
            inside, outside = io[..., 0, :], io[..., 1, :]
            class_logits[start:stop] = torch.maximum(inside, outside).mean(dim=(1, 2))
            won[start:stop] = _winners(inside, outside)
            picked[start:stop] = io[torch.arange(stop - start, device=rows.device), :, :, :,
                                    labels[start:stop]].permute(0, 3, 1, 2)
        ctx.save_for_backward(indices, weights, counts, won, labels)
        ctx.table_shape = rows.shape
        return class_logits, picked

    @staticmethod
    def backward(ctx, grad_cls: Tensor | None, grad_picked: Tensor | None):
        indices, weights, counts, won, labels = ctx.saved_tensors
        n, h, w, k2, g = ctx.table_shape
        num, p, _, classes = won.shape
        dtype = grad_cls.dtype if grad_cls is not None else grad_picked.dtype     # type: ignore[union-attr]
        grad = torch.empty(num, p, p, 2, classes, dtype=dtype, device=won.device)  # the gather's layout
        if grad_cls is None:
            grad.zero_()
        else:                                             # _MeanOfMax's backward (ties: half each way)
            _split_by_winner((grad_cls / (p * p))[:, None, None, :], won, grad[..., 0, :], grad[..., 1, :])
        if grad_picked is not None:
            rows = torch.arange(num, device=labels.device)
            grad.permute(0, 4, 3, 1, 2).index_put_((rows, labels), grad_picked, accumulate=True)
        grad_table = scatter_to_table(grad.view(num * p * p, g), indices, weights, counts, n * h * w * k2)
        return grad_table.view(n, h, w, k2, g), None, None, None, None, None, None, None


class _MeanOfMax(torch.autograd.Function):
    """(R, C+1, 2, P, P) mask logits -> (R, C+1): the mean over the P×P cells of max(inside,
    outside), with ``torch.maximum(...).mean(...)``'s values and gradients (a tie sends half the
    gradient each way). On the CPU it runs ``chunk`` RoIs at a time so that the elementwise
    maximum stays in the cache (measured 2-3× faster at R = 300, C+1 = 81, P = 21). For the
    backward it saves one byte per cell (which side won), not the logits, and writes the
    gradient in the logits' own layout (no zero-filled gradient per side)."""

    @staticmethod
    def forward(ctx, logits: Tensor, chunk: int = 16) -> Tensor:
        inside, outside = logits[:, :, 0], logits[:, :, 1]
        num = logits.shape[0]
        if num <= chunk or logits.device.type != "cpu":
            out = torch.maximum(inside, outside).mean(dim=(2, 3))
        else:
            out = torch.cat([torch.maximum(inside[s:s + chunk], outside[s:s + chunk]).mean(dim=(2, 3))
                             for s in range(0, num, chunk)])
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(_winners(inside, outside))
            ctx.geometry = (logits.shape, logits.stride())
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (won,) = ctx.saved_tensors
        shape, stride = ctx.geometry
        grad = torch.empty_strided(shape, stride, dtype=grad_out.dtype, device=grad_out.device)
        cell = (grad_out / (shape[3] * shape[4]))[:, :, None, None]              # the mean's backward
        _split_by_winner(cell, won, grad[:, :, 0], grad[:, :, 1])
        return grad, None


def _winners(inside: Tensor, outside: Tensor) -> Tensor:
    """One byte per cell for max(inside, outside)'s backward: 2 inside won, 1 tie, 0 outside."""
    return (inside > outside).to(torch.uint8).mul_(2).add_(inside == outside)


def _split_by_winner(cell: Tensor, won: Tensor, inside_grad: Tensor, outside_grad: Tensor) -> None:
    """max's backward: ``cell`` to the side that won (:func:`_winners`), half to each on a tie
    (as ``torch.maximum``), written into ``inside_grad`` and ``outside_grad``."""
    inside_share = won.to(cell.dtype).mul_(0.5)                                   # 1, 0.5 or 0
    torch.mul(cell, inside_share, out=inside_grad)
    torch.mul(cell, 1.0 - inside_share, out=outside_grad)
