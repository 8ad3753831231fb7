"""Issue 11 on real photos: the bare ``fcis train`` against the defaults it replaced, equal iterations.

    python -m benchmarks.run --only real_photos          # section 8 of RESULTS.md (about 2 h on 2 cores)
    python -m benchmarks.real_photos --out /tmp/real --iterations 300          # alone: both datasets
    python -m benchmarks.real_photos --out /tmp/real --datasets balloon         # one

For each dataset (PennFudanPed: the benchmarks' fixed 130/40 split; balloon: its own train/val)
two runs of ``fcis train`` from random weights, through the CLI exactly as a user types it:

- **bare**: only model, data, output, iterations, batch size, input size and device;
- **old defaults**: the training defaults before issue 11, spelled out as flags: SGD at 5e-4
  per image (lr 1e-3 at 2 images), momentum 0.9, weight decay 5e-4, a 500-iteration warm-up from
  lr/10, steps x0.1 at 67% and 89%, the paper's anchors 64-512 x (0.5, 1, 2), the plain mean
  class loss. (The model itself is today's in both runs: issue 12's faithful changes apply to both.)
- ``--variants`` also takes the augmentation ablation of issue 22 (``VARIANTS``, every lever
  spelled out): ``flip_only`` (the levers off), ``scale_jitter_only``, ``photometric_only``,
  ``copy_paste_only``, ``all_augmentation``.

Each checkpoint is scored with ``fcis evaluate --proposal-recall`` on the held-out images (COCO AP
and VOC mAP^r). Writes ``OUT/real_photos.json`` and prints a Markdown table. Runs are sequential
in one process tree; give the process one thread on a shared machine (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .accuracy import default_data_root, prepare_pennfudan
from .common import FULL

#: The training defaults before issue 11, as ``fcis train`` flags.
OLD_DEFAULTS = ["--optimizer", "sgd", "--lr", "0.001", "--weight-decay", "0.0005", "--warmup-iters", "500",
                "--warmup-factor", "0.1", "--lr-steps", "0.67", "0.89", "--anchors", "paper",
                "--set", "cls_loss_balance=False"]

#: The augmentation levers of issue 22 as ``fcis train`` flags (added to the bare command): each
#: ablation row is the bare command with one set of them.
#: Every lever is spelled out, so that a row does not change with the recipe's defaults.
NO_AUGMENTATION = ["--scale-jitter", "1", "1", "--no-photometric", "--copy-paste", "0"]
VARIANTS = {
    "bare": [],
    "old_defaults": OLD_DEFAULTS,
    "flip_only": NO_AUGMENTATION,
    "scale_jitter_only": ["--scale-jitter", "0.5", "1.5", "--no-photometric", "--copy-paste", "0"],
    "photometric_only": ["--scale-jitter", "1", "1", "--photometric", "--copy-paste", "0"],
    "copy_paste_only": ["--scale-jitter", "1", "1", "--no-photometric", "--copy-paste", "0.5"],
    "all_augmentation": ["--scale-jitter", "0.5", "1.5", "--photometric", "--copy-paste", "0.5"],
}
LABELS = {"bare": "bare command", "old_defaults": "old defaults", "flip_only": "flip only (no issue-22 augmentation)",
          "scale_jitter_only": "flip + scale jitter 0.5-1.5", "photometric_only": "flip + colour jitter",
          "copy_paste_only": "flip + copy-paste 0.5",
          "all_augmentation": "flip + scale jitter 0.5-1.5 + colour jitter + copy-paste 0.5"}

#: Input size per dataset (the benchmarks' PennFudanPed size; balloon's photos are larger).
SIZES = {"pennfudan": (320, 512), "balloon": (384, 640)}


def prepare(name: str, data_root: Path, work: Path) -> tuple[Path, Path]:
    """COCO train/val JSONs of ``name`` under ``work``: PennFudanPed on section 4's fixed split
    (``accuracy.prepare_pennfudan``), balloon on its own train/val folders."""
    if name == "pennfudan":
        penn = prepare_pennfudan(FULL, work, data_root)
        if penn is None:
            raise FileNotFoundError(f"no PennFudanPed/PNGImages and PedMasks under {data_root}")
        return penn["train"], penn["val"]
    from fcis.data.convert import convert_via

    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for split in ("train", "val"):
        src = data_root / "balloon" / split
        out.append(convert_via(src / "via_region_data.json", folder / f"{split}.json", image_dir=src,
                               category="balloon"))
    return out[0], out[1]


def fcis(*args: str, log: Path) -> float:
    """Run ``python -m fcis ARGS``; returns its wall time. Raises on a non-zero exit."""
    start = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "fcis", *args], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"fcis {' '.join(args[:1])} exited {proc.returncode}; see {log}")
    return time.perf_counter() - start


def run_one(name: str, variant: str, train: Path, val: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    run_dir = out / name / variant
    min_size, max_size = SIZES[name]
    cmd = ["train", "--model", args.model, "--train", str(train), "--output", str(run_dir),
           "--iterations", str(args.iterations), "--batch-size", "2", "--min-size", str(min_size),
           "--max-size", str(max_size), "--device", "cpu", "--overwrite", "--no-progress"]
    cmd += VARIANTS[variant]
    print(f"[{name}/{variant}] fcis {' '.join(cmd)}", flush=True)
    train_s = fcis(*cmd, log=out / f"{name}_{variant}_train.log")
    eval_dir = run_dir / "eval"
    fcis("evaluate", "--weights", str(run_dir / "last.pt"), "--data", str(val), "--output", str(eval_dir),
         "--proposal-recall", "--device", "cpu", "--no-progress", log=out / f"{name}_{variant}_eval.log")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    record = {"command": "fcis " + " ".join(cmd), "train_s": train_s, "metrics": metrics,
              "final_losses": summary.get("losses"), "recipe": config.get("recipe"),
              "anchors": config.get("anchors")}
    print(f"[{name}/{variant}] {summarise(record)}", flush=True)
    return record


def _metric(metrics: dict[str, Any], *keys: str) -> float | None:
    node: Any = metrics
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return float(node) if node is not None else None


def summarise(record: dict[str, Any]) -> str:
    m = record["metrics"]
    parts = []
    for label, keys in (("segm AP", ("segm", "AP")), ("bbox AP", ("bbox", "AP")),
                        ("mAP^r@0.5", ("voc", "mAP@0.5")), ("mAP^r@0.7", ("voc", "mAP@0.7"))):
        v = _metric(m, *keys)
        parts.append(f"{label} {100 * v:.1f}" if v is not None else f"{label} -")
    return ", ".join(parts) + f"; train {record['train_s']:.0f} s"


def run(budget: Any, work: Path, data_root: Path | None) -> dict[str, Any]:
    """Section 8 of ``benchmarks.run``: both datasets, both variants, the budget's iterations."""
    data_root = Path(data_root) if data_root else default_data_root()
    iterations = {"pennfudan": budget.real_penn_iterations, "balloon": budget.real_balloon_iterations}
    out: dict[str, Any] = {"settings": settings(budget.real_model, iterations), "datasets": {}}
    for name in ("pennfudan", "balloon"):
        probe = data_root / ("PennFudanPed" if name == "pennfudan" else "balloon")
        if not probe.is_dir():
            out["datasets"][name] = {"skipped": f"no {probe}"}
            continue
        train, val = prepare(name, data_root, work / "real_photos" / "data")
        args = argparse.Namespace(model=budget.real_model, iterations=iterations[name])
        out["datasets"][name] = {variant: run_one(name, variant, train, val, work / "real_photos", args)
                                 for variant in ("bare", "old_defaults")}
    return out


