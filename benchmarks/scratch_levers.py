"""Issue 22's ablation: the from-scratch levers one by one, on real photos, at equal iterations.

    python -m benchmarks.scratch_levers --list                       # the rows and their flags
    python -m benchmarks.scratch_levers --out /work/scratch/abl/run --data /work/shared/data \\
        --before-code /work/wt/baseline --dataset-dir treepheno=/work/scratch/abl/data/treepheno \\
        --dataset-dir bnflakes=/work/scratch/abl/data/bnflakes --threads 1 --markdown benchmarks/ABLATION.md
    python -m benchmarks.scratch_levers --out DIR --prepare-treepheno /work/.mirror/NarimanNiknejad+TreePheno/repo ...

Every row is ``fcis train`` exactly as a user types it -- the bare command

    python -m fcis train --model fcis_resnet18 --train T --output O --iterations 300 --batch-size 2 \\
        --device cpu --overwrite --no-progress

plus the row's flags (:data:`ROWS`: each default lever of :data:`LEVERS` off alone, on alone, all
off; each extra lever on beside the defaults; and the bare command itself), then ``python -m fcis evaluate --weights O/last.pt --data V --output
O/eval --device cpu --no-progress``. A row runs the code of a checkout: ``--code`` (default: this
one) or, for the ``before`` rows, ``--before-code`` (main at 73cdbd3, before issue 22); the child
processes run in that folder with it first on ``PYTHONPATH``, and the commit, a dirty flag and the
``fcis`` package the child imported are recorded.

Mask R-CNN rows (``maskrcnn_resnet18_fpn``, the same data levers) train for the *same time* as
the FCIS row named in their ``equal_time_to`` on the same dataset, not the same iterations: a short
calibration run (``--calibration-iterations``, the row's own flags) measures Mask R-CNN's seconds
per iteration (median of its ``log.jsonl`` windows after the first), and the row trains for
round(FCIS training-loop seconds / that) iterations, with the recipe's schedule fitted to that
length. The record and the table give both loop times, so the achieved ratio is visible.

Collected per row: mask AP, AP50, AP75 and AP per class (COCOeval's per-category precision, from
the evaluation's predictions.json; their mean is checked against the overall AP), box AP, VOC
mAP^r@0.5/0.7, the command's wall time, the training loop's seconds and seconds per iteration, and
what the run chose (input size, anchors, norm, augmentation: from its config.json). Results go
to ``OUT/scratch_levers.json`` after each row; a finished row is not run again (``--fresh``: all
again). Rows run one after the other in one process tree; ``--threads N`` sets OMP_NUM_THREADS and
MKL_NUM_THREADS for the children (use 1 on a shared machine, and say so beside the numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .common import REPO
from .photo_sets import SETS, prepare_snapshot_set
from .scratch_levers_report import render

FCIS = "fcis_resnet18"
MASKRCNN = "maskrcnn_resnet18_fpn"
RESULTS_NAME = "scratch_levers.json"


@dataclass(frozen=True)
class Lever:
    """One of issue 22's levers. A *default* lever is on in the bare command and ``off`` are the
    flags that turn it off; an *extra* lever was measured and left off (it did not help at equal
    iterations): ``on`` are the flags that turn it on."""

    key: str
    label: str
    off: tuple[str, ...] = ()
    on: tuple[str, ...] = ()
    fcis_only: bool = False   # a field of FCIS's config: not given to the Mask R-CNN rows

    @property
    def default(self) -> bool:
        return bool(self.off)


#: Issue 22's levers: the four defaults of the bare command (leave-one-out rows ``off_*``), then the
#: four measured and left off (rows ``plus_*``: the bare command with one of them on).
LEVERS: tuple[Lever, ...] = (
    Lever("anchors", "class-balanced anchor fit, its count of sizes", off=("--anchors", "fit-boxes")),
    Lever("input_size", "input size from the data", off=("--input-size", "model")),
    Lever("copy_paste", "copy-paste on every image", off=("--copy-paste", "0")),
    Lever("head_stride", "FCIS's score maps at stride 8", off=("--set", "head_stride=16"), fcis_only=True),
    Lever("gn", "GroupNorm (instead of BatchNorm)", on=("--set", "norm=gn")),
    Lever("scale_jitter", "scale jitter 0.5-1.5", on=("--scale-jitter", "0.5", "1.5")),
    Lever("photometric", "colour jitter", on=("--photometric",)),
    Lever("mask_loss", "FCIS's mask loss averaged over the foreground RoIs",
          on=("--set", "mask_loss_normalization=foreground"), fcis_only=True),
)
DEFAULT_LEVERS = tuple(lv for lv in LEVERS if lv.default)
EXTRA_LEVERS = tuple(lv for lv in LEVERS if not lv.default)


def all_off(except_key: str | None = None, model: str = FCIS) -> tuple[str, ...]:
    """The flags that turn every default lever off, but ``except_key``'s (for ``model``: FCIS's
    own levers only for FCIS)."""
    return tuple(flag for lever in DEFAULT_LEVERS if lever.key != except_key
                 and (model == FCIS or not lever.fcis_only) for flag in lever.off)


@dataclass(frozen=True)
class Row:
    """One ablation row: the bare command of ``model`` plus ``flags``, run with the ``code``
    checkout ("new": ``--code``; "before": ``--before-code``). ``equal_time_to``: train as long
    (loop seconds) as that FCIS row on the same dataset instead of ``--iterations``."""

    key: str
    label: str
    flags: tuple[str, ...] = ()
    model: str = FCIS
    code: str = "new"
    equal_time_to: str | None = None


ROWS: tuple[Row, ...] = (
    Row("before", "before (main at 73cdbd3)", code="before"),
    Row("all", "all levers (the new bare command)"),
    Row("none", "no lever (new code, every lever off)", all_off()),
    *(Row(f"off_{lv.key}", f"all but {lv.label}", lv.off) for lv in DEFAULT_LEVERS),
    *(Row(f"only_{lv.key}", f"only {lv.label}", all_off(lv.key)) for lv in DEFAULT_LEVERS),
    *(Row(f"plus_{lv.key}", f"all and {lv.label}", lv.on) for lv in EXTRA_LEVERS),
    Row("half_copy_paste", "all, copy-paste on half of the images (the earlier default)",
        ("--copy-paste", "0.5")),
    Row("maskrcnn_all", "Mask R-CNN, all levers, FCIS 'all' time", model=MASKRCNN, equal_time_to="all"),
    Row("maskrcnn_none", "Mask R-CNN, no lever, FCIS 'all' time", all_off(model=MASKRCNN), model=MASKRCNN,
        equal_time_to="all"),
)
ROW_BY_KEY = {r.key: r for r in ROWS}
#: Names ``--rows`` also takes for several rows: ``core`` answers "what does each lever add to the
#: new bare command" (leave-one-out) and how Mask R-CNN compares; ``alone`` adds each lever to none.
ROW_GROUPS: dict[str, tuple[str, ...]] = {
    "core": ("before", "all", "none", *(f"off_{lv.key}" for lv in DEFAULT_LEVERS), "maskrcnn_all"),
    "alone": tuple(f"only_{lv.key}" for lv in DEFAULT_LEVERS),
    "extra": tuple(f"plus_{lv.key}" for lv in LEVERS if lv.on),
    "maskrcnn": tuple(r.key for r in ROWS if r.model == MASKRCNN),
}


def expand_rows(names: list[str]) -> list[Row]:
    """Rows of ``names`` (row keys or :data:`ROW_GROUPS` names) in :data:`ROWS` order, once each.
    Raises ValueError naming the unknown ones."""
    unknown = sorted(n for n in names if n not in ROW_BY_KEY and n not in ROW_GROUPS)
    if unknown:
        raise ValueError(f"unknown rows {unknown}; rows: {', '.join(ROW_BY_KEY)}; groups: {', '.join(ROW_GROUPS)}")
    wanted = {k for n in names for k in ROW_GROUPS.get(n, (n,))}
    return [r for r in ROWS if r.key in wanted]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the ablation: ``prepare(data_root, work)`` returns ``(train_json, val_json)``."""

    key: str
    about: str
    prepare: Callable[[Path, Path], tuple[Path, Path]] = field(repr=False)


