"""Look before you train: a summary of a COCO instances dataset as the model will see it, and a
PNG of its box sizes and classes (drawn with Pillow, a dependency already; no matplotlib needed).

:func:`inspect_dataset` counts images, instances per image and per class, images without
objects, measures the boxes at the model's input scale (the resize of ``min_size``/``max_size``)
and their coverage by the model's anchors (see :mod:`fcis.engine.anchor_fit`) -- as a share of
the boxes, as a mean over classes (each class the same, as in COCO AP) and per class; measured on the
anchor fit's deterministic sample in a file of more boxes than ``FIT_MAX_BOXES`` -- and lists the
problems the data loader found (bad annotations dropped; with ``check_images`` also missing,
unreadable or wrongly sized images). It reads the dataset's flat index (no annotation objects).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .anchor_fit import Coverage, box_sample, category_names, covered, input_boxes

__all__ = ["DataReport", "inspect_dataset", "draw_report"]

SMALL, LARGE = 32, 96   # COCO's small / large limits (sqrt of the area, px)


@dataclass
class DataReport:
    """Counts and box statistics of a dataset (see :func:`inspect_dataset`). Box sizes are
    ``sqrt(w*h)`` at the input scale, float64[N]; ``ratios`` are ``h/w``."""

    name: str
    num_images: int
    num_instances: int
    empty_images: int
    per_image: np.ndarray                     # int[num_images]: instances of each image
    per_class: dict[str, int]
    sizes: np.ndarray
    ratios: np.ndarray
    input_size: tuple[int | None, int | None]  # (min_size, max_size)
    anchors: dict[str, Any]                   # the model's anchor fields
    coverage: float | None                    # share of the boxes the anchors cover
    crowd: int = 0
    problems: list[str] = field(default_factory=list)
    # per class (name): boxes, median size sqrt(w*h) at the input, anchor coverage (None without anchors)
    class_table: dict[str, dict[str, Any]] = field(default_factory=dict)
    balanced_coverage: float | None = None    # the mean of the classes' coverage (COCO AP's weighing)

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers (for config.json)."""
        q = (lambda p: float(np.quantile(self.sizes, p))) if len(self.sizes) else (lambda p: None)
        return {
            "images": self.num_images, "instances": self.num_instances, "empty_images": self.empty_images,
            "crowd": self.crowd,
            "instances_per_image": {"mean": float(self.per_image.mean()) if self.num_images else 0.0,
                                    "max": int(self.per_image.max()) if self.num_images else 0},
            "per_class": dict(self.per_class),
            "box_size_px": {"min": q(0), "p5": q(0.05), "median": q(0.5), "p95": q(0.95), "max": q(1)},
            "small_share": float(np.mean(self.sizes < SMALL)) if len(self.sizes) else 0.0,
            "input_size": list(self.input_size),
            "anchors": {k: list(v) for k, v in self.anchors.items()},
            "anchor_coverage": self.coverage, "anchor_coverage_per_class_mean": self.balanced_coverage,
            "per_class_at_input": {k: dict(v) for k, v in self.class_table.items()},
            "problems": list(self.problems),
        }

    def describe(self, short: bool = False) -> str:
        s = self.summary()
        b = s["box_size_px"]
        lines = [f"data {self.name}: {self.num_images} images ({self.empty_images} without objects), "
                 f"{self.num_instances} instances ({s['instances_per_image']['mean']:.1f} per image, at most "
                 f"{s['instances_per_image']['max']})" + (f", {self.crowd} crowd regions" if self.crowd else "")]
        lines.append("  per class: " + ", ".join(f"{k} {v}" for k, v in self.per_class.items()))
        if len(self.sizes):
            lines.append(f"  box size sqrt(w*h) at input {self.input_size[0]}/{self.input_size[1]}: min {b['min']:.0f}, "
                         f"5% {b['p5']:.0f}, median {b['median']:.0f}, 95% {b['p95']:.0f}, max {b['max']:.0f} px; "
                         f"{100 * s['small_share']:.0f}% under {SMALL} px")
        if self.anchors:
            anchors = "; ".join(f"{k} {tuple(v)}" for k, v in self.anchors.items())
            cov = "" if self.coverage is None else f" cover {100 * self.coverage:.1f}% of the boxes"
            if self.balanced_coverage is not None:
                cov += f", {100 * self.balanced_coverage:.1f}% per class on average"
            lines.append(f"  anchors {anchors}{cov}")
        lines += self.class_lines(limit=12 if short else 40)
        if self.problems:
            shown = self.problems if not short else self.problems[:3]
            lines.append(f"  problems ({len(self.problems)}): " + "; ".join(shown)
                         + ("; ..." if len(shown) < len(self.problems) else ""))
        else:
            lines.append("  problems: none found")
        return "\n".join(lines)

    def class_lines(self, limit: int = 40) -> list[str]:
        """A compact table: class, boxes, median size at the input, anchor coverage; with more
        than ``limit`` classes, the ``limit`` least covered (or smallest) and a count of the rest."""
        if not self.class_table:
            return []
        rows = list(self.class_table.items())
        has_cov = any(v.get("coverage") is not None for _, v in rows)
        shown = rows
        if len(rows) > limit:
            key = (lambda kv: (kv[1]["coverage"] if kv[1]["coverage"] is not None else 2.0)) if has_cov else (
                lambda kv: kv[1]["median_px"] if kv[1]["median_px"] is not None else 1e9)
            shown = sorted(rows, key=key)[:limit]
        width = max(5, *(len(k) for k, _ in shown))
        head = f"  {'class':<{width}}  {'boxes':>6}  {'median px':>9}" + ("  coverage" if has_cov else "")
        out = [head]
        for name, v in shown:
            med = "-" if v["median_px"] is None else f"{v['median_px']:.0f}"
            cov = "" if not has_cov else ("         -" if v["coverage"] is None else f"  {100 * v['coverage']:7.1f}%")
            out.append(f"  {name:<{width}}  {v['boxes']:>6}  {med:>9}{cov}")
        if len(shown) < len(rows):
            out.append(f"  ... {len(rows) - len(shown)} more classes (the {len(shown)} least covered shown)")
        return out


