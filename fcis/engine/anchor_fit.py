"""Anchors fitted to the training data, and their coverage computed as the RPN matches them.

The boxes are measured at the model's input scale: the resize of torchvision's
``GeneralizedRCNNTransform`` (short side to ``min_size``, long side at most ``max_size``; the
image becomes ``floor(h * s) x floor(w * s)``, the boxes scale by the same per-axis ratio).

**Coverage** is the share of boxes that some anchor matches at the RPN's positive IoU
(``rpn_fg_iou``, 0.7): the anchors are torchvision's (``AnchorGenerator``: cell anchors
``round(±w/2), round(±h/2)`` with ``h/w = ratio``, ``w*h = size²``, centred on the grid points
``(i * stride, j * stride)``, ``i < padded width / stride``, the batch padded to a multiple of
32). For axis-aligned boxes of fixed sizes the overlap only falls as the centres move apart, so the
best anchor of each shape sits at one of the 2x2 grid points around the box centre: the maximum
over those is the exact best IoU of the whole grid. (The RPN also makes each box's best anchor
positive whatever its IoU; a box below the threshold gets one weak, poorly placed positive.)

**Fitting** searches geometric size ladders between quantiles of the boxes' ``sqrt(w*h)`` and
ratio sets (the paper's 0.5/1/2, quantiles of ``log(h/w)``, symmetric spreads), scoring each by
its coverage at the RPN's IoU plus its coverage at IoU 0.5 (so that no part of the size range is
given up for a denser cover of the rest) on (a deterministic sample of) the boxes.

**Class balance** (issue 22): COCO AP is a mean over classes, so by default each class weighs the
same in the fit -- a box counts ``1 / (boxes of its class)`` (:func:`class_weights`) -- and 1,505
windows no longer outvote 81 façades. The coverage is reported both ways, class-balanced and as a
share of boxes, and per class (:class:`Coverage`); ``--anchors fit-boxes`` keeps the fit by box
count. The class-balanced fit of FCIS also chooses how many sizes the RPN gets (3 to 7; a size
must add :data:`SIZE_COST` of coverage to be kept); Mask R-CNN keeps one size per FPN level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator

from ..models.maskrcnn.config import MaskRCNNConfig

__all__ = ["AnchorFit", "BoxTable", "Coverage", "box_table", "box_sample", "input_boxes", "resized_size",
           "class_weights", "weighted_quantile", "anchor_coverage", "fit_anchors", "fit_window_sizes",
           "window_coverage", "POOR_COVERAGE", "SIZE_COST", "SIZE_COUNTS", "ANCHOR_MODES", "anchor_levels", "covered",
           "fit_for_model", "FIT_MAX_BOXES"]

#: Below this share of covered boxes the fit is reported as poor.
POOR_COVERAGE = 0.6
#: More boxes than this (COCO has 860k) are fitted and measured on a deterministic sample of this
#: many: the coverage's standard error stays under 0.4 points, the fit under a few seconds.
FIT_MAX_BOXES = 20000
SIZE_DIVISIBLE = 32   # GeneralizedRCNNTransform pads the batch to a multiple of this
RPN_STRIDE = 16       # FCIS's RPN runs on conv4 (stride 16 with or without the dilated conv5)


@dataclass
class AnchorFit:
    """What was chosen: ``fields`` (model config values, e.g. ``anchor_sizes``), the coverage of
    the training boxes with them (``chosen``) and with the model's default anchors (``default``),
    both as :class:`Coverage` (share of boxes, mean over classes, per class). ``weighing`` is how
    the fit counted: "classes" (each class the same) or "boxes"; ``coverage`` and
    ``default_coverage`` are the shares in that weighing."""

    fields: dict[str, Any]
    chosen: "Coverage"
    default: "Coverage"
    num_boxes: int
    source: str                       # "fitted", "given" (--set) or "paper"
    weighing: str = "classes"
    notes: list[str] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        return self.chosen.classes if self.weighing == "classes" else self.chosen.boxes

    @property
    def default_coverage(self) -> float:
        return self.default.classes if self.weighing == "classes" else self.default.boxes

    def to_dict(self) -> dict[str, Any]:
        return {"fields": {k: list(v) if isinstance(v, tuple) else v for k, v in self.fields.items()},
                "coverage": self.coverage, "default_coverage": self.default_coverage, "weighing": self.weighing,
                "chosen": self.chosen.to_dict(), "default": self.default.to_dict(),
                "num_boxes": self.num_boxes, "source": self.source, "notes": list(self.notes)}

    def describe(self) -> str:
        vals = ", ".join(f"{k}={tuple(v) if isinstance(v, (list, tuple)) else v}" for k, v in self.fields.items())
        how = "each class weighing the same" if self.weighing == "classes" else "by box count"
        text = (f"anchors ({self.source}, {how}): {vals}; cover {100 * self.chosen.classes:.1f}% per class on "
                f"average, {100 * self.chosen.boxes:.1f}% of the {self.num_boxes} training boxes (the paper's "
                f"defaults: {100 * self.default.classes:.1f}% / {100 * self.default.boxes:.1f}%)")
        if self.coverage < POOR_COVERAGE:
            text += (f"\nWARNING: only {100 * self.coverage:.1f}% of the training boxes "
                     + ("(class-balanced) " if self.weighing == "classes" else "") + "have an anchor at the "
                     "RPN's positive IoU: the RPN will learn to propose the others poorly. Objects much "
                     "smaller than ~3x the RPN's stride (16 px for FCIS; 4-64 px by FPN level for Mask R-CNN) "
                     "cannot reach IoU 0.7 on its grid; "
                     "check the box sizes (fcis inspect-data), enlarge the input (--min-size/--max-size) "
                     "or set anchors by hand (--set anchor_sizes=...).")
        return text + "".join(f"\n  note: {n}" for n in self.notes)


def resized_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The (height, width) ``GeneralizedRCNNTransform`` resizes an ``h x w`` image to."""
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return int(math.floor(h * scale)), int(math.floor(w * scale))