def _shared(name: str) -> Callable[[Path, Path], tuple[Path, Path]]:
    def prepare(data_root: Path, work: Path) -> tuple[Path, Path]:
        from .real_photos import prepare as prepare_real

        return prepare_real(name, data_root, work)
    return prepare


def _snapshot_set(name: str) -> Callable[[Path, Path], tuple[Path, Path]]:
    def prepare(data_root: Path, work: Path) -> tuple[Path, Path]:
        folder = work / name
        train, val = folder / "train.json", folder / "val.json"
        if not (train.is_file() and val.is_file()):
            spec = SETS[name]
            raise FileNotFoundError(
                f"{folder}: no prepared {name} set (train.json, val.json). Fetch github:{spec.repo} and pass "
                f"--prepare-{name} SNAPSHOT, or --dataset-dir {name}=DIR of a prepared copy")
        return train, val
    return prepare


DATASETS: dict[str, DatasetSpec] = {d.key: d for d in (
    DatasetSpec("pennfudan", "PennFudanPed, the benchmarks' fixed 130/40 split (accuracy.prepare_pennfudan)",
                _shared("pennfudan")),
    DatasetSpec("balloon", "balloon, its own train/val folders", _shared("balloon")),
    *(DatasetSpec(s.name, s.about, _snapshot_set(s.name)) for s in SETS.values()),
)}