def inspect_dataset(dataset, model_config, *, check_images: bool = False) -> DataReport:
    """Summarise ``dataset`` (a :class:`fcis.data.CocoInstances`) for a model with
    ``model_config`` (its ``min_size``, ``max_size`` and anchor fields are used)."""
    index = dataset.index   # the flat index: counted in bulk, no annotation objects
    min_size, max_size = getattr(model_config, "min_size", None), getattr(model_config, "max_size", None)
    boxes, padded, labels = input_boxes(dataset, min_size, max_size)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    label_names = category_names(dataset)
    objects = ~index.ann_crowd
    crowd = int(index.ann_crowd.sum())
    per_image_arr = np.bincount(index.ann_image[objects], minlength=index.num_images).astype(np.int64)
    class_counts = np.bincount(dataset.ann_labels[objects], minlength=dataset.num_classes + 1)[1:]
    per_class = {name: int(n) for name, n in zip(dataset.class_names, class_counts)}
    anchors: dict[str, Any] = {}
    if hasattr(model_config, "window_sizes"):
        anchors = {"window_sizes": tuple(model_config.window_sizes)}
    elif hasattr(model_config, "anchor_sizes"):
        anchors = {"anchor_sizes": tuple(model_config.anchor_sizes), "aspect_ratios": tuple(model_config.aspect_ratios)}
    keep = box_sample(len(boxes))   # coverage: on the anchor fit's sample of a big file
    cov_boxes, cov_padded, cov_labels = (boxes, padded, labels) if keep is None else (boxes[keep], padded[keep],
                                                                                      labels[keep])
    ok = covered(model_config, cov_boxes, cov_padded)
    cov = Coverage.of(ok, cov_labels, label_names) if ok is not None else None
    sizes = np.sqrt(w * h)
    class_table: dict[str, dict[str, Any]] = {}
    for cid, name in label_names.items():
        mine = labels == cid
        class_table[name] = {"boxes": int(mine.sum()),
                             "median_px": float(np.median(sizes[mine])) if mine.any() else None,
                             "coverage": cov.per_class.get(name) if cov is not None and mine.any() else None}
    problems = [f"{Path(src).name}: {reason}" for src, reason in dataset.bad_samples]
    if check_images:
        problems += _image_problems(dataset)
    for name, n in per_class.items():
        if n == 0:
            problems.append(f"class {name!r} has no training instance")
    return DataReport(str(dataset.json_path), len(dataset.image_ids), int(per_image_arr.sum()),
                      int(np.sum(per_image_arr == 0)), per_image_arr, per_class, sizes,
                      h / np.maximum(w, 1e-9), (min_size, max_size), anchors, cov.boxes if cov is not None else None,
                      crowd, problems, class_table, cov.classes if cov is not None else None)


