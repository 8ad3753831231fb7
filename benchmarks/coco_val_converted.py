"""A converted model (``fcis convert weights``) evaluated on COCO val2017: the paper's trained FCIS
in PyTorch, scored as ChainerCV scored its port (27.9 mask AP at 600 px; the official code: 29.2
on test-dev).

    python -m benchmarks.coco_val_converted --weights fcis_coco.pt --coco-root /data/coco --out /tmp/cocoval
    python -m benchmarks.coco_val_converted ... --limit 500        # the first 500 images only
    python -m benchmarks.run --only coco_val --set coco_val_weights=fcis_coco.pt --set coco_val_root=/data/coco

``--coco-root`` holds ``annotations/instances_val2017.json`` and ``val2017/`` (COCO's own
layout; or give ``--annotations`` and ``--images``). Without those files, or without the weights
file, it says what is missing and skips (exit status 0, ``{"skipped": ...}`` in the JSON): nothing
is downloaded. The model's classes are mapped to the dataset's categories by name (the converted
checkpoint holds COCO's names and ids); a class the dataset lacks is an error.

Writes ``OUT/coco_val_converted.json`` (metrics as ``fcis evaluate`` computes them, settings,
seconds per image, the machine) and ``OUT/COCO-VAL.md`` (the table beside the reference
figures), and prints the table. On a CPU, ResNet-101 at 600 px takes seconds per image: the
5000 images of val2017 take hours; ``--limit`` scores the first images (not comparable to the
full-set figure; the report says so).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

#: Reference mask AP figures (COCO AP@[0.5:0.95], in %) for the released FCIS ResNet-101 COCO model.
REFERENCES = {
    "chainercv_port_val": (27.9, "ChainerCV's conversion on COCO val (examples/fcis/README.md, 600 px)"),
    "official_test_dev": (29.2, "the paper / official code, COCO test-dev, ResNet-101 with OHEM"),
}


def locate(coco_root: str | None, annotations: str | None, images: str | None) -> tuple[Path, Path] | str:
    """``(annotations json, image folder)``, or why they cannot be used (a message)."""
    if annotations is None and coco_root is None:
        return "no --coco-root (or --annotations/--images) given"
    ann = Path(annotations) if annotations else Path(coco_root or ".") / "annotations" / "instances_val2017.json"
    img = Path(images) if images else (Path(coco_root) / "val2017" if coco_root else ann.parent)
    missing = [str(p) for p, ok in ((ann, ann.is_file()), (img, img.is_dir())) if not ok]
    if missing:
        return f"COCO val2017 files not found: {', '.join(missing)}"
    return ann, img


def _subset(ann: Path, limit: int, work: Path) -> Path:
    """The first ``limit`` images of ``ann`` (and their annotations) as a COCO file in ``work``."""
    data = json.loads(ann.read_text())
    keep = {im["id"] for im in data["images"][:limit]}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"{ann.stem}_first{limit}.json"
    out.write_text(json.dumps(data))
    return out


def label_mapping(model_names: list[str], data_names: list[str], data_label_to_cat: dict[int, int],
                  weights: str) -> dict[int, int]:
    """Model label -> dataset category id, by class name (case and ``_``/space differences
    ignored); raises ``ValueError`` for a model class the dataset lacks."""
    from fcis.weights.init_from import normalise_class_name

    by_name = {normalise_class_name(n): data_label_to_cat[i + 1] for i, n in enumerate(data_names)}
    missing = [n for n in model_names if normalise_class_name(n) not in by_name]
    if missing:
        raise ValueError(f"{weights}: classes {missing[:5]} are not categories of the dataset "
                         f"({len(missing)} of {len(model_names)} missing)")
    return {i + 1: by_name[normalise_class_name(n)] for i, n in enumerate(model_names)}


def run(weights: str | None, coco_root: str | None, out: Path, *, annotations: str | None = None,
        images: str | None = None, limit: int = 0, device: str = "cpu", progress: bool = True,
        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``weights`` on COCO val2017; the section's dict (``{"skipped": why}`` when the
    files are not there)."""
    import torch

    from fcis.data import CocoInstances
    from fcis.engine import load_model
    from fcis.engine.evaluator import predict_dataset_with_skips
    from fcis.evaluation import evaluate_results, format_metrics_table

    from .common import log, machine_info

    where = locate(coco_root, annotations, images)
    missing = [where] if isinstance(where, str) else []
    if weights is None or not Path(weights).is_file():
        missing.append(f"weights file not found: {weights}" if weights else "no --weights given")
    if missing or isinstance(where, str):
        log(f"coco_val: skipped: {'; '.join(missing)}")
        return {"skipped": "; ".join(missing)}
    ann, img = where
    ann_used = _subset(ann, limit, out / "work") if limit else ann
    model, meta = load_model(weights, device)
    for key, value in (overrides or {}).items():
        setattr(model.config, key, value)
    data = CocoInstances(ann_used, img)
    mapping = label_mapping(list(meta["class_names"]), list(data.class_names), dict(data.label_to_cat_id), weights)
    cfg: Any = model.config
    log(f"coco_val: {len(data)} images of {ann}{f' (first {limit})' if limit else ''}, {meta['model_name']} "
        f"at {cfg.min_size}/{cfg.max_size} px, {len(mapping)} classes")
    start = time.perf_counter()
    results, skipped = predict_dataset_with_skips(model, data, device, progress=progress, label_to_cat_id=mapping)
    seconds = time.perf_counter() - start
    metrics = evaluate_results(data.coco, results, skipped_images=skipped)
    table = format_metrics_table(metrics)
    print(table)
    return {
        "weights": str(weights), "annotations": str(ann), "images": str(img), "num_images": len(data),
        "limit": limit, "full_set": not limit, "model_name": meta["model_name"],
        "model_config": {k: getattr(cfg, k) for k in ("min_size", "max_size", "depth") if hasattr(cfg, k)},
        "metrics": metrics, "seconds": seconds, "seconds_per_image": seconds / max(1, len(data)),
        "skipped_images": len(skipped), "device": str(device), "threads": torch.get_num_threads(),
        "references": {k: {"mask_ap": v, "source": s} for k, (v, s) in REFERENCES.items()},
        "machine": machine_info(),
    }


