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

**Fitting** keeps the model's anchor count (``len(anchor_sizes) x len(aspect_ratios)``) and
searches geometric size ladders between quantiles of the boxes' ``sqrt(w*h)`` and ratio sets
(the paper's 0.5/1/2, quantiles of ``log(h/w)``, symmetric spreads), scoring each by its coverage
at the RPN's IoU plus its coverage at IoU 0.5 (so that no part of the size range is given up for
a denser cover of the rest) on (a deterministic sample of) the boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator

from ..models.maskrcnn.config import MaskRCNNConfig

__all__ = ["AnchorFit", "input_boxes", "box_sample", "resized_size", "anchor_coverage", "fit_anchors",
           "fit_window_sizes", "window_coverage", "POOR_COVERAGE", "fit_for_model"]

#: Below this share of covered boxes the fit is reported as poor.
POOR_COVERAGE = 0.6
#: More boxes than this (COCO has 860k) are fitted and measured on a deterministic sample of this
#: many: the coverage's standard error stays under 0.4 points, the fit under a few seconds.
FIT_MAX_BOXES = 20000
SIZE_DIVISIBLE = 32   # GeneralizedRCNNTransform pads the batch to a multiple of this
RPN_STRIDE = 16       # FCIS's RPN runs on conv4 (stride 16 with or without the dilated conv5)


