"""Run every benchmark and write RESULTS.md, PNG plots and the raw JSON.

    python -m benchmarks.run                      # full: 83 min measured on the quiet 2-core CPU
    python -m benchmarks.run --quick              # smoke: every section, under 10 min, numbers meaningless
    python -m benchmarks.run --only latency,roi   # some sections (updates an existing results.json)
    python -m benchmarks.run --only gpu --out /tmp/gpu            # on a GPU machine
    python -m benchmarks.run --report-only --merge /tmp/gpu/results/results.json   # merge + re-render

(from the repository root; ``python benchmarks/run.py ...`` restarts itself as the module.)

Writes ``OUT/RESULTS.md``, ``OUT/results/results.json`` and ``OUT/results/*.png`` (OUT defaults to
this folder). Sections: latency, roi, throughput, accuracy, ablation, limit, gpu, and the opt-in
real_photos and coco_val (see README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if __name__ == "__main__" and not __package__:  # `python benchmarks/run.py`: run as `python -m benchmarks.run`
    _path = os.pathsep.join(p for p in (str(HERE.parent), os.getenv("PYTHONPATH")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.run", *sys.argv[1:]], {**os.environ, "PYTHONPATH": _path})

import torch

from fcis.json_io import jsonable

from .common import FULL, QUICK, Budget, log, machine_info

#: CLI name -> results key, in run order (the training-heavy sections last).
SECTIONS = {"latency": "latency", "roi": "roi_scaling", "limit": "limit", "throughput": "throughput",
            "accuracy": "accuracy", "ablation": "ablation", "gpu": "gpu", "real_photos": "real_photos",
            "coco_val": "coco_val"}
#: Sections a plain run leaves out (name them with --only): real_photos trains four models (~2 h);
#: coco_val evaluates a converted model (--set coco_val_weights=... coco_val_root=...) on COCO val2017.
OPT_IN = ("real_photos", "coco_val")


def run_sections(names: list[str], budget: Budget, *, work: Path, data_root: Path | None, strict: bool = False
                 ) -> tuple[dict[str, Any], dict[str, float]]:
    """Run the named sections; returns ``(results by key, seconds per section)``."""
    from . import (
        accuracy,
        accuracy_parallel,
        coco_val_converted,
        gpu,
        latency,
        limit,
        real_photos,
        roi_scaling,
        training,
    )

    runner = accuracy.AccuracyRunner(budget, work, data_root)
    funcs = {
        "latency": lambda: latency.run(budget),
        "roi": lambda: roi_scaling.run(budget),
        "limit": lambda: limit.run(budget),
        "throughput": lambda: training.run(budget),
        "accuracy": lambda: accuracy.run_accuracy(runner, budget.datasets),
        "ablation": lambda: accuracy.run_ablation(runner, budget.datasets),
        "gpu": lambda: gpu.run(budget),
        "real_photos": lambda: real_photos.run(budget, work, data_root),
        "coco_val": lambda: coco_val_converted.run(budget.coco_val_weights or None, budget.coco_val_root or None,
                                                   work / "coco_val", limit=budget.coco_val_limit),
    }
    results, durations = {}, {}
    trained = [n for n in ("accuracy", "ablation") if n in names]
    parallel = accuracy_parallel.should_run_parallel(budget, runner) if trained else []
    try:
        for name in [n for n in SECTIONS if n in names]:
            if name in trained and parallel:
                if name != trained[0]:
                    continue  # ran with the first
                log(f"sections {', '.join(trained)}: start, datasets {', '.join(parallel)} side by side")
                start = time.perf_counter()
                try:
                    merged = accuracy_parallel.run(budget, trained, parallel, work, data_root)
                    results.update({SECTIONS[n]: merged[n] for n in trained})
                except Exception as e:  # noqa: BLE001
                    if strict:
                        raise
                    traceback.print_exc()
                    results.update({SECTIONS[n]: {"error": f"{type(e).__name__}: {e}"} for n in trained})
                durations["+".join(trained)] = time.perf_counter() - start
                log(f"sections {', '.join(trained)}: {durations['+'.join(trained)]:.0f} s")
                continue
            log(f"section {name}: start")
            start = time.perf_counter()
            try:
                results[SECTIONS[name]] = funcs[name]()
            except Exception as e:  # noqa: BLE001 - one failed section must not lose the others
                if strict:
                    raise
                traceback.print_exc()
                results[SECTIONS[name]] = {"error": f"{type(e).__name__}: {e}"}
            durations[name] = time.perf_counter() - start
            log(f"section {name}: {durations[name]:.0f} s")
    finally:
        runner.cleanup()
    return results, durations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke budgets: every section, < 10 min")
    parser.add_argument("--out", default=str(HERE), help="folder of RESULTS.md and results/ (default: benchmarks/)")
    parser.add_argument("--only", default="", help=f"comma-separated sections of {', '.join(SECTIONS)} "
                        f"({', '.join(OPT_IN)} only when named)")
    parser.add_argument("--merge", action="append", default=[], metavar="JSON",
                        help="take the sections of another run's results.json (e.g. the GPU section)")
    parser.add_argument("--report-only", action="store_true", help="measure nothing: re-render OUT's results.json")
    parser.add_argument("--fresh", action="store_true", help="with --only: ignore an existing results.json")
    parser.add_argument("--data", default=None, help="folder holding PennFudanPed/ (default: $FCIS_SHARED_DATA "
                                                     "or ../shared/data)")
    parser.add_argument("--work", default=None, help="scratch folder for datasets and checkpoints (default: a "
                                                     "temporary folder, removed after)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a budget field (see benchmarks/common.py Budget), e.g. --set repeats=3")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads(N) for every section (default: torch's default, the core "
                             "count); on a shared machine 1 can be much faster than 2 (OpenMP threads wait for "
                             "each other when another process holds a core)")
    parser.add_argument("--strict", action="store_true", help="stop at the first failing section")
    args = parser.parse_args(argv)

    out = Path(args.out)
    json_path = out / "results" / "results.json"
    given = argv if argv is not None else sys.argv[1:]
    command = "python -m benchmarks.run" + "".join(" " + shlex.quote(a) for a in given)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or [n for n in SECTIONS if n not in OPT_IN]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    budget = (QUICK if args.quick else FULL).with_overrides(args.set)

    partial = bool(args.only) or args.report_only
    results: dict[str, Any] = {}
    if (partial and not args.fresh) and json_path.exists():
        results = json.loads(json_path.read_text())
    elif args.report_only:
        parser.error(f"--report-only: no {json_path}")

    if args.threads:
        torch.set_num_threads(args.threads)
        budget = budget.with_overrides([f"threads={args.threads}"])
    if not args.report_only:
        torch.set_flush_denormal(True)  # as fcis.engine.train does; only denormal floats are affected
        started = dt.datetime.now().astimezone()
        machine = machine_info()  # before the run: its load average is the one at the start
        t0 = time.perf_counter()
        tmp = None
        if args.work:
            work = Path(args.work)
            work.mkdir(parents=True, exist_ok=True)
        else:
            tmp = work = Path(tempfile.mkdtemp(prefix="fcis-bench-"))
        try:
            measured, durations = run_sections(names, budget, work=work,
                                               data_root=Path(args.data) if args.data else None, strict=args.strict)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        finished = dt.datetime.now().astimezone()
        try:
            load_end = list(os.getloadavg())
        except OSError:
            load_end = None
        run_meta = {"command": command, "mode": budget.name, "started": started.isoformat(timespec="seconds"),
                    "finished": finished.isoformat(timespec="seconds"), "duration_s": time.perf_counter() - t0,
                    "section_durations_s": durations, "sections": names, "budget": budget.__dict__,
                    "load_average_at_end": load_end}
        if results and partial:
            for v in measured.values():
                if isinstance(v, dict):
                    v.setdefault("measured", {"command": command, "date": run_meta["started"],
                                              "machine": machine})
            results.setdefault("meta", {}).setdefault("updates", []).append(run_meta)
        else:
            results = {"meta": run_meta, "machine": machine}
        results.update(measured)

    for path in args.merge:
        other = json.loads(Path(path).read_text())
        for key in SECTIONS.values():
            if key in other:
                sec_ = other[key]
                if isinstance(sec_, dict) and "machine" not in sec_ and "measured" not in sec_:
                    sec_["measured"] = {"command": other.get("meta", {}).get("command"),
                                        "date": other.get("meta", {}).get("started"), "machine": other.get("machine")}
                results[key] = sec_
        results.setdefault("meta", {}).setdefault("merged", []).append(str(path))

    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(jsonable(results), indent=1) + "\n")
    from . import plots, report

    results = jsonable(results)
    md = report.write_report(results, out, plots.make_plots(results, out / "results"))
    log(f"wrote {md} and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
