"""Issue 22, item 2: BatchNorm against GroupNorm from random weights, equal iterations, as a user runs it.

    OMP_NUM_THREADS=1 python -m benchmarks.norm_ablation --out /tmp/norm --datasets shapes
    OMP_NUM_THREADS=1 python -m benchmarks.norm_ablation --out /tmp/norm --datasets pennfudan --iterations 300

For each dataset, ``fcis train`` (the bare command: model, data, output, iterations, batch size 2,
input size, device) once per variant, the variants differing only by ``--set norm=bn`` or
``--set norm=gn`` (whatever the recipe's default), each scored by ``fcis evaluate`` on held-out
images. Datasets: ``shapes`` (benchmarks/DEFAULTS.md's unseen shapes: 800 train / 150 val,
256 px, made here with ``fcis make-shapes``), ``pennfudan`` (the benchmarks' fixed 130/40 split,
320/512) and ``balloon`` (61/13, 384/640; both from ``--data``, see benchmarks/real_photos.py).
Seconds per iteration: the median of ``log.jsonl``'s ``sec_per_iter`` (wall time, every 20
iterations), and the training's CPU seconds (user + system of the ``fcis train`` process and its
data-loading workers) per iteration, which a shared machine's load disturbs far less than wall
time. Runs are sequential; give the process one thread on a shared machine. Writes
``OUT/norm_ablation.json`` (kept between calls: a dataset or variant run again is replaced) and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
from pathlib import Path
from typing import Any

from .accuracy import default_data_root
from .real_photos import _metric, fcis, prepare

#: Input size (min, max) per dataset.
SIZES = {"shapes": (256, 256), "pennfudan": (320, 512), "balloon": (384, 640)}
#: benchmarks/DEFAULTS.md's unseen shapes.
SHAPES = ["--num-images", "950", "--seed", "11", "--image-size", "256", "256", "--max-objects", "6",
          "--val-fraction", "0.158", "--min-object-size", "20", "--max-object-fraction", "0.47"]


def data(name: str, out: Path, data_root: Path) -> tuple[Path, Path]:
    if name != "shapes":
        return prepare(name, data_root, out / "data")
    folder = out / "data" / "shapes"
    if not (folder / "val.json").exists():
        fcis("make-shapes", str(folder), *SHAPES, log=out / "make_shapes.log")
    return folder / "train.json", folder / "val.json"


def run_one(name: str, norm: str, train: Path, val: Path, out: Path, iterations: int, model: str) -> dict[str, Any]:
    run_dir = out / name / norm
    min_size, max_size = SIZES[name]
    cmd = ["train", "--model", model, "--train", str(train), "--output", str(run_dir), "--iterations",
           str(iterations), "--batch-size", "2", "--min-size", str(min_size), "--max-size", str(max_size),
           "--device", "cpu", "--overwrite", "--no-progress", "--log-every", "20", "--set", f"norm={norm}"]
    print(f"[{name}/{norm}] fcis {' '.join(cmd)}", flush=True)
    before = _children_cpu()
    train_s = fcis(*cmd, log=out / f"{name}_{norm}_train.log")
    train_cpu = _children_cpu() - before
    eval_dir = run_dir / "eval"
    eval_s = fcis("evaluate", "--weights", str(run_dir / "last.pt"), "--data", str(val), "--output", str(eval_dir),
                  "--device", "cpu", "--no-progress", log=out / f"{name}_{norm}_eval.log")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    per_iter = [rec["sec_per_iter"] for rec in lines if "sec_per_iter" in rec]
    record = {"command": "fcis " + " ".join(cmd), "train_s": train_s, "eval_s": eval_s, "train_cpu_s": train_cpu,
              "cpu_per_iter": train_cpu / iterations,
              "sec_per_iter": statistics.median(per_iter) if per_iter else None, "metrics": metrics,
              "final_losses": json.loads((run_dir / "summary.json").read_text()).get("losses")}
    print(f"[{name}/{norm}] {row(name, norm, record)}", flush=True)
    return record


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def row(name: str, norm: str, rec: dict[str, Any]) -> str:
    m = rec["metrics"]
    cells = [_metric(m, "segm", "AP"), _metric(m, "segm", "AP50"), _metric(m, "bbox", "AP"),
             _metric(m, "voc", "mAP@0.5"), _metric(m, "voc", "mAP@0.7")]
    spi, cpi = rec.get("sec_per_iter"), rec.get("cpu_per_iter")
    return (f"| {name} | {norm} | " + " | ".join("-" if c is None else f"{100 * c:.1f}" for c in cells)
            + f" | {'-' if cpi is None else f'{cpi:.2f}'} | {'-' if spi is None else f'{spi:.2f}'}"
            + f" | {rec['train_s']:.0f} s |")


def table(results: dict[str, Any]) -> str:
    rows = ["| data | norm | segm AP | AP50 | bbox AP | mAP^r@0.5 | mAP^r@0.7 | CPU s / iteration | wall s / iteration "
            "| train wall time |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, runs in results.get("datasets", {}).items():
        for norm, rec in runs.items():
            rows.append(row(name, norm, rec))
        if {"bn", "gn"} <= set(runs):
            ratios = [f"{runs['gn'][k] / runs['bn'][k]:.2f}" if runs["gn"].get(k) and runs["bn"].get(k) else "-"
                      for k in ("cpu_per_iter", "sec_per_iter")]
            rows.append(f"| {name} | gn / bn | | | | | | {ratios[0]} | {ratios[1]} | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--data", type=Path, default=None, help="folder holding PennFudanPed/ and balloon/")
    p.add_argument("--datasets", nargs="+", default=["shapes"], choices=sorted(SIZES))
    p.add_argument("--norms", nargs="+", default=["bn", "gn"], choices=["bn", "gn"])
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--model", default="fcis_resnet18")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data_root = args.data or default_data_root()
    results_file = args.out / "norm_ablation.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results["settings"] = {"model": args.model, "iterations": args.iterations, "batch_size": 2, "sizes": SIZES,
                           "threads": os.environ.get("OMP_NUM_THREADS")}
    for name in args.datasets:
        train, val = data(name, args.out, data_root)
        for norm in args.norms:
            rec = run_one(name, norm, train, val, args.out, args.iterations, args.model)
            results.setdefault("datasets", {}).setdefault(name, {})[norm] = rec
            results_file.write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