@dataclass
class BoxTable:
    """The non-crowd boxes of a dataset at their stored (native) scale, with their classes and
    images, read once and rescaled to any input size by :meth:`at_input`.

    ``boxes`` float64[N, 4] xyxy (clipped to the image), ``labels`` int64[N] category ids,
    ``image_index`` int64[N] the row of each box's image in ``image_hw`` int64[I, 2] (height,
    width of every image, also those without boxes)."""

    boxes: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray
    image_hw: np.ndarray

    def input_hw(self, min_size: int | None, max_size: int | None) -> np.ndarray:
        """int64[I, 2]: each image's (height, width) at the input (as stored for None)."""
        if not (min_size and max_size):
            return self.image_hw.copy()
        h, w = self.image_hw[:, 0].astype(np.float64), self.image_hw[:, 1].astype(np.float64)
        scale = np.minimum(min_size / np.minimum(h, w), max_size / np.maximum(h, w))   # resized_size, vectorised
        return np.stack([np.floor(h * scale), np.floor(w * scale)], 1).astype(np.int64).reshape(-1, 2)

    def at_input(self, min_size: int | None, max_size: int | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(boxes, padded, labels)`` at the input scale: boxes float64[N, 4] xyxy in input
        pixels, ``padded`` int64[N, 2] the padded (height, width) of each box's image (a multiple
        of 32), ``labels`` int64[N] category ids."""
        new = self.input_hw(min_size, max_size)
        hw = self.image_hw[self.image_index].astype(np.float64)
        nhw = new[self.image_index].astype(np.float64)
        sy, sx = nhw[:, 0] / np.maximum(hw[:, 0], 1), nhw[:, 1] / np.maximum(hw[:, 1], 1)
        boxes = self.boxes * np.stack([sx, sy, sx, sy], axis=1)
        padded = (np.ceil(new / SIZE_DIVISIBLE) * SIZE_DIVISIBLE).astype(np.int64)[self.image_index]
        return boxes.reshape(-1, 4), padded.reshape(-1, 2), self.labels.copy()


def box_table(data) -> BoxTable:
    """The :class:`BoxTable` of ``data``: a :class:`fcis.data.CocoInstances` (read from its flat
    index, vectorised: no annotation objects) or a pycocotools ``COCO``. Its non-crowd boxes with a
    positive area inside their image, image by image in file order, each image's in file order."""
    index = getattr(data, "index", None)
    if index is not None:
        rows = index.image_ann_order
        rows = rows[~index.ann_crowd[rows]]
        img = index.ann_image[rows]
        h, w = index.heights.astype(np.float64)[img], index.widths.astype(np.float64)[img]
        x, y, bw, bh = index.ann_bbox[rows].T
        x1, y1, x2, y2 = np.maximum(x, 0.0), np.maximum(y, 0.0), np.minimum(x + bw, w), np.minimum(y + bh, h)
        ok = (x2 > x1) & (y2 > y1)
        return BoxTable(np.stack([x1, y1, x2, y2], 1)[ok].reshape(-1, 4),
                        index.ann_category[rows][ok].astype(np.int64), img[ok].astype(np.int64),
                        np.stack([index.heights, index.widths], 1).astype(np.int64).reshape(-1, 2))
    boxes, labels, image_rows, hw = [], [], [], []
    for row, (img_id, img) in enumerate(data.imgs.items()):
        hh, ww = int(img["height"]), int(img["width"])
        hw.append([hh, ww])
        for ann in data.imgToAnns.get(img_id, []):
            if ann.get("iscrowd", 0):
                continue
            bx, by, bbw, bbh = (float(v) for v in ann["bbox"])
            bx1, by1, bx2, by2 = max(bx, 0.0), max(by, 0.0), min(bx + bbw, ww), min(by + bbh, hh)
            if bx2 <= bx1 or by2 <= by1:
                continue
            boxes.append([bx1, by1, bx2, by2])
            labels.append(int(ann["category_id"]))
            image_rows.append(row)
    return BoxTable(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(labels, dtype=np.int64),
                    np.asarray(image_rows, dtype=np.int64), np.asarray(hw, dtype=np.int64).reshape(-1, 2))