# --- running one command ----------------------------------------------------------------------------

def child_env(code: Path, threads: int | None) -> dict[str, str]:
    """This environment with ``code`` first on PYTHONPATH and the thread count set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH", "")) if p)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_fcis(args: list[str], *, code: Path, threads: int | None, log: Path) -> float:
    """``python -m fcis ARGS`` in ``code``; stdout and stderr into ``log``. Returns the wall time;
    raises RuntimeError naming the log on a non-zero exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as f:
        f.write("$ python -m fcis " + shlex.join(args) + "\n")
        f.flush()
        proc = subprocess.run([sys.executable, "-m", "fcis", *args], cwd=code, env=child_env(code, threads),
                              stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"fcis {args[0]} exited {proc.returncode}; see {log}")
    return time.perf_counter() - start


def _git(code: Path, *args: str) -> str:
    p = subprocess.run(["git", "-C", str(code), *args], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else ""


def describe_code(code: Path, threads: int | None) -> dict[str, Any]:
    """Commit, dirty flag and the ``fcis`` package a child process imports from ``code``."""
    def git(*a: str) -> str:
        return _git(code, *a)

    probe = subprocess.run([sys.executable, "-c", "import fcis; print(fcis.__file__)"], cwd=code,
                           env=child_env(code, threads), capture_output=True, text=True)
    return {"path": str(code), "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain")),
            "fcis_imported_from": probe.stdout.strip() or probe.stderr.strip()[-300:]}


# --- what a run left behind -------------------------------------------------------------------------

def sec_per_iter(log_jsonl: Path) -> float:
    """Median ``sec_per_iter`` of a run's ``log.jsonl`` windows after the first (the first holds
    the start-up); the only window when there is one. Raises ValueError when there is none."""
    windows = [rec["sec_per_iter"] for rec in map(json.loads, log_jsonl.read_text().splitlines())
               if rec.get("sec_per_iter") is not None]
    if not windows:
        raise ValueError(f"{log_jsonl}: no sec_per_iter entry (a run of at least --log-every iterations?)")
    return statistics.median(windows[1:] if len(windows) > 1 else windows)


