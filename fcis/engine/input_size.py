"""The network's input size chosen from the training data (issue 22), when the user gives none.

The model's default input (FCIS: short side 600, long side at most 1000) suits COCO-like photos.
Two kinds of data are poorly served by it, and :func:`choose_input_size` adapts to both:

1. **Photos smaller than the input** (PennFudanPed: ~300-550 px), from random weights: upsampling
   them adds no detail, only time per iteration. The input becomes the photos' own size: the
   short side ``m`` at which the median image is scaled by at most 1 (the long side limit keeps
   the model's ratio ``max_size / min_size``). Objects are large in such photos; when they are
   not, rule 2 may still enlarge. With ImageNet weights the model's default stays the base (the
   paper's recipe: its VOC photos, ~500x375, were upsampled to 600 for features trained at
   ImageNet's object scale).
2. **Small objects**: the RPN runs at stride 16, and a box much under ~32 px cannot reach IoU 0.7
   with any anchor of its grid. When fewer than :data:`REACH_TARGET` of the boxes -- weighed by
   class, each class the same as in COCO AP (:func:`fcis.engine.anchor_fit.class_weights`) -- are
   at least :data:`REACH_PX` px (``sqrt(w*h)``) at the input, the input grows in steps of 1.125
   until they are, within two caps: the median image is scaled by at most :data:`MAX_UPSAMPLE`
   of its own resolution, and an image holds on average at most :data:`PIXEL_BUDGET` times the
   pixels of the model's default input rectangle (600 x 1000 for FCIS, so 0.9 Mpx: the time and
   activation memory of an iteration grow about linearly with the pixels). When the caps stop
   it short of the target, it goes as far as they allow only if that gains at least
   :data:`MIN_GAIN` of the class-balanced share (else the extra time buys too little).

The choice (with its reason, the share reached and the cost) is printed at the start of
``fcis train`` and by ``fcis inspect-data``, recorded in ``config.json`` (``input_size``) and
set as the model's ``min_size``/``max_size``, so evaluation, prediction and a resumed run use it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .anchor_fit import BoxTable, class_weights

__all__ = ["InputSizeChoice", "choose_input_size", "given_input_size", "REACH_PX", "REACH_TARGET",
           "MAX_UPSAMPLE", "PIXEL_BUDGET", "MIN_GAIN", "INPUT_SIZE_MODES"]

#: ``fcis train --input-size``: chosen from the data, or the model's default.
INPUT_SIZE_MODES = ("auto", "model")
#: A box is "reachable" by the stride-16 RPN at this size (sqrt(w*h), input px; COCO's "small").
REACH_PX = 32.0
#: The class-balanced share of boxes at least REACH_PX that the input aims for.
REACH_TARGET = 0.9
#: At most this scale of the median image over its own resolution when enlarging for small objects.
MAX_UPSAMPLE = 2.0
#: At most this many times the pixels of the model's default input rectangle (min_size x max_size).
PIXEL_BUDGET = 1.5
#: Enlarging short of the target must gain at least this share (class-balanced) to be worth it.
MIN_GAIN = 0.05
STEP = 1.125


@dataclass
class InputSizeChoice:
    """The input size of a run and why. ``source``: "data" (chosen here), "given" (``--min-size``
    / ``--max-size`` / ``--set``), "recipe NAME" or "model" (``--input-size model``). The
    measures (None without boxes): ``reach`` the class-balanced share of boxes at least
    :data:`REACH_PX` px at this input, ``upsample`` the scale of the median image over its own
    resolution, ``pixels`` the mean pixels per image at the input; ``default_*`` the same at the
    model's default input."""

    min_size: int
    max_size: int
    source: str
    reason: str
    default: tuple[int, int]
    reach: float | None = None
    default_reach: float | None = None
    upsample: float | None = None
    pixels: float | None = None
    default_pixels: float | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["default"] = list(self.default)
        return out

    def describe(self) -> str:
        """Two lines for the start of a run."""
        line = f"input size {self.min_size}/{self.max_size} ({self._source_words()}): {self.reason}"
        if self.reach is None or self.pixels is None or self.default_pixels is None:
            return line
        d_min, d_max = self.default
        return (line + f"\n  boxes >= {REACH_PX:.0f} px (class-balanced): {100 * self.reach:.0f}% (at the model's "
                f"{d_min}/{d_max}: {100 * (self.default_reach or 0):.0f}%); the median image at "
                f"{self.upsample:.2f}x its own size; {self.pixels / 1e6:.2f} Mpx per image "
                f"({self.pixels / max(self.default_pixels, 1):.2f}x the model's {d_min}/{d_max})")

    def _source_words(self) -> str:
        return {"data": "chosen from the data", "given": "given", "model": "the model's default"}.get(
            self.source, self.source)