@dataclass
class AnchorFit:
    """What was chosen: ``fields`` (model config values, e.g. ``anchor_sizes``), the share of
    training boxes covered with them, and the same for the model's default anchors."""

    fields: dict[str, Any]
    coverage: float
    default_coverage: float
    num_boxes: int
    source: str                       # "fitted", "given" (--set) or "paper"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"fields": {k: list(v) if isinstance(v, tuple) else v for k, v in self.fields.items()},
                "coverage": self.coverage, "default_coverage": self.default_coverage,
                "num_boxes": self.num_boxes, "source": self.source, "notes": list(self.notes)}

    def describe(self) -> str:
        vals = ", ".join(f"{k}={tuple(v) if isinstance(v, (list, tuple)) else v}" for k, v in self.fields.items())
        text = (f"anchors ({self.source}): {vals}; cover {100 * self.coverage:.1f}% of {self.num_boxes} "
                f"training boxes (the paper's defaults: {100 * self.default_coverage:.1f}%)")
        if self.coverage < POOR_COVERAGE:
            text += (f"\nWARNING: only {100 * self.coverage:.1f}% of the training boxes have an anchor at the "
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


def input_boxes(data, min_size: int | None, max_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Non-crowd boxes at the input scale (None: as stored) of ``data``: a
    :class:`fcis.data.CocoInstances` (read from its flat index, vectorised) or a pycocotools
    ``COCO``. Boxes come image by image in file order, each image's in file order.

    Returns ``boxes`` float64[N, 4] xyxy in input pixels and ``padded`` int64[N, 2], the padded
    (height, width) of each box's image (a multiple of 32)."""
    index = getattr(data, "index", None)
    if index is None:
        boxes, padded = _coco_input_boxes(data, min_size, max_size)
    else:
        rows = index.image_ann_order
        rows = rows[~index.ann_crowd[rows]]
        img = index.ann_image[rows]
        h, w = index.heights.astype(np.float64)[img], index.widths.astype(np.float64)[img]
        if min_size and max_size:   # resized_size, vectorised (the same float64 operations)
            scale = np.minimum(min_size / np.minimum(h, w), max_size / np.maximum(h, w))
            nh, nw = np.floor(h * scale), np.floor(w * scale)
        else:
            nh, nw = h, w
        x, y, bw, bh = index.ann_bbox[rows].T
        x1, y1, x2, y2 = np.maximum(x, 0.0), np.maximum(y, 0.0), np.minimum(x + bw, w), np.minimum(y + bh, h)
        ok = (x2 > x1) & (y2 > y1)
        boxes = np.stack([x1 * nw / w, y1 * nh / h, x2 * nw / w, y2 * nh / h], 1)[ok]
        padded = (np.stack([np.ceil(nh / SIZE_DIVISIBLE), np.ceil(nw / SIZE_DIVISIBLE)], 1)[ok]
                  * SIZE_DIVISIBLE).astype(np.int64)
    return boxes, padded


def box_sample(total: int, limit: int = FIT_MAX_BOXES) -> np.ndarray | None:
    """Sorted indices of a deterministic sample of ``limit`` of ``total`` boxes (the same for the
    same counts), or None when ``total <= limit`` (use them all)."""
    if total <= limit:
        return None
    return np.sort(np.random.default_rng(0).choice(total, limit, replace=False))


def _coco_input_boxes(coco, min_size: int | None, max_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`input_boxes` of a pycocotools ``COCO``."""
    boxes, padded = [], []
    for img_id, img in coco.imgs.items():
        h, w = int(img["height"]), int(img["width"])
        nh, nw = resized_size(h, w, min_size, max_size) if min_size and max_size else (h, w)
        ph, pw = (int(math.ceil(v / SIZE_DIVISIBLE) * SIZE_DIVISIBLE) for v in (nh, nw))
        for ann in coco.imgToAnns.get(img_id, []):
            if ann.get("iscrowd", 0):
                continue
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)
            if x2 <= x1 or y2 <= y1:
                continue
            boxes.append([x1 * nw / w, y1 * nh / h, x2 * nw / w, y2 * nh / h])
            padded.append([ph, pw])
    return (np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(padded, dtype=np.int64).reshape(-1, 2))


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
    b = torch.as_tensor(boxes, dtype=torch.float32)
    best = torch.zeros(len(b))
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    pad = torch.as_tensor(padded)
    for stride, sizes, ratios in levels:
        cell = _cell_anchors(sizes, ratios)                       # (A, 4)
        nx, ny = (pad[:, 1] + stride - 1) // stride, (pad[:, 0] + stride - 1) // stride  # grid cells
        for gx in (torch.floor(cx / stride), torch.floor(cx / stride) + 1):
            for gy in (torch.floor(cy / stride), torch.floor(cy / stride) + 1):
                sx = torch.minimum(gx.clamp(min=0), (nx - 1).float()) * stride
                sy = torch.minimum(gy.clamp(min=0), (ny - 1).float()) * stride
                shift = torch.stack([sx, sy, sx, sy], dim=1)     # (N, 4)
                anchors = shift[:, None, :] + cell[None]          # (N, A, 4)
                best = torch.maximum(best, _paired_iou(b, anchors).amax(dim=1))
    return best.double().numpy()


def _paired_iou(b: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of box ``b[i]`` with each ``anchors[i, a]`` (the formula of ``torchvision.ops.box_iou``)."""
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    area_a = (anchors[..., 2] - anchors[..., 0]) * (anchors[..., 3] - anchors[..., 1])
    lt = torch.maximum(b[:, None, :2], anchors[..., :2])
    rb = torch.minimum(b[:, None, 2:], anchors[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_b[:, None] + area_a - inter)


def anchor_coverage(boxes: np.ndarray, padded: np.ndarray, levels, fg_iou: float) -> float:
    """Share of ``boxes`` whose best anchor IoU is ``>= fg_iou`` (the RPN's positive rule);
    1.0 for no boxes. ``levels`` as in :func:`best_iou`."""
    if len(boxes) == 0:
        return 1.0
    return float(np.mean(best_iou(boxes, padded, levels) >= fg_iou))


def _ladders(s: np.ndarray, n: int) -> list[tuple[int, ...]]:
    """Candidate size ladders of ``n`` integers: geometric between quantile pairs of ``s``."""
    out = []
    for qlo in (0.02, 0.05, 0.1, 0.2):
        for qhi in (0.8, 0.9, 0.95, 0.98):
            lo, hi = float(np.quantile(s, qlo)), float(np.quantile(s, qhi))
            ladder = np.exp(np.linspace(math.log(lo), math.log(max(hi, lo)), n)) if n > 1 else [math.sqrt(lo * hi)]
            sizes = tuple(int(max(2, round(v))) for v in ladder)
            if len(set(sizes)) == n and sizes not in out:
                out.append(sizes)
    return out or [tuple(int(max(2, round(float(np.median(s)) * 2 ** (i - (n - 1) / 2)))) for i in range(n))]


def _ratio_sets(r: np.ndarray, m: int, default: tuple[float, ...]) -> list[tuple[float, ...]]:
    """Candidate aspect-ratio sets (h/w) of ``m`` values."""
    sets = [tuple(default)] if len(default) == m else []
    if m == 1:
        return sets + [(round(float(np.exp(np.median(np.log(r)))), 3),)]
    q = np.exp(np.quantile(np.log(r), [(i + 0.5) / m for i in range(m)]))
    sets.append(tuple(round(float(v), 3) for v in q))
    for spread in (1.5, 2.0, 3.0):
        sets.append(tuple(round(float(spread ** (2 * i / (m - 1) - 1)), 3) for i in range(m)))
    return [s for i, s in enumerate(sets) if len(set(s)) == m and s not in sets[:i]]


def fit_anchors(boxes: np.ndarray, padded: np.ndarray, *, num_sizes: int, default_ratios: tuple[float, ...],
                stride: int, fg_iou: float, fixed_sizes: tuple[int, ...] | None = None,
                fixed_ratios: tuple[float, ...] | None = None, max_boxes: int = 3000, seed: int = 0
                ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Anchor sizes (``num_sizes`` of them, increasing ints) and ratios (as many as
    ``default_ratios``) that cover the most ``boxes`` on a single-level grid of ``stride``.
    ``fixed_*`` keep a given value (the user's); fitting then chooses only the other."""
    sample = boxes, padded
    if len(boxes) > max_boxes:
        idx = np.random.default_rng(seed).choice(len(boxes), max_boxes, replace=False)
        sample = boxes[idx], padded[idx]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    size_sets = [fixed_sizes] if fixed_sizes else _ladders(np.sqrt(w * h), num_sizes)
    ratio_sets = [fixed_ratios] if fixed_ratios else _ratio_sets(h / w, len(default_ratios), default_ratios)
    best, best_key = None, None
    for sizes in size_sets:
        for ratios in ratio_sets:
            iou = best_iou(*sample, [(stride, sizes, ratios)])
            # coverage at the RPN's IoU, plus at 0.5 so that no size range is given up entirely
            score = float(np.mean(iou >= fg_iou)) + float(np.mean(iou >= min(0.5, fg_iou)))
            key = (score, -math.log(sizes[-1] / sizes[0]))   # ties: the narrower ladder
            if best_key is None or key > best_key:
                best, best_key = (tuple(sizes), tuple(ratios)), key
    assert best is not None
    return best


# --- InstanceFCN: window sizes ---------------------------------------------------------------------

def window_coverage(boxes: np.ndarray, window_sizes: Sequence[float], object_fill: float) -> float:
    """InstanceFCN: share of boxes whose ideal window (longer side / ``object_fill``) lies within
    half a 1.5x step (a factor 1.5**0.5) of some window size; 1.0 for no boxes."""
    if len(boxes) == 0:
        return 1.0
    ideal = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / object_fill
    dist = np.abs(np.log(ideal)[:, None] - np.log(np.asarray(window_sizes, dtype=np.float64))[None]).min(1)
    return float(np.mean(dist <= 0.5 * math.log(1.5) + 1e-9))


def fit_window_sizes(boxes: np.ndarray, object_fill: float, max_count: int) -> tuple[float, ...]:
    """Window sizes 1.5x apart spanning the 2%..98% quantiles of the boxes' ideal windows (at
    most ``max_count``, centred on that range)."""
    ideal = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / object_fill
    lo, hi = (float(v) for v in np.quantile(ideal, [0.02, 0.98]))
    n = min(max_count, max(1, int(math.ceil(math.log(hi / lo) / math.log(1.5))) + 1))
    start = math.sqrt(lo * hi) / 1.5 ** ((n - 1) / 2)
    return tuple(round(start * 1.5 ** i, 1) for i in range(n))


# --- per model -------------------------------------------------------------------------------------

def fit_for_model(model_name: str, defaults: Any, coco, *, given: dict[str, Any], paper: bool = False
                  ) -> AnchorFit | None:
    """Fit the anchors of ``model_name`` (its default config ``defaults``, any object with the
    fields) to the boxes of ``coco`` (a :class:`fcis.data.CocoInstances` or a pycocotools COCO)
    at ``defaults.min_size/max_size``. ``given`` holds the user's overrides (they are kept);
    ``paper=True`` keeps the defaults and only measures them. Returns the fields to set on the
    model (in ``.fields``) with the coverage, or None for a model without anchors. A file of more
    than :data:`FIT_MAX_BOXES` boxes is fitted and measured on a deterministic sample of them."""
    boxes, padded = input_boxes(coco, defaults.min_size, defaults.max_size)
    total, keep = len(boxes), box_sample(len(boxes))
    if keep is not None:
        boxes, padded = boxes[keep], padded[keep]
    fit = _fit_boxes(boxes, padded, defaults, given=given, paper=paper)
    if fit is not None and keep is not None:
        fit.notes.append(f"fitted and measured on a deterministic sample of {len(boxes)} of the {total} boxes")
    return fit


def _fit_boxes(boxes: np.ndarray, padded: np.ndarray, defaults: Any, *, given: dict[str, Any], paper: bool
               ) -> AnchorFit | None:
    """:func:`fit_for_model` on the boxes given."""
    if hasattr(defaults, "window_sizes"):          # InstanceFCN
        default_cov = window_coverage(boxes, defaults.window_sizes, defaults.object_fill)
        if "window_sizes" in given or paper or len(boxes) == 0:
            ws = tuple(given.get("window_sizes", defaults.window_sizes))
            return AnchorFit({"window_sizes": ws}, window_coverage(boxes, ws, defaults.object_fill),
                             default_cov, len(boxes), "given" if "window_sizes" in given else "paper")
        ws = fit_window_sizes(boxes, defaults.object_fill, len(defaults.window_sizes))
        return AnchorFit({"window_sizes": ws}, window_coverage(boxes, ws, defaults.object_fill), default_cov,
                         len(boxes), "fitted")
    if not hasattr(defaults, "anchor_sizes"):
        return None
    fpn = isinstance(defaults, MaskRCNNConfig)   # Mask R-CNN: one size per FPN level
    fg_iou = defaults.rpn_fg_iou
    sizes = tuple(given.get("anchor_sizes", defaults.anchor_sizes))
    ratios = tuple(given.get("aspect_ratios", defaults.aspect_ratios))

    def levels(s, r):
        if fpn:   # P2..P6 at strides 4..64, one size each
            return [(4 * 2 ** i, (si,), r) for i, si in enumerate(s)]
        return [(RPN_STRIDE, s, r)]   # FCIS: one RPN level, on conv4

    default_cov = anchor_coverage(boxes, padded, levels(defaults.anchor_sizes, defaults.aspect_ratios), fg_iou)
    user = "anchor_sizes" in given or "aspect_ratios" in given
    if paper or len(boxes) == 0 or ("anchor_sizes" in given and "aspect_ratios" in given):
        source = "given" if user else "paper"
        return AnchorFit({"anchor_sizes": sizes, "aspect_ratios": ratios},
                         anchor_coverage(boxes, padded, levels(sizes, ratios), fg_iou), default_cov, len(boxes), source)
    if fpn:
        # one ladder of doubling sizes over the five levels: choose its base (and the ratios)
        cands = []
        for base in sorted({max(2, int(round(v))) for v in
                            np.quantile(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])),
                                        [0.02, 0.05, 0.1, 0.2, 0.3]) / 1.0}):
            cands.append(tuple(base * 2 ** i for i in range(len(defaults.anchor_sizes))))
        if "anchor_sizes" in given:
            cands = [sizes]
        rsets = [ratios] if "aspect_ratios" in given else _ratio_sets(
            (boxes[:, 3] - boxes[:, 1]) / (boxes[:, 2] - boxes[:, 0]), len(ratios), tuple(defaults.aspect_ratios))
        scored = [(anchor_coverage(boxes, padded, levels(s, r), fg_iou), -s[0], s, r) for s in cands for r in rsets]
        cov, _, sizes, ratios = max(scored)
        return _keep_better(AnchorFit({"anchor_sizes": sizes, "aspect_ratios": ratios}, cov, default_cov, len(boxes),
                                      "fitted" if not user else "fitted (partly given)"), defaults, user)
    sizes, ratios = fit_anchors(boxes, padded, num_sizes=len(defaults.anchor_sizes),
                                default_ratios=tuple(defaults.aspect_ratios), stride=RPN_STRIDE, fg_iou=fg_iou,
                                fixed_sizes=tuple(given["anchor_sizes"]) if "anchor_sizes" in given else None,
                                fixed_ratios=tuple(given["aspect_ratios"]) if "aspect_ratios" in given else None)
    cov = anchor_coverage(boxes, padded, levels(sizes, ratios), fg_iou)
    return _keep_better(AnchorFit({"anchor_sizes": sizes, "aspect_ratios": ratios}, cov, default_cov, len(boxes),
                                  "fitted" if not user else "fitted (partly given)"), defaults, user)


def _keep_better(fit: AnchorFit, defaults: Any, user: bool) -> AnchorFit:
    """The fit, unless the model's defaults cover more boxes (then those, said so)."""
    if user or fit.coverage >= fit.default_coverage:
        return fit
    return AnchorFit({"anchor_sizes": tuple(defaults.anchor_sizes), "aspect_ratios": tuple(defaults.aspect_ratios)},
                     fit.default_coverage, fit.default_coverage, fit.num_boxes, "paper",
                     [f"the fit ({fit.fields}) covered fewer boxes ({100 * fit.coverage:.1f}%): defaults kept"])
