"""Issue 22, item 1: what the bare ``fcis train`` chooses (input size, anchors and their count)
and the coverage it gets, against the fit before (by box count, the model's 4 sizes, at the
input size given before), per class. No training: seconds per dataset.

    python -m benchmarks.anchor_choice --out /tmp/choice                 # PennFudanPed, balloon, shapes, street-like
    python -m benchmarks.anchor_choice --out /tmp/choice --json a.json --json b.json   # any COCO files

``street-like`` is a synthetic box set (no pixels) modelled on the issue's description of its
held-out street photos: 66 images 1024x1024, about 35 boxes each, 10 classes from small signs
and poles to façades (1,505 windows, 81 façades, 36 cars, 44 streets, ...; 40% of the boxes under
32 px at the 600 px input, the issue's set had 34%); it shows what class balance changes where one class
outnumbers the others. The others are the real sets of ``benchmarks.real_photos`` and the
synthetic shapes of benchmarks/DEFAULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

#: The street-like classes: (name, boxes, sqrt(w*h) range in px at 1024, log(h/w) centre, spread).
STREET = (("window", 1505, (30, 160), 0.2, 0.3), ("facade", 81, (200, 1000), 0.0, 0.4),
          ("car", 36, (40, 200), -0.7, 0.2), ("street", 44, (200, 1000), -1.2, 0.4),
          ("person", 180, (20, 150), 1.0, 0.2), ("door", 120, (30, 120), 0.8, 0.2),
          ("sign", 90, (10, 60), 0.0, 0.3), ("tree", 60, (60, 400), 0.3, 0.3),
          ("pole", 110, (10, 50), 1.6, 0.3), ("balcony", 64, (30, 200), -0.6, 0.3))


def street_like(path: Path, seed: int = 0) -> Path:
    """A COCO file of boxes only (no image files: nothing here reads pixels)."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "file_name": f"none/{i}.jpg", "height": 1024, "width": 1024} for i in range(66)]
    anns: list[dict[str, Any]] = []
    for cat, (_name, n, (lo, hi), r0, spread) in enumerate(STREET, start=1):
        s = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
        r = np.exp(rng.normal(r0, spread, n))
        w, h = np.minimum(s / np.sqrt(r), 1000), np.minimum(s * np.sqrt(r), 1000)
        x, y = rng.uniform(0, 1024 - w), rng.uniform(0, 1024 - h)
        for k in range(n):
            anns.append({"id": len(anns) + 1, "image_id": int(rng.integers(1, 67)), "category_id": cat,
                         "bbox": [float(x[k]), float(y[k]), float(w[k]), float(h[k])], "area": float(w[k] * h[k]),
                         "iscrowd": 0})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": i + 1, "name": c[0]} for i, c in enumerate(STREET)]}))
    return path


def measure(name: str, json_path: Path, before_size: tuple[int, int] | None) -> dict[str, Any]:
    """The bare command's choices on ``json_path`` and the fit before (box count, 4 sizes) at
    ``before_size`` (the size given before; None: the model's 600/1000)."""
    from pycocotools.coco import COCO

    from fcis.engine import TrainConfig
    from fcis.engine.anchor_fit import box_table, fit_for_model
    from fcis.engine.run_plan import plan_input_size
    from fcis.models import BUILDERS, FCISConfig

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(json_path))
    table = box_table(coco)
    builder = BUILDERS["fcis_resnet18"]
    size = plan_input_size(builder, len(coco.cats), False, {}, {}, TrainConfig(), table)
    assert size is not None
    out: dict[str, Any] = {"name": name, "input_size": size.to_dict(), "fits": {}}
    before = before_size or (600, 1000)
    for label, (mn, mx), balanced in (("before: fit by boxes, 4 sizes", before, False),
                                      ("before's fit at the new input", (size.min_size, size.max_size), False),
                                      ("now: class-balanced, count chosen", (size.min_size, size.max_size), True)):
        cfg = FCISConfig(num_classes=len(coco.cats), min_size=mn, max_size=mx)
        fit = fit_for_model("", cfg, coco, given={}, table=table, balanced=balanced)
        assert fit is not None
        out["fits"][label] = {"input": [mn, mx], **fit.to_dict()}
    return out


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| data | fit | input | anchor sizes | ratios | coverage: boxes / mean over classes | per class |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        for label, f in r["fits"].items():
            per = ", ".join(f"{k} {100 * v:.0f}" for k, v in f["chosen"]["per_class"].items())
            rows.append(f"| {r['name']} | {label} | {f['input'][0]}/{f['input'][1]} | "
                        f"{tuple(f['fields']['anchor_sizes'])} | {tuple(f['fields']['aspect_ratios'])} | "
                        f"{100 * f['chosen']['boxes']:.1f}% / {100 * f['chosen']['classes']:.1f}% | {per} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    from .accuracy import default_data_root
    from .real_photos import SIZES, prepare

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--data", type=Path, default=None, help="folder holding PennFudanPed/ and balloon/")
    p.add_argument("--json", action="append", type=Path, default=[], help="measure these COCO files instead")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sets: list[tuple[str, Path, tuple[int, int] | None]] = [(path.stem, path, None) for path in args.json]
    if not sets:
        root = args.data or default_data_root()
        for name in ("pennfudan", "balloon"):
            if (root / ("PennFudanPed" if name == "pennfudan" else "balloon")).is_dir():
                sets.append((name, prepare(name, root, args.out / "data")[0], SIZES[name]))
        from fcis.data import make_shapes

        shapes = make_shapes(args.out / "data" / "shapes", num_images=950, seed=11, image_size=(256, 256),
                             max_objects=6, val_fraction=0.158, min_object_size=20, max_object_fraction=0.47)
        sets.append(("shapes", shapes["train"], (256, 256)))
        sets.append(("street-like (synthetic boxes)", street_like(args.out / "data" / "street_like.json"), None))
    results = []
    for name, path, before in sets:
        r = measure(name, path, before)
        print(f"{name}: {r['input_size']['min_size']}/{r['input_size']['max_size']} -- {r['input_size']['reason']}",
              flush=True)
        results.append(r)
    (args.out / "anchor_choice.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