def _image_problems(dataset) -> list[str]:
    """Missing, unreadable or wrongly sized images (headers only: no pixel decoding)."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for i in range(len(dataset.image_ids)):
        (height, width), path = dataset.image_size(i), dataset.image_path(i)
        try:
            with Image.open(path) as im:
                size = im.size
        except FileNotFoundError:
            out.append(f"{path}: image file not found")
            continue
        except (UnidentifiedImageError, OSError) as e:
            out.append(f"{path}: unreadable image ({e})")
            continue
        if size != (width, height):
            out.append(f"{path}: image size {size[0]}x{size[1]} does not match the annotation file "
                       f"({width}x{height})")
    return out


# --- the picture ---------------------------------------------------------------------------------

def draw_report(report: DataReport, path: str | Path, default_anchors: tuple[float, ...] = ()) -> Path:
    """A PNG with three histograms: box sizes at the input scale (log bins, the report's anchor
    sizes marked in red, ``default_anchors`` in grey), instances per class, instances per image."""
    from PIL import Image, ImageDraw

    W, H, pad = 1200, 420, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, 8), f"{report.name}: {report.num_images} images, {report.num_instances} instances, "
                     f"{report.empty_images} without objects; input {report.input_size[0]}/{report.input_size[1]}"
           + ("" if report.coverage is None else f"; anchor coverage {100 * report.coverage:.1f}%"), fill="black")
    panel_w = (W - 4 * pad) // 3
    panels = [(pad + i * (panel_w + pad), 50, panel_w, H - 110) for i in range(3)]
    # 1. box sizes, log2 bins
    marks = [float(v) for v in report.anchors.get("anchor_sizes", report.anchors.get("window_sizes", ()))]
    greys = [float(v) for v in default_anchors]
    if len(report.sizes):
        lo = 2 ** math.floor(math.log2(max(1.0, min(report.sizes.min(), *(marks + greys or [1e9])))))
        hi = 2 ** math.ceil(math.log2(max(report.sizes.max(), *(marks + greys or [0])) + 1e-9))
        edges = np.exp(np.linspace(math.log(lo), math.log(hi), 25))
        counts, _ = np.histogram(report.sizes, bins=edges)
        _bars(d, panels[0], counts.tolist(), "box size sqrt(w*h), px (log); anchors: red" + (", defaults grey" if greys else ""),
              [f"{lo:g}", f"{math.sqrt(lo * hi):.0f}", f"{hi:g}"])
        x0, y0, pw, ph = panels[0]
        for colour, values in (((150, 150, 150), greys), ((220, 30, 30), marks)):
            for m in values:
                if lo <= m <= hi:
                    x = x0 + pw * math.log(m / lo) / math.log(hi / lo)
                    d.line([(x, y0), (x, y0 + ph)], fill=colour, width=2)
    else:
        _bars(d, panels[0], [], "box size: no boxes", [])
    # 2. classes
    names = list(report.per_class)
    _bars(d, panels[1], [report.per_class[n] for n in names], "instances per class",
          names if len(names) <= 8 else [names[0], "...", names[-1]])
    # 3. instances per image
    top = int(report.per_image.max()) if report.num_images else 0
    counts = np.bincount(report.per_image, minlength=top + 1).tolist() if report.num_images else []
    _bars(d, panels[2], counts, "instances per image (0 .. max)", ["0", str(top)] if counts else [])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _bars(d, panel, counts: list[int], title: str, ticks: list[str]) -> None:
    x0, y0, w, h = panel
    d.rectangle([x0, y0, x0 + w, y0 + h], outline=(120, 120, 120))
    d.text((x0, y0 + h + 22), title, fill="black")
    if counts:
        top = max(max(counts), 1)
        bw = w / len(counts)
        for i, c in enumerate(counts):
            if c:
                d.rectangle([x0 + i * bw + 1, y0 + h - h * c / top, x0 + (i + 1) * bw - 1, y0 + h], fill=(60, 110, 200))
        d.text((x0 + 2, y0 + 2), f"max {top}", fill="black")
    for i, t in enumerate(ticks):
        if len(ticks) == len(counts):   # one label under each bar
            x = x0 + w * (i + 0.5) / len(counts) - 3 * len(t)
        else:
            x = x0 + (w * i / max(1, len(ticks) - 1) if len(ticks) > 1 else w / 2)
        d.text((min(x, x0 + w - 6 * len(t)), y0 + h + 5), t, fill="black")