def equal_time_iterations(reference_loop_s: float, calibrated_sec_per_iter: float) -> int:
    """The iterations that take ``reference_loop_s`` at ``calibrated_sec_per_iter`` (at least 1)."""
    if not (reference_loop_s > 0 and calibrated_sec_per_iter > 0):
        raise ValueError(f"need positive times, got {reference_loop_s} s and {calibrated_sec_per_iter} s/it")
    return max(1, round(reference_loop_s / calibrated_sec_per_iter))


def chosen_settings(config_json: Path) -> dict[str, Any]:
    """What a run chose, from its config.json: input size, anchors, norm, the augmentation, the
    schedule (the fields a code version lacks are left out)."""
    cfg = json.loads(config_json.read_text())
    model = cfg.get("model_config") or {}
    train = cfg.get("train_config") or {}
    out = {k: model[k] for k in ("min_size", "max_size", "anchor_sizes", "aspect_ratios", "norm", "head_stride",
                                 "mask_loss_normalization", "window_sizes") if k in model}
    out.update({k: train[k] for k in ("anchors", "input_size", "scale_jitter", "photometric", "copy_paste",
                                      "iterations", "lr", "optimizer", "warmup_iters") if k in train})
    if isinstance(cfg.get("anchors"), dict):
        out["anchor_coverage"] = cfg["anchors"].get("coverage")
    return out


def per_class_ap(gt: Any, results: list[dict], iou_type: str = "segm", max_dets: int = 100) -> dict[str, dict]:
    """COCO AP per category of ``results`` against ``gt`` (a ``COCO``, JSON path or dict): the mean
    of COCOeval's ``precision[:, :, k, all areas, max_dets]`` (AP) and of its IoU-0.5 slice (AP50),
    as ``fcis.evaluation.evaluate_coco`` reads the overall figures; ``nan`` for a category without
    ground truth. Keyed by category name; ``instances`` = its non-crowd GT count."""
    from fcis.evaluation.coco_eval import accumulated_cocoeval, load_res, results_for_iou_type
    from fcis.evaluation.ground_truth import load_coco_gt

    coco = load_coco_gt(gt)
    ev = accumulated_cocoeval(coco, load_res(coco, results_for_iou_type(results, iou_type)), iou_type, max_dets)
    precision = ev.eval["precision"]  # [IoU T, recall R, category K, area A, maxDets M]
    iou50 = [round(float(t), 2) for t in ev.params.iouThrs].index(0.5)

    def mean(p: Any) -> float:
        p = p[p > -1]
        return float(p.mean()) if p.size else math.nan

    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        name = coco.cats[cat_id]["name"]
        out[name if name not in out else f"{name} (id {cat_id})"] = {
            "AP": mean(precision[:, :, k, 0, -1]), "AP50": mean(precision[iou50, :, k, 0, -1]),
            "instances": len(coco.getAnnIds(catIds=[cat_id], iscrowd=False))}
    return out


def collect(run_dir: Path, val_json: Path) -> dict[str, Any]:
    """The record of a finished row: metrics.json, per-class AP, training times, choices."""
    from fcis.data import CocoInstances

    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    predictions = json.loads((run_dir / "eval" / "predictions.json").read_text())
    gt = CocoInstances(val_json).coco  # the ground truth as fcis evaluate reads it
    classes = {t: per_class_ap(gt, predictions, t) for t in ("segm", "bbox")}
    defined = [v["AP"] for v in classes["segm"].values() if not math.isnan(v["AP"])]
    overall = (metrics.get("segm") or {}).get("AP")
    check = (None if overall is None or not defined
             else abs(statistics.fmean(defined) - overall) < 1e-6)
    iterations = summary.get("iterations")
    loop_s = summary.get("time_s")
    return {"metrics": metrics, "per_class": classes, "per_class_mean_matches_overall": check,
            "iterations": iterations, "loop_s": loop_s,
            "sec_per_iter": loop_s / iterations if loop_s and iterations else None,
            "final_losses": summary.get("losses"), "chosen": chosen_settings(run_dir / "config.json")}


# --- the ablation -----------------------------------------------------------------------------------

