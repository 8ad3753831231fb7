"""Training curves as a PNG, drawn with Pillow (a dependency already; no matplotlib needed) from
the records of a run's ``log.jsonl``.

:func:`draw_curves` draws three panels: the losses (the total and every term, log scale), the
learning rate, and the validation metrics in % (segm AP, bbox AP, the VOC mask mAP^r at IoU 0.5
and 0.7, mask AR@100 when the run has it), against the iteration; the x axis spans the planned
iterations, so the picture also shows how far the run is. NaN/inf steps (skipped) are marked in
red under the losses. The PNG is written atomically (a temporary file in the same folder, then
``os.replace``: a viewer sees the old picture or the new one, never half of one) and carries a
text chunk ``fcis-curves`` (JSON) saying what it shows (iterations, points, validations).

:class:`CurvePlotter` is what a training run holds (rank 0 only, through
:class:`fcis.engine.run_log.RunLog`): it keeps the curves, redraws after a log line at most every
``min_interval_s`` seconds (5) and so that drawing takes at most ``max_share`` (1%) of the run's
time, after every validation, and at the end. A resumed run starts it with the records of
``log.jsonl`` that it keeps, so the curves continue. One redraw takes about 0.1 s for a
demo-sized log and 0.2 s for a 90k-iteration one (``python -m benchmarks.curves_cost``; a busy
2-core machine); logs longer than the plot is wide are averaged to one point per two pixels.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..json_io import write_atomic

__all__ = ["Curves", "curves_from_records", "render_curves", "draw_curves", "CurvePlotter", "read_log", "layout",
           "SIZE"]

#: The picture's size in pixels (width, height).
SIZE = (1280, 880)
#: Drawn at this multiple of :data:`SIZE`, then reduced: smooth lines and text at little cost.
SUPERSAMPLE = 2

#: Validation curves: label, and the keys of the value in a ``metrics`` record (a fraction).
METRICS: tuple[tuple[str, tuple[str, str]], ...] = (
    ("segm AP", ("segm", "AP")),
    ("bbox AP", ("bbox", "AP")),
    ("mAP^r@0.5", ("voc", "mAP@0.5")),
    ("mAP^r@0.7", ("voc", "mAP@0.7")),
    ("mask AR@100", ("ar", "AR@100")),
)

_TOTAL_COLOUR = (20, 20, 20)
_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
_LOSS_PALETTE = tuple(c for c in _PALETTE if c != (214, 39, 40))   # red marks NaN/inf steps
_GRID, _FRAME, _TEXT, _MUTED, _RED = (232, 232, 232), (110, 110, 110), (20, 20, 20), (100, 100, 100), (220, 30, 30)

Point = tuple[float, "float | None"]   # (iteration, value)
Box = tuple[float, float, float, float]


# --- the data ------------------------------------------------------------------------------------

@dataclass
class Curves:
    """The series of a run, each a list of ``(iteration, value)``; a value is None where the
    log holds no finite number (drawn as a gap)."""

    losses: dict[str, list[Point]] = field(default_factory=dict)    # "loss": the total
    lr: list[Point] = field(default_factory=list)
    metrics: dict[str, list[tuple[float, float]]] = field(default_factory=dict)   # fractions; METRICS' labels
    nonfinite: list[int] = field(default_factory=list)              # iterations of skipped steps
    last_iteration: int = 0

    def add(self, r: dict[str, Any]) -> None:
        """One ``log.jsonl`` record (see :mod:`fcis.engine.trainer`): a log line (``loss``,
        ``losses``, ``lr``), a NaN/inf step (``nonfinite``) or a validation (``metrics``); other
        records are ignored."""
        it = r.get("iteration")
        if not isinstance(it, int):
            return
        self.last_iteration = max(self.last_iteration, it)
        if r.get("nonfinite"):
            self.nonfinite.append(it)
        elif "loss" in r:
            losses = dict(r.get("losses") or {})
            losses.setdefault("loss", r["loss"])
            for name, v in losses.items():
                self.losses.setdefault(name, []).append((it, _finite(v)))
            if _finite(r.get("lr")) is not None:
                self.lr.append((it, float(r["lr"])))
        if isinstance(r.get("metrics"), dict):
            for label, (task, key) in METRICS:
                value = _finite((r["metrics"].get(task) or {}).get(key))
                if value is not None:
                    self.metrics.setdefault(label, []).append((it, value))

    def loss_names(self) -> list[str]:
        """The loss terms as drawn: the total (``loss``) first, then by name."""
        return sorted(self.losses, key=lambda k: (k != "loss", k))

    def summary(self) -> dict[str, Any]:
        """What the picture shows (the PNG's ``fcis-curves`` text chunk)."""
        its = [i for i, _ in self.losses.get("loss", [])]
        return {"iterations": [its[0], its[-1]] if its else None, "log_points": len(its),
                "losses": self.loss_names(), "validations": sorted({i for s in self.metrics.values() for i, _ in s}),
                "metrics": list(self.metrics), "nonfinite_steps": len(self.nonfinite),
                "last_iteration": self.last_iteration}


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def curves_from_records(records: Iterable[dict[str, Any]]) -> Curves:
    """The curves of ``log.jsonl`` records (see :meth:`Curves.add`)."""
    c = Curves()
    for r in records:
        c.add(r)
    return c


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl`` (lines that are not JSON objects are skipped: a line cut
    by a crash)."""
    out = []
    for line in Path(path).read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                out.append(record)
    return out


# --- axes ------------------------------------------------------------------------------------------

def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _fmt(v: float) -> str:
    """A tick label: 0.05, 2, 7.5e-4, 1e-5, 2e4."""
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        mant, exp = f"{v:.2e}".split("e")
        return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{v:.4g}"


def _fmt_iteration(v: float) -> str:
    """An iteration tick label: 600, 2500, 20k, 1.5M."""
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    return f"{v / 1e3:g}k" if v >= 1e4 else f"{v:.0f}"


@dataclass
class _Axis:
    """Values ``lo..hi`` (log or linear) onto pixels ``p0..p1``."""

    lo: float
    hi: float
    log: bool
    p0: float
    p1: float
    integer: bool = False   # ticks at whole numbers only (iterations)

    def __call__(self, v: float) -> float:
        if self.log:
            t = (math.log(v) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))
        else:
            t = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + t * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        if not self.log:
            step = _nice_step(self.hi - self.lo)
            if self.integer:
                step = max(1.0, math.ceil(step))
            first = math.ceil(self.lo / step - 1e-9)
            return [k * step for k in range(first, int(math.floor(self.hi / step + 1e-9)) + 1)]
        lo_e, hi_e = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
        for mults in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
            ticks = [m * 10.0 ** e for e in range(lo_e, hi_e + 1) for m in mults
                     if self.lo * (1 - 1e-9) <= m * 10.0 ** e <= self.hi * (1 + 1e-9)]
            if len(ticks) >= 3:
                break
        return ticks


def _value_axis(values: Sequence[float], log: bool, p0: float, p1: float, *, floor0: bool = False,
                cap: float | None = None) -> _Axis:
    """An axis around ``values`` (non-empty; positive when ``log``)."""
    lo, hi = min(values), max(values)
    if log:
        lo, hi = lo / 1.25, hi * 1.25
        if hi / lo < 3:  # at least half a decade, so that ticks fit
            mid = math.sqrt(lo * hi)
            lo, hi = mid / math.sqrt(3), mid * math.sqrt(3)
        return _Axis(lo, hi, True, p0, p1)
    lo = 0.0 if floor0 or lo >= 0 else lo
    hi = hi if hi > lo else lo + 1.0
    step = _nice_step(hi - lo)
    hi = math.ceil(hi * 1.0001 / step) * step
    if cap is not None:
        hi = min(hi, cap)
    return _Axis(lo, hi, False, p0, p1)


# --- drawing ---------------------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)   # FreeType (Pillow's bundled font) when available
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


class _Canvas:
    """An ``ImageDraw`` in the picture's coordinates (scaled by ``s`` on the image)."""

    def __init__(self, size: tuple[int, int], s: int) -> None:
        from PIL import Image, ImageDraw

        self.s = s
        self.image = Image.new("RGB", (size[0] * s, size[1] * s), "white")
        self.d = ImageDraw.Draw(self.image)

    def line(self, pts: Sequence[tuple[float, float]], fill, width: float = 1.0) -> None:
        self.d.line([(x * self.s, y * self.s) for x, y in pts], fill=fill, width=max(1, round(width * self.s)),
                    joint="curve" if len(pts) > 2 else None)

    def dot(self, x: float, y: float, r: float, fill) -> None:
        s = self.s
        self.d.ellipse([(x - r) * s, (y - r) * s, (x + r) * s, (y + r) * s], fill=fill)

    def rect(self, box: tuple[float, float, float, float], outline=None, fill=None, width: float = 1.0) -> None:
        self.d.rectangle([v * self.s for v in box], outline=outline, fill=fill, width=max(1, round(width * self.s)))

    def text(self, x: float, y: float, text: str, size: int = 13, fill=_TEXT, align: str = "lt") -> float:
        """Text at ``(x, y)``; ``align``: horizontal l/m/r, vertical t/m/b. Returns its width."""
        font = _font(size * self.s)
        left, top, right, bottom = self.d.textbbox((0, 0), text, font=font)
        w, h = right - left, bottom - top
        px = x * self.s - {"l": 0, "m": w / 2, "r": w}[align[0]] - left
        py = y * self.s - {"t": 0, "m": h / 2, "b": h}[align[1]] - top
        self.d.text((px, py), text, font=font, fill=fill)
        return w / self.s


def _thin(pts: Sequence[Point], n: int) -> Sequence[Point]:
    """At most ``n`` points: consecutive points averaged in ``n`` equal groups (a long run has
    more log lines than the plot has pixel columns; this bounds the drawing's cost). A group
    without a finite value is a gap (None)."""
    if len(pts) <= n:
        return pts
    its = np.array([i for i, _ in pts], dtype=np.float64)
    vals = np.array([np.nan if v is None else v for _, v in pts], dtype=np.float64)
    starts = (np.arange(n) * len(pts)) // n
    counts = np.diff(np.append(starts, len(pts)))
    finite = ~np.isnan(vals)
    sums = np.add.reduceat(np.where(finite, vals, 0.0), starts)
    k = np.add.reduceat(finite.astype(np.float64), starts)
    mean_its = np.add.reduceat(its, starts) / counts
    return [(float(i), float(v / c) if c else None) for i, v, c in zip(mean_its, sums, k)]


def _plot_series(cv: _Canvas, xa: _Axis, ya: _Axis, pts: Sequence[Point], colour, width: float,
                 dots: bool = False) -> None:
    """A polyline through the finite points (positive ones on a log axis), broken at gaps."""
    run: list[tuple[float, float]] = []
    runs = [run]
    for it, v in pts:
        if v is None or (ya.log and v <= 0):
            run = []
            runs.append(run)
            continue
        run.append((xa(it), ya(min(max(v, ya.lo), ya.hi))))
    for r in runs:
        if len(r) >= 2:
            cv.line(r, colour, width)
        if len(r) == 1 or dots:
            for x, y in r:
                cv.dot(x, y, max(2.5, width + 1), colour)


def _frame(cv: _Canvas, box: Box, xa: _Axis, ya: _Axis | None, title: str,
           xlabel: bool = True) -> None:
    x0, y0, x1, y1 = box
    cv.text(x0, y0 - 8, title, size=14, align="lb")
    for t in xa.ticks():
        x = xa(t)
        cv.line([(x, y0), (x, y1)], _GRID)
        cv.line([(x, y1), (x, y1 + 4)], _FRAME)
        cv.text(x, y1 + 7, _fmt_iteration(t), size=12, fill=_MUTED, align="mt")
    if ya is not None:
        for t in ya.ticks():
            y = ya(t)
            cv.line([(x0, y), (x1, y)], _GRID)
            cv.line([(x0 - 4, y), (x0, y)], _FRAME)
            cv.text(x0 - 7, y, _fmt(t), size=12, fill=_MUTED, align="rm")
    cv.rect(box, outline=_FRAME)
    if xlabel:
        cv.text((x0 + x1) / 2, y1 + 26, "iteration", size=12, fill=_MUTED, align="mt")


def _legend(cv: _Canvas, x: float, y: float, entries: Sequence[tuple[str, Any, float]]) -> None:
    for i, (label, colour, width) in enumerate(entries):
        yy = y + 21 * i
        cv.line([(x, yy), (x + 22, yy)], colour, max(width, 2.0))
        cv.text(x + 30, yy, label, size=13, align="lm")


def _last(pts: Sequence[Point]) -> float | None:
    return next((v for _, v in reversed(pts) if v is not None), None)


def _message(cv: _Canvas, box, text: str) -> None:
    cv.text((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, text, size=13, fill=_MUTED, align="mm")


def layout(size: tuple[int, int] = SIZE) -> tuple[Box, Box, Box]:
    """The plot areas ``(x0, y0, x1, y1)`` of the losses, the learning rate and the validation
    metrics in a picture of ``size``; the legends are right of ``x1``."""
    W, H = size
    right = W - 250.0
    bottom_y0, bottom_y1 = H * 0.53 + 96, H - 50.0
    mid = 88 + (right - 88) * 0.42
    return (88.0, 90.0, right, H * 0.53), (88.0, bottom_y0, mid, bottom_y1), (mid + 88, bottom_y0, right, bottom_y1)


def render_curves(curves: Curves, *, total_iterations: int | None = None, title: str = "",
                  size: tuple[int, int] = SIZE, supersample: int = SUPERSAMPLE):
    """The picture of ``curves`` (a ``PIL.Image`` of ``size``)."""
    cv = _Canvas(size, supersample)
    top_box, lr_box, val_box = layout(size)
    right = top_box[2]
    last = curves.last_iteration
    span = max(total_iterations or 0, last, 1)

    # title line: where the run is
    loss_now, lr_now = _last(curves.losses.get("loss", [])), _last(curves.lr)
    parts = [f"iteration {last}" + (f" / {total_iterations}" if total_iterations else "")]
    if loss_now is not None:
        parts.append(f"loss {loss_now:.4g}")
    if lr_now is not None:
        parts.append(f"lr {lr_now:.3g}")
    segm = curves.metrics.get("segm AP")
    if segm:
        best_it, best = max(segm, key=lambda p: (p[1], -p[0]))
        parts.append(f"segm AP {100 * segm[-1][1]:.1f} (best {100 * best:.1f} at {best_it:g})")
    cv.text(24, 16, title or "training curves", size=17)
    cv.text(24, 40, "   ·   ".join(parts), size=14, fill=_MUTED)

    # losses
    def xaxis(box):
        return _Axis(0.0, float(span), False, box[0] + 1, box[2] - 1, integer=True)

    xa = xaxis(top_box)
    columns = int(top_box[2] - top_box[0]) // 2   # points: one per two pixel columns at most
    losses = {k: _thin(curves.losses[k], columns) for k in curves.loss_names()}
    values = [v for s in losses.values() for _, v in s if v is not None and v > 0]
    if values:
        ya = _value_axis(values, True, top_box[3] - 1, top_box[1] + 1)
        _frame(cv, top_box, xa, ya, "losses (log scale)")
        entries = []
        for i, (name, pts) in enumerate(losses.items()):
            total = name == "loss"
            colour = _TOTAL_COLOUR if total else _LOSS_PALETTE[(i - 1) % len(_LOSS_PALETTE)]
            _plot_series(cv, xa, ya, pts, colour, 2.6 if total else 1.6)
            v = _last(curves.losses[name])   # the last log line's, not an average of the thinned ones
            entries.append((f"{'total' if total else name}  {'-' if v is None else f'{v:.3g}'}", colour,
                            2.6 if total else 1.6))
        for it in curves.nonfinite:
            x = xa(it)
            cv.line([(x, top_box[3] - 10), (x, top_box[3] - 1)], _RED, 2)
        if curves.nonfinite:
            entries.append((f"NaN/inf step, skipped ({len(curves.nonfinite)})", _RED, 2.0))
        _legend(cv, right + 24, top_box[1] + 10, entries)
    else:
        _frame(cv, top_box, xa, None, "losses (log scale)")
        _message(cv, top_box, "no log line yet")

    # learning rate
    xa = xaxis(lr_box)
    lr_pts = _thin(curves.lr, int(lr_box[2] - lr_box[0]) // 2)
    lrs = [v for _, v in lr_pts if v is not None and v > 0]
    if lrs:
        log = max(lrs) / min(lrs) > 5
        ya = _value_axis(lrs, log, lr_box[3] - 1, lr_box[1] + 1)
        _frame(cv, lr_box, xa, ya, "learning rate" + (" (log scale)" if log else ""))
        _plot_series(cv, xa, ya, lr_pts, _PALETTE[0], 2.0)
    else:
        _frame(cv, lr_box, xa, None, "learning rate")
        _message(cv, lr_box, "no log line yet")

    # validation
    xa = xaxis(val_box)
    vals = [100 * v for s in curves.metrics.values() for _, v in s if v is not None]
    if vals:
        ya = _value_axis([*vals, 10.0], False, val_box[3] - 1, val_box[1] + 1, floor0=True, cap=100.0)
        _frame(cv, val_box, xa, ya, "validation (%)")
        entries = []
        for i, (label, pts) in enumerate(curves.metrics.items()):
            colour = _PALETTE[i % len(_PALETTE)]
            _plot_series(cv, xa, ya, [(it, 100 * v) for it, v in pts], colour, 2.0, dots=True)
            entries.append((f"{label}  {100 * pts[-1][1]:.1f}", colour, 2.0))
        _legend(cv, right + 24, val_box[1] + 10, entries)
    else:
        _frame(cv, val_box, xa, None, "validation (%)")
        _message(cv, val_box, "no validation yet (--val; --eval-every N)")

    return cv.image.reduce(supersample) if supersample > 1 else cv.image


def draw_curves(records: Iterable[dict[str, Any]] | Curves, path: str | os.PathLike, *,
                total_iterations: int | None = None, title: str = "", size: tuple[int, int] = SIZE) -> Path:
    """Draw the curves of ``log.jsonl`` ``records`` (or of :class:`Curves`) to the PNG ``path``,
    atomically (see the module docstring). Returns the path."""
    from PIL.PngImagePlugin import PngInfo

    curves = records if isinstance(records, Curves) else curves_from_records(records)
    image = render_curves(curves, total_iterations=total_iterations, title=title, size=size)
    info = PngInfo()
    info.add_text("fcis-curves", json.dumps(curves.summary()))
    return write_atomic(path, lambda f: image.save(f, format="PNG", pnginfo=info, compress_level=3),
                        suffix=".png.tmp", fsync=False)


class CurvePlotter:
    """Keeps a run's curves and redraws the PNG ``path`` as its log records come.

    ``records``: those already in ``log.jsonl`` (a resumed run's), so the curves continue. A log
    line redraws when the last redraw is at least ``min_interval_s`` old and at least
    ``max_share`` of the time since it was spent drawing it (so that drawing takes at most about
    that share of a run's time, however fast its steps); a validation always redraws, and
    :meth:`close` draws the final picture. ``draw_seconds`` lists the time of every redraw. A
    drawing that fails warns once and the plotter stops: the curves never stop a training run.
    """

    def __init__(self, path: str | os.PathLike, records: Iterable[dict[str, Any]] = (), *,
                 total_iterations: int | None = None, title: str = "", min_interval_s: float = 5.0,
                 max_share: float = 0.01, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        for stale in self.path.parent.glob(f".{self.path.stem}.*.png.tmp"):  # of a process killed mid-write
            with contextlib.suppress(OSError):
                stale.unlink()
        self.curves = curves_from_records(records)
        self.total_iterations = total_iterations
        self.title = title
        self.min_interval_s = min_interval_s
        self.max_share = max_share
        self.clock = clock
        self.draw_seconds: list[float] = []
        self.pending = self.curves.last_iteration > 0
        self._last_draw = -math.inf
        self._broken = False

    def add(self, record: dict[str, Any]) -> None:
        """A new ``log.jsonl`` record (see :meth:`Curves.add`); redraws when due."""
        self.curves.add(record)
        self.pending = True
        wait = max(self.min_interval_s, self.draw_seconds[-1] / self.max_share if self.draw_seconds else 0.0)
        if isinstance(record.get("metrics"), dict) or self.clock() - self._last_draw >= wait:
            self.draw()

    def close(self) -> None:
        """The final picture (when something changed since the last one)."""
        if self.pending:
            self.draw()

    def draw(self) -> None:
        if self._broken or self.curves.last_iteration == 0:
            return
        t0 = time.perf_counter()
        try:
            draw_curves(self.curves, self.path, total_iterations=self.total_iterations, title=self.title)
        except Exception as e:  # noqa: BLE001 - a picture must not stop training
            self._broken = True
            warnings.warn(f"could not draw the training curves to {self.path} ({type(e).__name__}: {e}); "
                          "training goes on without them", RuntimeWarning, stacklevel=2)
            return
        self.draw_seconds.append(time.perf_counter() - t0)
        self._last_draw = self.clock()
        self.pending = False