def category_names(data) -> dict[int, str]:
    """Category id -> name of a :class:`fcis.data.CocoInstances` or a pycocotools ``COCO``."""
    if hasattr(data, "label_to_cat_id") and hasattr(data, "class_names"):
        return {int(c): str(data.class_names[lab - 1]) for lab, c in data.label_to_cat_id.items()}
    return {int(c): str(v.get("name", c)) for c, v in getattr(data, "cats", {}).items()}


def box_sample(total: int, limit: int = FIT_MAX_BOXES) -> np.ndarray | None:
    """Sorted indices of a deterministic sample of ``limit`` of ``total`` boxes (the same for the
    same counts), or None when ``total <= limit`` (use them all)."""
    if total <= limit:
        return None
    return np.sort(np.random.default_rng(0).choice(total, limit, replace=False))


def input_boxes(data, min_size: int | None, max_size: int | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-crowd boxes of ``data`` (a :class:`fcis.data.CocoInstances` or a pycocotools ``COCO``,
    see :func:`box_table`) at the input scale (None: as stored).

    Returns ``boxes`` float64[N, 4] xyxy in input pixels, ``padded`` int64[N, 2], the padded
    (height, width) of each box's image (a multiple of 32), and ``labels`` int64[N], each box's
    category id (see :meth:`BoxTable.at_input`)."""
    return box_table(data).at_input(min_size, max_size)


def class_weights(labels: np.ndarray) -> np.ndarray:
    """float64[N]: ``1 / (boxes of the box's class) / (classes)``, so that each class sums to the
    same share and all to 1 -- the weighing of COCO AP, a mean over classes. Empty: empty."""
    if len(labels) == 0:
        return np.zeros(0)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / (counts[inverse].astype(np.float64) * len(counts))


def weighted_quantile(values: np.ndarray, q, weights: np.ndarray | None = None) -> np.ndarray:
    """Quantiles ``q`` of ``values`` where each value counts ``weights`` (None: 1); the inverse
    of the weighted empirical distribution (the smallest value whose cumulative weight reaches
    ``q``); None: ``np.quantile``'s linear interpolation."""
    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if weights is None:   # the unweighted fit as it always was (linear interpolation)
        return np.quantile(values, q)
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    cum /= cum[-1]
    idx = np.searchsorted(cum, q - 1e-12, side="left").clip(0, len(values) - 1)
    return values[order][idx]


def _cell_anchors(sizes: Sequence[float], ratios: Sequence[float]) -> torch.Tensor:
    """torchvision's cell anchors (A, 4), centred on 0 (rounded corners)."""
    return AnchorGenerator.generate_anchors(None, tuple(sizes), tuple(ratios))  # type: ignore[arg-type]


def best_iou(boxes: np.ndarray, padded: np.ndarray, levels: Sequence[tuple[int, Sequence[float], Sequence[float]]]
             ) -> np.ndarray:
    """Best IoU of each box (float64[N, 4] xyxy) with the anchors of ``levels``: a list of
    ``(stride, sizes, ratios)``, each level's anchors on its own grid. Returns float64[N]."""
    if len(boxes) > 20000:   # bounded memory
        return np.concatenate([best_iou(boxes[i:i + 20000], padded[i:i + 20000], levels)
                               for i in range(0, len(boxes), 20000)])
    if len(boxes) == 0:
        return np.zeros(0)
    best = np.zeros(len(boxes))
    for stride, sizes, ratios in levels:
        best = np.maximum(best, shape_iou(boxes, padded, stride, sizes, ratios).max(axis=1))
    return best


def shape_iou(boxes: np.ndarray, padded: np.ndarray, stride: int, sizes: Sequence[float],
              ratios: Sequence[float]) -> np.ndarray:
    """float64[N, A]: the best IoU of each box with each anchor shape of one level (A =
    ``len(ratios) * len(sizes)``, torchvision's order: ratio-major) over its grid of ``stride``:
    the maximum over the 2x2 grid points around the box centre (see the module docstring)."""
    b = torch.as_tensor(boxes, dtype=torch.float32)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    pad = torch.as_tensor(padded)
    nx, ny = (pad[:, 1] + stride - 1) // stride, (pad[:, 0] + stride - 1) // stride  # grid cells
    cell = _cell_anchors(sizes, ratios)                           # (A, 4)
    out = torch.zeros(len(b), len(cell))
    for a in range(0, len(cell), 64):                             # bounded memory: N x 64 anchors
        part = cell[a:a + 64]
        for gx in (torch.floor(cx / stride), torch.floor(cx / stride) + 1):
            for gy in (torch.floor(cy / stride), torch.floor(cy / stride) + 1):
                sx = torch.minimum(gx.clamp(min=0), (nx - 1).float()) * stride
                sy = torch.minimum(gy.clamp(min=0), (ny - 1).float()) * stride
                shift = torch.stack([sx, sy, sx, sy], dim=1)     # (N, 4)
                anchors = shift[:, None, :] + part[None]          # (N, a, 4)
                out[:, a:a + 64] = torch.maximum(out[:, a:a + 64], _paired_iou(b, anchors))
    return out.double().numpy()


def _paired_iou(b: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of box ``b[i]`` with each ``anchors[i, a]`` (the formula of ``torchvision.ops.box_iou``)."""
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    area_a = (anchors[..., 2] - anchors[..., 0]) * (anchors[..., 3] - anchors[..., 1])
    lt = torch.maximum(b[:, None, :2], anchors[..., :2])
    rb = torch.minimum(b[:, None, 2:], anchors[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_b[:, None] + area_a - inter)


def anchor_coverage(boxes: np.ndarray, padded: np.ndarray, levels, fg_iou: float,
                    weights: np.ndarray | None = None) -> float:
    """Share of ``boxes`` whose best anchor IoU is ``>= fg_iou`` (the RPN's positive rule),
    each box counting ``weights`` (None: 1; :func:`class_weights` for the class-balanced share);
    1.0 for no boxes. ``levels`` as in :func:`best_iou`."""
    if len(boxes) == 0:
        return 1.0
    return _share(best_iou(boxes, padded, levels) >= fg_iou, weights)


def _share(ok: np.ndarray, weights: np.ndarray | None) -> float:
    if len(ok) == 0:
        return 1.0
    if weights is None:
        return float(np.mean(ok))
    return float(np.sum(weights * ok) / np.sum(weights))


@dataclass
class Coverage:
    """Anchor (or window) coverage of a box set: ``boxes`` the share of boxes covered,
    ``classes`` the mean over classes of each class's share (COCO AP's weighing), ``per_class``
    each class's share (by class name)."""

    boxes: float
    classes: float
    per_class: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, ok: np.ndarray, labels: np.ndarray, names: dict[int, str] | None = None) -> "Coverage":
        """From ``ok`` bool[N] (box covered) and ``labels`` int64[N] category ids (named by
        ``names``; unnamed ids as their number). No boxes: 1.0 everywhere."""
        if len(ok) == 0:
            return cls(1.0, 1.0, {})
        per = {int(c): float(np.mean(ok[labels == c])) for c in np.unique(labels)}
        named = {(names or {}).get(c, str(c)): v for c, v in per.items()}
        return cls(float(np.mean(ok)), float(np.mean(list(per.values()))), named)

    def to_dict(self) -> dict[str, Any]:
        return {"boxes": self.boxes, "classes": self.classes, "per_class": dict(self.per_class)}


def _ladders(s: np.ndarray, n: int, weights: np.ndarray | None = None) -> list[tuple[int, ...]]:
    """Candidate size ladders of ``n`` integers: geometric between quantile pairs of ``s``
    (weighted quantiles when ``weights``; the extreme 1%/99% pair with them, for wide ranges)."""
    out = []
    lows: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
    highs: tuple[float, ...] = (0.8, 0.9, 0.95, 0.98)
    if weights is not None:
        lows, highs = (0.01,) + lows, highs + (0.99,)
    qs = weighted_quantile(s, lows + highs, weights)
    for lo in qs[:len(lows)]:
        for hi in qs[len(lows):]:
            lo, hi = float(lo), float(hi)
            ladder = np.exp(np.linspace(math.log(lo), math.log(max(hi, lo)), n)) if n > 1 else [math.sqrt(lo * hi)]
            sizes = tuple(int(max(2, round(v))) for v in ladder)
            if len(set(sizes)) == n and sizes not in out:
                out.append(sizes)
    median = float(weighted_quantile(s, 0.5, weights)[0])
    return out or [tuple(int(max(2, round(median * 2 ** (i - (n - 1) / 2)))) for i in range(n))]


def _ratio_sets(r: np.ndarray, m: int, default: tuple[float, ...], weights: np.ndarray | None = None
                ) -> list[tuple[float, ...]]:
    """Candidate aspect-ratio sets (h/w) of ``m`` values."""
    sets = [tuple(default)] if len(default) == m else []
    if m == 1:
        return sets + [(round(float(np.exp(weighted_quantile(np.log(r), 0.5, weights)[0])), 3),)]
    q = np.exp(weighted_quantile(np.log(r), [(i + 0.5) / m for i in range(m)], weights))
    sets.append(tuple(round(float(v), 3) for v in q))
    for spread in (1.5, 2.0, 3.0):
        sets.append(tuple(round(float(spread ** (2 * i / (m - 1) - 1)), 3) for i in range(m)))
    return [s for i, s in enumerate(sets) if len(set(s)) == m and s not in sets[:i]]


#: The price of one more anchor size in the fit that chooses the count (class-balanced coverage
#: at the RPN's IoU plus at IoU 0.5, a score in [0, 2]): a size is added only when it raises the
#: score by at least this much. Each size adds ``len(aspect_ratios)`` anchors at every position of
#: the stride-16 grid: 5 more RPN output channels each (1 score + 4 deltas), more anchors to
#: match, sort and decode, and fewer positive anchors per size to learn each from.
SIZE_COST = 0.015
#: Anchor-size counts the fit chooses among for FCIS's single RPN level (the model's is 4).
SIZE_COUNTS = (3, 4, 5, 6, 7)


def fit_anchors(boxes: np.ndarray, padded: np.ndarray, *, num_sizes: int | Sequence[int],
                default_ratios: tuple[float, ...], stride: int, fg_iou: float,
                fixed_sizes: tuple[int, ...] | None = None, fixed_ratios: tuple[float, ...] | None = None,
                max_boxes: int = 3000, seed: int = 0, weights: np.ndarray | None = None,
                size_cost: float = SIZE_COST) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Anchor sizes (increasing ints) and ratios (as many as ``default_ratios``) that cover the
    most ``boxes`` on a single-level grid of ``stride``.

    Each box counts ``weights`` (None: 1 each, the share of boxes; :func:`class_weights`: each
    class the same). The score is the (weighted) share of boxes at IoU ``>= fg_iou`` plus the
    share at IoU 0.5 (so that no size range is given up entirely). ``num_sizes`` is the count of
    sizes, or several counts to choose among: the count with the best ``score - size_cost *
    count`` (ties: fewer sizes). ``fixed_*`` keep a given value (the user's); fitting then
    chooses only the other. Over ``max_boxes`` boxes a deterministic sample is scored (drawn in
    proportion to ``weights``, so that a rare class is not left out)."""
    sample_boxes, sample_padded, sample_w = boxes, padded, weights
    if len(boxes) > max_boxes:
        rng = np.random.default_rng(seed)
        if weights is None:
            idx = rng.choice(len(boxes), max_boxes, replace=False)
        else:   # importance sample: the sample's plain mean estimates the weighted mean
            idx = rng.choice(len(boxes), max_boxes, replace=True, p=weights / weights.sum())
        sample_boxes, sample_padded, sample_w = boxes[idx], padded[idx], None
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    counts = [len(fixed_sizes)] if fixed_sizes else ([num_sizes] if isinstance(num_sizes, int) else list(num_sizes))
    ratio_sets = [fixed_ratios] if fixed_ratios else _ratio_sets(h / w, len(default_ratios), default_ratios, weights)
    ladders = {n: [fixed_sizes] if fixed_sizes else _ladders(np.sqrt(w * h), n, weights) for n in counts}
    # every anchor shape of every candidate at once: its best IoU with each box, one column per shape
    all_sizes = sorted({int(si) for sets in ladders.values() for sizes in sets for si in sizes})
    all_ratios = sorted({float(r) for rs in ratio_sets for r in rs})
    table = shape_iou(sample_boxes, sample_padded, stride, all_sizes, all_ratios)
    column = {(si, r): i * len(all_sizes) + j for i, r in enumerate(all_ratios) for j, si in enumerate(all_sizes)}
    best, best_key = None, None
    for n in counts:
        for sizes in ladders[n]:
            for ratios in ratio_sets:
                # the grid's best IoU over a set of shapes is the largest of each shape's best
                iou = table[:, [column[(int(si), float(r))] for r in ratios for si in sizes]].max(axis=1)
                score = _share(iou >= fg_iou, sample_w) + _share(iou >= min(0.5, fg_iou), sample_w)
                key = (round(score - size_cost * len(sizes), 9), -len(sizes), -math.log(sizes[-1] / sizes[0]))
                if best_key is None or key > best_key:   # ties: fewer sizes, then the narrower ladder
                    best, best_key = (tuple(int(v) for v in sizes), tuple(ratios)), key
    assert best is not None
    return best


# --- InstanceFCN: window sizes ---------------------------------------------------------------------

def _window_ok(boxes: np.ndarray, window_sizes: Sequence[float], object_fill: float) -> np.ndarray:
    """bool[N]: the box's ideal window (longer side / ``object_fill``) lies within half a 1.5x
    step (a factor 1.5**0.5) of some window size."""
    ideal = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / object_fill
    dist = np.abs(np.log(ideal)[:, None] - np.log(np.asarray(window_sizes, dtype=np.float64))[None]).min(1)
    return dist <= 0.5 * math.log(1.5) + 1e-9


def window_coverage(boxes: np.ndarray, window_sizes: Sequence[float], object_fill: float,
                    weights: np.ndarray | None = None) -> float:
    """InstanceFCN: share of boxes (each counting ``weights``, None: 1) whose ideal window
    (longer side / ``object_fill``) lies within half a 1.5x step (a factor 1.5**0.5) of some
    window size; 1.0 for no boxes."""
    if len(boxes) == 0:
        return 1.0
    return _share(_window_ok(boxes, window_sizes, object_fill), weights)


def fit_window_sizes(boxes: np.ndarray, object_fill: float, max_count: int,
                     weights: np.ndarray | None = None) -> tuple[float, ...]:
    """Window sizes 1.5x apart spanning the 2%..98% (weighted) quantiles of the boxes' ideal
    windows (at most ``max_count``, centred on that range)."""
    ideal = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / object_fill
    lo, hi = (float(v) for v in weighted_quantile(ideal, [0.02, 0.98], weights))
    n = min(max_count, max(1, int(math.ceil(math.log(hi / lo) / math.log(1.5))) + 1))
    start = math.sqrt(lo * hi) / 1.5 ** ((n - 1) / 2)
    return tuple(round(start * 1.5 ** i, 1) for i in range(n))


# --- per model -------------------------------------------------------------------------------------

#: ``fcis train --anchors`` values: the class-balanced fit, the fit by box count (the fit before
#: issue 22, kept for ablations), and the model's own (the paper's) anchors.
ANCHOR_MODES = ("fit", "fit-boxes", "paper")


def anchor_levels(config: Any, sizes: Sequence[int], ratios: Sequence[float]) -> list:
    """The ``(stride, sizes, ratios)`` levels of :func:`best_iou` for a model with ``config``:
    Mask R-CNN's FPN P2..P6 at strides 4..64 with one size each; else one RPN level on conv4."""
    if isinstance(config, MaskRCNNConfig):
        return [(4 * 2 ** i, (si,), tuple(ratios)) for i, si in enumerate(sizes)]
    return [(RPN_STRIDE, tuple(sizes), tuple(ratios))]


def covered(config: Any, boxes: np.ndarray, padded: np.ndarray, fields: dict[str, Any] | None = None) -> np.ndarray | None:
    """bool[N]: which boxes (at the input scale) the anchors (or windows) of ``config`` -- with
    ``fields`` replacing its own -- cover; None for a model without either."""
    fields = fields or {}
    if hasattr(config, "window_sizes"):
        return _window_ok(boxes, fields.get("window_sizes", config.window_sizes), config.object_fill)
    if not hasattr(config, "anchor_sizes"):
        return None
    levels = anchor_levels(config, fields.get("anchor_sizes", config.anchor_sizes),
                           fields.get("aspect_ratios", config.aspect_ratios))
    return best_iou(boxes, padded, levels) >= config.rpn_fg_iou


def fit_for_model(model_name: str, defaults: Any, coco, *, given: dict[str, Any], paper: bool = False,
                  balanced: bool = True, table: BoxTable | None = None) -> AnchorFit | None:
    """Fit the anchors of ``model_name`` (its default config ``defaults``, any object with the
    fields) to the boxes of ``coco`` (a :class:`fcis.data.CocoInstances`, read from its flat index,
    or a pycocotools COCO) at ``defaults.min_size/max_size``. ``given`` holds the user's overrides
    (they are kept); ``paper=True`` keeps the defaults and only measures them. ``balanced``: each
    class weighs the same in the fit (COCO AP's mean over classes); False: each box (the fit before
    issue 22). FCIS chooses its count of sizes (:data:`SIZE_COUNTS`, :data:`SIZE_COST`) unless sizes
    are given; Mask R-CNN keeps one size per FPN level, and InstanceFCN at most the model's count of
    windows. ``table``: the boxes already read (else read from ``coco``). A file of more than
    :data:`FIT_MAX_BOXES` boxes is fitted and measured on a deterministic sample of them. Returns
    the fields to set on the model (in ``.fields``) with the coverage, or None for a model without
    anchors."""
    table = table if table is not None else box_table(coco)
    names = category_names(coco)
    boxes, padded, labels = table.at_input(defaults.min_size, defaults.max_size)
    total, keep = len(boxes), box_sample(len(boxes))
    sampled = []
    if keep is not None:
        boxes, padded, labels = boxes[keep], padded[keep], labels[keep]
        sampled = [f"fitted and measured on a deterministic sample of {len(boxes)} of the {total} boxes"]
    weights = class_weights(labels) if balanced else None
    weighing = "classes" if balanced else "boxes"

    def result(fields: dict[str, Any], source: str, notes: list[str] | None = None) -> AnchorFit:
        chosen = Coverage.of(covered(defaults, boxes, padded, fields), labels, names)  # type: ignore[arg-type]
        default = Coverage.of(covered(defaults, boxes, padded), labels, names)         # type: ignore[arg-type]
        return AnchorFit(fields, chosen, default, len(boxes), source, weighing, list(notes or []) + sampled)

    if hasattr(defaults, "window_sizes"):          # InstanceFCN
        if "window_sizes" in given or paper or len(boxes) == 0:
            ws = tuple(given.get("window_sizes", defaults.window_sizes))
            return result({"window_sizes": ws}, "given" if "window_sizes" in given else "paper")
        ws = fit_window_sizes(boxes, defaults.object_fill, len(defaults.window_sizes), weights)
        return result({"window_sizes": ws}, "fitted")
    if not hasattr(defaults, "anchor_sizes"):
        return None
    fpn = isinstance(defaults, MaskRCNNConfig)   # Mask R-CNN: one size per FPN level
    fg_iou = defaults.rpn_fg_iou
    sizes = tuple(given.get("anchor_sizes", defaults.anchor_sizes))
    ratios = tuple(given.get("aspect_ratios", defaults.aspect_ratios))
    user = "anchor_sizes" in given or "aspect_ratios" in given
    if paper or len(boxes) == 0 or ("anchor_sizes" in given and "aspect_ratios" in given):
        return result({"anchor_sizes": sizes, "aspect_ratios": ratios}, "given" if user else "paper")
    source = "fitted" if not user else "fitted (partly given)"
    if fpn:
        # one ladder of doubling sizes over the five levels: choose its base (and the ratios)
        side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        cands = [tuple(base * 2 ** i for i in range(len(defaults.anchor_sizes))) for base in
                 sorted({max(2, int(round(v))) for v in weighted_quantile(side, [0.02, 0.05, 0.1, 0.2, 0.3], weights)})]
        if "anchor_sizes" in given:
            cands = [sizes]
        rsets = [ratios] if "aspect_ratios" in given else _ratio_sets(
            (boxes[:, 3] - boxes[:, 1]) / (boxes[:, 2] - boxes[:, 0]), len(ratios), tuple(defaults.aspect_ratios), weights)
        scored = [(anchor_coverage(boxes, padded, anchor_levels(defaults, s, r), fg_iou, weights), -s[0], s, r)
                  for s in cands for r in rsets]
        _, _, sizes, ratios = max(scored)
        return _keep_better(result({"anchor_sizes": sizes, "aspect_ratios": ratios}, source), defaults, user)
    fixed_sizes = tuple(given["anchor_sizes"]) if "anchor_sizes" in given else None
    sizes, ratios = fit_anchors(boxes, padded, num_sizes=SIZE_COUNTS if balanced else len(defaults.anchor_sizes),
                                default_ratios=tuple(defaults.aspect_ratios), stride=RPN_STRIDE, fg_iou=fg_iou,
                                fixed_sizes=fixed_sizes,
                                fixed_ratios=tuple(given["aspect_ratios"]) if "aspect_ratios" in given else None,
                                weights=weights)
    fit = result({"anchor_sizes": sizes, "aspect_ratios": ratios}, source)
    if balanced and fixed_sizes is None:
        fit.notes.append(f"{len(sizes)} sizes chosen among {SIZE_COUNTS[0]}-{SIZE_COUNTS[-1]} (the model has "
                         f"{len(defaults.anchor_sizes)}): each size kept adds at least {100 * SIZE_COST:.1f} points "
                         "of class-balanced coverage (IoU 0.7 plus IoU 0.5)")
    return _keep_better(fit, defaults, user)


def _keep_better(fit: AnchorFit, defaults: Any, user: bool) -> AnchorFit:
    """The fit, unless the model's defaults cover more boxes (then those, said so)."""
    if user or fit.coverage >= fit.default_coverage:
        return fit
    return AnchorFit({"anchor_sizes": tuple(defaults.anchor_sizes), "aspect_ratios": tuple(defaults.aspect_ratios)},
                     fit.default, fit.default, fit.num_boxes, "paper", fit.weighing,
                     [f"the fit ({fit.fields}) covered fewer boxes ({100 * fit.coverage:.1f}%): defaults kept"])