@dataclass
class Plan:
    """Everything a run needs besides the rows and datasets."""

    out: Path
    iterations: int
    threads: int | None
    codes: dict[str, Path]
    calibration_iterations: int = 12
    extra: tuple[str, ...] = ()
    dry_run: bool = False


def train_args(row: Row, train: Path, run_dir: Path, iterations: int, extra: tuple[str, ...],
               log_every: int | None = None) -> list[str]:
    """The ``fcis train`` arguments of ``row`` (the bare command, the row's flags, ``extra``)."""
    args = ["train", "--model", row.model, "--train", str(train), "--output", str(run_dir),
            "--iterations", str(iterations), "--batch-size", "2", "--device", "cpu", "--overwrite",
            "--no-progress", *row.flags, *extra]
    return args + (["--log-every", str(log_every)] if log_every else [])


def run_row(row: Row, dataset: str, train: Path, val: Path, plan: Plan, done: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one row on one dataset; returns its record (raises on failure)."""
    code = plan.codes[row.code]
    run_dir = (plan.out / dataset / row.key).resolve()
    record: dict[str, Any] = {"label": row.label, "model": row.model, "flags": list(row.flags), "code": row.code}
    iterations = plan.iterations
    if row.equal_time_to and plan.dry_run:
        calib = train_args(row, train, run_dir.with_name(row.key + "_calibration"), plan.calibration_iterations,
                           plan.extra, log_every=max(1, plan.calibration_iterations // 4))
        print("  python -m fcis " + shlex.join(calib) + "\n  then the same with --iterations = "
              f"{row.equal_time_to!r}'s loop seconds / the calibrated seconds per iteration")
        return record
    if row.equal_time_to:
        ref = done.get(row.equal_time_to) or {}
        if not ref.get("loop_s"):
            raise RuntimeError(f"{dataset}/{row.key}: trains as long as row {row.equal_time_to!r}, which has not "
                               "finished on this dataset; run it first (it is in --rows)")
        calib_dir = run_dir.with_name(row.key + "_calibration")
        calib_args = train_args(row, train, calib_dir, plan.calibration_iterations, plan.extra,
                                log_every=max(1, plan.calibration_iterations // 4))
        run_fcis(calib_args, code=code, threads=plan.threads, log=plan.out / "logs" / f"{dataset}_{row.key}_calib.log")
        spi = sec_per_iter(calib_dir / "log.jsonl")
        iterations = equal_time_iterations(ref["loop_s"], spi)
        record["equal_time"] = {"reference_row": row.equal_time_to, "reference_loop_s": ref["loop_s"],
                                "reference_iterations": ref.get("iterations"),
                                "calibration_iterations": plan.calibration_iterations,
                                "calibration_sec_per_iter": spi, "iterations": iterations}
    args = train_args(row, train, run_dir, iterations, plan.extra)
    eval_args = ["evaluate", "--weights", str(run_dir / "last.pt"), "--data", str(val), "--output",
                 str(run_dir / "eval"), "--device", "cpu", "--no-progress"]
    record["command"] = "python -m fcis " + shlex.join(args)
    if plan.dry_run:
        print("  " + record["command"] + "\n  python -m fcis " + shlex.join(eval_args))
        return record
    record["train_wall_s"] = run_fcis(args, code=code, threads=plan.threads,
                                      log=plan.out / "logs" / f"{dataset}_{row.key}_train.log")
    record["eval_wall_s"] = run_fcis(eval_args, code=code, threads=plan.threads,
                                     log=plan.out / "logs" / f"{dataset}_{row.key}_eval.log")
    record.update(collect(run_dir, val))
    if "equal_time" in record and record.get("loop_s"):
        record["equal_time"]["achieved_loop_ratio"] = record["loop_s"] / record["equal_time"]["reference_loop_s"]
    record["code_commit"] = _git(code, "rev-parse", "HEAD")
    record["code_dirty"] = bool(_git(code, "status", "--porcelain"))
    return record


def run_ablation(rows: list[Row], datasets: dict[str, tuple[Path, Path]], plan: Plan, results: dict[str, Any],
                 save: Callable[[], None], strict: bool = False) -> dict[str, Any]:
    """Run every row missing from ``results`` on every dataset, saving after each row. A failing
    row is recorded with its error (and run again next time); ``strict`` re-raises."""
    for name, (train, val) in datasets.items():
        entry = results.setdefault("datasets", {}).setdefault(name, {})
        entry["data"] = {"train": str(train), "val": str(val), "summary": _data_summary(train, val)}
        done = entry.setdefault("rows", {})
        for row in rows:
            if "metrics" in done.get(row.key, {}):
                print(f"[{name}/{row.key}] done already (segm AP {_pct(done[row.key], 'segm')})", flush=True)
                continue
            print(f"[{name}/{row.key}] {row.label}", flush=True)
            try:
                record = run_row(row, name, train, val, plan, done)
            except Exception as e:  # noqa: BLE001 -- recorded, and the next row goes on
                if strict:
                    raise
                done[row.key] = {"label": row.label, "error": f"{type(e).__name__}: {e}"}
                print(f"[{name}/{row.key}] FAILED: {e}", flush=True)
            else:
                if plan.dry_run:
                    continue
                done[row.key] = record
                print(f"[{name}/{row.key}] segm AP {_pct(record, 'segm')}, box AP {_pct(record, 'bbox')}, "
                      f"{record['iterations']} it in {record['loop_s']:.0f} s", flush=True)
            save()
    return results


def _pct(record: dict[str, Any], kind: str) -> str:
    v = (record.get("metrics", {}).get(kind) or {}).get("AP")
    return "-" if v is None else f"{100 * v:.1f}"


def _data_summary(train: Path, val: Path) -> dict[str, Any]:
    out = {}
    for split, path in (("train", train), ("val", val)):
        d = json.loads(Path(path).read_text())
        names = {c["id"]: c["name"] for c in d["categories"]}
        per_class: dict[str, int] = {}
        for a in d["annotations"]:
            per_class[names[a["category_id"]]] = per_class.get(names[a["category_id"]], 0) + 1
        out[split] = {"images": len(d["images"]), "instances": len(d["annotations"]), "per_class": per_class}
    return out


# --- command line -----------------------------------------------------------------------------------

def _parse_dirs(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"--dataset-dir wants NAME=DIR, got {item!r}")
        out[name] = Path(folder).resolve()
    return out


def build_parser() -> argparse.ArgumentParser:
    from .accuracy import default_data_root

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="runs, logs, data copies and scratch_levers.json go here")
    p.add_argument("--data", type=Path, default=default_data_root(),
                   help="folder with PennFudanPed/ and balloon/ (default: $FCIS_SHARED_DATA or ../shared/data)")
    p.add_argument("--dataset-dir", action="append", default=[], metavar="NAME=DIR",
                   help="a prepared set (DIR/train.json, DIR/val.json) for dataset NAME; NAME may be new")
    for name, spec in SETS.items():
        p.add_argument(f"--prepare-{name}", metavar="SNAPSHOT", type=Path,
                       help=f"write the {name} set from a git snapshot of github:{spec.repo} (into its "
                            f"--dataset-dir, else OUT/data/{name}) and use it")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), metavar="NAME",
                   help=f"default: {' '.join(DATASETS)}")
    p.add_argument("--rows", nargs="+", default=[r.key for r in ROWS], metavar="ROW",
                   help="row keys (--list) or groups: " + "; ".join(f"{k} = {' '.join(v)}" for k, v in
                                                                  ROW_GROUPS.items()) + " (default: every row)")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS / MKL_NUM_THREADS of the children")
    p.add_argument("--code", type=Path, default=REPO, help="checkout the 'new' rows run (default: this one)")
    p.add_argument("--before-code", type=Path, help="checkout of the code before issue 22 (the 'before' rows)")
    p.add_argument("--calibration-iterations", type=int, default=12,
                   help="iterations of the Mask R-CNN speed calibration (equal-time rows)")
    p.add_argument("--extra", default="", help="flags added to every train command, e.g. for a smoke test "
                   "'--min-size 64 --max-size 80' (recorded; an ablation leaves it empty)")
    p.add_argument("--markdown", type=Path, help="also write the tables to this file (e.g. benchmarks/ABLATION.md)")
    p.add_argument("--fresh", action="store_true", help="forget OUT/scratch_levers.json's finished rows")
    p.add_argument("--strict", action="store_true", help="stop at the first failing row")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--list", action="store_true", help="print the rows and their flags and exit")
    p.add_argument("--report-only", action="store_true", help="render the tables of OUT/scratch_levers.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dirs = _parse_dirs(args.dataset_dir)
    for name, spec in SETS.items():  # before --list: `--prepare-NAME SNAPSHOT --out DIR --list` only prepares
        snapshot = getattr(args, f"prepare_{name}")
        if snapshot is not None:
            if args.out is None and name not in dirs:
                raise SystemExit(f"--prepare-{name} writes into --dataset-dir {name}=DIR or OUT/data/{name}: give one")
            target = dirs.setdefault(name, args.out.resolve() / "data" / name)
            print(f"preparing {name} from {snapshot} into {target}", flush=True)
            prepare_snapshot_set(spec, snapshot, target)
    if args.list:
        for name, keys in ROW_GROUPS.items():
            print(f"group {name}: {' '.join(keys)}")
        for r in ROWS:
            extra = f" [{r.model}, {'equal time to ' + r.equal_time_to if r.equal_time_to else ''}]" \
                if r.model != FCIS else ""
            print(f"{r.key:20s} {r.code:6s} {shlex.join(r.flags) or '(bare)'}{extra}")
        return 0
    if args.out is None:
        raise SystemExit("--out is required")
    try:
        rows = expand_rows(args.rows)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / RESULTS_NAME
    results = json.loads(results_file.read_text()) if results_file.exists() and not args.fresh else {}

    def save() -> None:
        tmp = results_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1, allow_nan=True))
        tmp.replace(results_file)

    if not args.report_only:
        codes = {"new": args.code.resolve()}
        if any(r.code == "before" for r in rows):
            if args.before_code is None:
                raise SystemExit("the 'before' rows need --before-code DIR (a checkout of main at 73cdbd3)")
            codes["before"] = args.before_code.resolve()
        datasets = {}
        for name in args.datasets:
            if name in dirs:
                datasets[name] = (dirs[name] / "train.json", dirs[name] / "val.json")
            elif name in DATASETS:
                datasets[name] = DATASETS[name].prepare(args.data, out / "data")
            else:
                raise SystemExit(f"unknown dataset {name!r}: one of {', '.join(DATASETS)} or a --dataset-dir NAME")
        settings = {"iterations": args.iterations, "batch_size": 2, "threads": args.threads,
                    "extra": args.extra, "calibration_iterations": args.calibration_iterations,
                    "levers": {lv.key: {"label": lv.label, "off": list(lv.off), "on": list(lv.on)}
                               for lv in LEVERS}}
        old = results.get("settings")
        if old and (old.get("iterations"), old.get("extra")) != (args.iterations, args.extra):
            raise SystemExit(f"{results_file} holds rows of --iterations {old.get('iterations')} --extra "
                             f"{old.get('extra')!r}; pass --fresh or another --out")
        results["settings"] = settings
        results.setdefault("code", {}).update({k: describe_code(v, args.threads) for k, v in codes.items()})
        plan = Plan(out=out, iterations=args.iterations, threads=args.threads, codes=codes,
                    calibration_iterations=args.calibration_iterations, extra=tuple(shlex.split(args.extra)),
                    dry_run=args.dry_run)
        run_ablation(rows, datasets, plan, results, save if not args.dry_run else (lambda: None), strict=args.strict)
        if args.dry_run:
            return 0
        save()
    text = render(results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
        print(f"tables: {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