def settings(model: str, iterations: dict[str, int]) -> dict[str, Any]:
    return {"model": model, "iterations": iterations, "batch_size": 2, "sizes": SIZES,
            "old_defaults": OLD_DEFAULTS, "threads": os.environ.get("OMP_NUM_THREADS")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--data", type=Path, default=None, help="folder holding PennFudanPed/ and balloon/ "
                   "(default: $FCIS_SHARED_DATA or ../shared/data)")
    p.add_argument("--datasets", nargs="+", default=["pennfudan", "balloon"], choices=sorted(SIZES))
    p.add_argument("--variants", nargs="+", default=["bare", "old_defaults"], choices=list(VARIANTS))
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--model", default="fcis_resnet18")
    args = p.parse_args(argv)
    if args.data is None:
        args.data = default_data_root()
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "real_photos.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results.setdefault("settings", settings(args.model, {name: args.iterations for name in args.datasets}))
    for name in args.datasets:
        train, val = prepare(name, args.data, args.out / "data")
        for variant in args.variants:
            results.setdefault("datasets", {}).setdefault(name, {})[variant] = run_one(
                name, variant, train, val, args.out, args)
            results_file.write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


def table(section: dict[str, Any]) -> str:
    """The Markdown table of a ``run`` result (RESULTS.md section 8)."""
    rows = ["| dataset | run | iterations | segm AP | bbox AP | mAP^r@0.5 | mAP^r@0.7 | train time |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    iterations = section.get("settings", {}).get("iterations", {})
    for name, runs in section.get("datasets", {}).items():
        if "skipped" in runs:
            rows.append(f"| {name} | skipped: {runs['skipped']} | | | | | | |")
            continue
        for variant, rec in runs.items():
            m = rec["metrics"]
            cells = [_metric(m, "segm", "AP"), _metric(m, "bbox", "AP"), _metric(m, "voc", "mAP@0.5"),
                     _metric(m, "voc", "mAP@0.7")]
            label = LABELS.get(variant, variant)
            rows.append(f"| {name} | {label} | {iterations.get(name, '?')} | "
                        + " | ".join("-" if c is None else f"{100 * c:.1f}" for c in cells)
                        + f" | {rec['train_s']:.0f} s |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