def render(section: dict[str, Any] | None) -> str:
    """The Markdown of a ``run`` result (also section 9 of RESULTS.md)."""
    if not section:
        return ("Opt-in: `python -m benchmarks.run --only coco_val --set coco_val_weights=OUT.pt --set "
                "coco_val_root=COCO` (or `python -m benchmarks.coco_val_converted`); not run in this run.")
    if section.get("skipped"):
        return f"Skipped: {section['skipped']} (nothing is downloaded; give a converted model and COCO val2017)."
    if section.get("error"):
        return f"The section failed: `{section['error']}`"
    segm, bbox = section["metrics"]["segm"], section["metrics"]["bbox"]

    def pct(x: Any) -> str:
        return f"{100 * x:.1f}" if isinstance(x, (int, float)) and x >= 0 else "-"

    scope = ("all of val2017" if section.get("full_set") else
             f"the first {section['num_images']} images of val2017 only: **not comparable** to full-set figures")
    lines = [f"`{section['weights']}` ({section['model_name']}, {section['model_config'].get('min_size')}/"
             f"{section['model_config'].get('max_size')} px) on {scope}; {section['seconds_per_image']:.2f} s per "
             f"image on {section['device']} ({section['threads']} threads).", "",
             "| | AP | AP50 | AP75 | APs | APm | APl |", "| --- | --- | --- | --- | --- | --- | --- |",
             "| mask (segm) | " + " | ".join(pct(segm.get(k)) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")) + " |",
             "| box | " + " | ".join(pct(bbox.get(k)) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")) + " |", "",
             "Reference mask AP: " + "; ".join(f"{v['mask_ap']} ({v['source']})"
                                              for v in section["references"].values()) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="an fcis checkpoint, e.g. written by fcis convert weights")
    parser.add_argument("--coco-root", help="folder with annotations/instances_val2017.json and val2017/")
    parser.add_argument("--annotations", help="the instances JSON (instead of --coco-root's)")
    parser.add_argument("--images", help="the image folder (instead of --coco-root's val2017/)")
    parser.add_argument("--out", default="coco_val_out", help="where the JSON and COCO-VAL.md go")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    section = run(args.weights, args.coco_root, out, annotations=args.annotations, images=args.images,
                  limit=args.limit, device=args.device, progress=not args.no_progress)
    command = "python -m benchmarks.coco_val_converted " + " ".join(argv if argv is not None else sys.argv[1:])
    section["command"] = command
    from fcis.json_io import jsonable

    (out / "coco_val_converted.json").write_text(json.dumps(jsonable(section), indent=1) + "\n")
    (out / "COCO-VAL.md").write_text(f"# A converted FCIS on COCO val2017\n\n`{command}`\n\n{render(section)}\n")
    print(render(section))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