def _measure(table: BoxTable, min_size: int, max_size: int, weights: np.ndarray) -> dict[str, Any]:
    """Reach, median upsampling and mean pixels of ``table``'s data at ``min_size/max_size``."""
    hw = table.input_hw(min_size, max_size)
    scale = hw[:, 0] / np.maximum(table.image_hw[:, 0], 1)
    boxes, _, _ = table.at_input(min_size, max_size)
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    reach = float(np.sum(weights * (side >= REACH_PX))) if len(side) else 1.0
    return {"min_size": int(min_size), "max_size": int(max_size), "reach": reach,
            "upsample": float(np.median(scale)) if len(scale) else 1.0,
            "pixels": float(np.mean(hw[:, 0] * hw[:, 1])) if len(hw) else 0.0}


def given_input_size(min_size: int, max_size: int, source: str, reason: str, default: tuple[int, int],
                     table: BoxTable | None = None) -> InputSizeChoice:
    """An input size not chosen here (given, a recipe's, the model's), measured on ``table``."""
    if table is None or len(table.image_hw) == 0:
        return InputSizeChoice(int(min_size), int(max_size), source, reason, tuple(default))  # type: ignore[arg-type]
    w = class_weights(table.labels)
    now, dflt = _measure(table, min_size, max_size, w), _measure(table, *default, w)
    return InputSizeChoice(int(min_size), int(max_size), source, reason, tuple(default),  # type: ignore[arg-type]
                           now["reach"], dflt["reach"], now["upsample"], now["pixels"], dflt["pixels"])


def choose_input_size(table: BoxTable, default_min: int, default_max: int, *, native_cap: bool = True
                      ) -> InputSizeChoice:
    """The input size for ``table``'s data (see the module's docstring for the rule), for a
    model whose default input is ``default_min/default_max``. ``native_cap``: photos smaller
    than the default input are not upsampled (rule 1; False with ImageNet weights)."""
    default = (int(default_min), int(default_max))
    if len(table.image_hw) == 0 or len(table.boxes) == 0:
        return given_input_size(*default, "data", "no boxes to measure: the model's default", default, table)
    ratio = default_max / default_min
    h, w = table.image_hw[:, 0].astype(np.float64), table.image_hw[:, 1].astype(np.float64)
    # an image's scale is linear in the short side m of the input: m * c (max_size = m * ratio)
    c = np.minimum(1.0 / np.minimum(h, w), ratio / np.maximum(h, w))
    native = 1.0 / float(np.median(c))              # m at which the median image keeps its size
    budget = PIXEL_BUDGET * default_min * default_max
    by_pixels = math.sqrt(budget / float(np.mean(h * w * c * c)))
    weights = class_weights(table.labels)

    def at(m: float) -> dict[str, Any]:
        m = int(math.floor(m))
        return _measure(table, m, int(round(m * ratio)), weights)

    dflt = at(default_min)
    base = dflt if native >= default_min or not native_cap else at(native)
    why_base = (f"the model's {default_min}/{default_max}" + ("" if native >= default_min else
                " (with ImageNet weights, as the paper: smaller photos upsampled to it)") if base is dflt else
                f"the photos' own size (median image {int(np.median(np.minimum(h, w)))} px on its short side, "
                f"smaller than the model's {default_min} px input: not upsampled)")
    candidates = [base]

    def done(pick: dict[str, Any], reason: str) -> InputSizeChoice:
        return InputSizeChoice(pick["min_size"], pick["max_size"], "data", reason, default, pick["reach"],
                               dflt["reach"], pick["upsample"], pick["pixels"], dflt["pixels"], candidates)

    share = f"{100 * base['reach']:.0f}% of the boxes (class-balanced) are at least {REACH_PX:.0f} px"
    if base["reach"] >= REACH_TARGET:
        return done(base, f"{why_base}; {share} there")
    cap = min(MAX_UPSAMPLE * native, by_pixels)
    if cap <= base["min_size"] + 1:
        return done(base, f"{why_base}; only {share} there, but a larger input would pass the caps "
                          f"({MAX_UPSAMPLE:g}x the photos' own size, {PIXEL_BUDGET:g}x the pixels of "
                          f"{default_min}x{default_max})")
    m = float(base["min_size"])
    while m * STEP < cap:
        m *= STEP
        candidates.append(at(m))
    candidates.append(at(cap))
    limit = (f"at most {MAX_UPSAMPLE:g}x the photos' own size" if MAX_UPSAMPLE * native <= by_pixels
             else f"at most {PIXEL_BUDGET:g}x the pixels of {default_min}x{default_max}")
    cost = lambda p: f"{p['pixels'] / max(base['pixels'], 1):.2f}x the pixels, time and activation memory"  # noqa: E731
    for cand in candidates[1:]:
        if cand["reach"] >= REACH_TARGET:
            return done(cand, f"only {share} at {why_base}; the smallest input where {100 * REACH_TARGET:.0f}% "
                              f"are ({cost(cand)} per image)")
    best = max(c["reach"] for c in candidates)
    if best - base["reach"] < MIN_GAIN:
        return done(base, f"{why_base}; only {share} there, and the largest input within the caps "
                          f"({limit}) would reach {100 * best:.0f}%: too little for its cost")
    pick = next(c for c in candidates if c["reach"] >= best - 0.01)
    return done(pick, f"only {share} at {why_base}; enlarged to {100 * pick['reach']:.0f}%, as far as it helps "
                      f"within the caps ({limit}; {cost(pick)} per image)")
