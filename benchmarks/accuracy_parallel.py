"""Sections 4 and 5 with the datasets trained side by side, one worker process per dataset.

Small-image training barely scales from one torch thread to two (the demo: 1.14 s per iteration
with two threads, 1.3-1.4 with one), so on a 2-core machine two 1-thread processes, one per
dataset, finish the twelve trainings far sooner than one 2-thread process. Each worker runs
``accuracy.run_accuracy`` / ``run_ablation`` for its one dataset with the parent's budget and
writes its sections to a JSON file, which the parent merges. Training and inference times in these
sections are therefore 1-thread times with the other core busy (the report says so).

Worker mode (used by the parent; not meant to be called by hand)::

    python -m benchmarks.accuracy_parallel BUDGET.json DATASET SECTIONS OUT.json WORK [DATA_ROOT]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import module_command, module_env
from .common import Budget, log


def should_run_parallel(budget: Budget, runner) -> list[str]:
    """The datasets to train side by side ([] to run in this process): those with data, if >= 2."""
    if not budget.parallel_datasets or len(budget.datasets) < 2:
        return []
    present = [ds for ds in budget.datasets if runner.has_data(ds)]
    return present if len(present) >= 2 else []


def run(budget: Budget, sections: list[str], datasets: list[str], work: Path, data_root: Path | None
        ) -> dict[str, Any]:
    """Run ``sections`` (of "accuracy", "ablation") with one worker process per dataset; returns
    ``{"accuracy": ..., "ablation": ...}`` merged over the datasets."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    budget_file = work / "parallel_budget.json"
    budget_file.write_text(json.dumps(budget.to_dict()))
    env = {**module_env(), "OMP_NUM_THREADS": str(budget.parallel_threads),
           "MKL_NUM_THREADS": str(budget.parallel_threads)}
    procs = {}
    for ds in datasets:
        out = work / f"parallel_{ds}.json"
        out.unlink(missing_ok=True)
        cmd = module_command("accuracy_parallel", str(budget_file), ds, ",".join(sections), str(out),
                             str(work / f"parallel_{ds}")) + ([str(data_root)] if data_root is not None else [])
        log(f"accuracy: worker for {ds} started ({budget.parallel_threads} torch thread(s))")
        procs[ds] = (subprocess.Popen(cmd, env=env), out, time.perf_counter())
    from . import accuracy

    # The sections' headers (settings, the paper's numbers) as this process would write them;
    # the workers fill in their datasets.
    runner = accuracy.AccuracyRunner(budget, work, data_root)
    funcs = {"accuracy": accuracy.run_accuracy, "ablation": accuracy.run_ablation}
    merged = {section: funcs[section](runner, ()) for section in sections}
    for ds, (proc, out, start) in procs.items():
        code = proc.wait()
        log(f"accuracy: worker for {ds} ended with exit code {code} after {time.perf_counter() - start:.0f} s")
        part = json.loads(out.read_text()) if out.exists() else {}
        for section in sections:
            sec = part.get(section) or {}
            if "datasets" in sec and ds in sec["datasets"]:
                merged[section]["datasets"][ds] = sec["datasets"][ds]
            else:
                why = sec.get("error") or f"its worker process exited with code {code} and wrote no result"
                merged[section]["datasets"][ds] = {"skipped": f"failed: {why}"}
    parallel = {"processes": len(datasets), "torch_threads_each": budget.parallel_threads,
                "datasets": list(datasets)}
    for sec in merged.values():
        sec.setdefault("settings", {})["parallel"] = parallel
    return merged


def worker(argv: list[str]) -> int:
    import torch

    from fcis.json_io import jsonable

    from . import accuracy

    budget_file, dataset, sections, out, work = argv[:5]
    data_root = Path(argv[5]) if len(argv) > 5 else None
    budget = Budget.from_dict(json.loads(Path(budget_file).read_text()))
    torch.set_num_threads(budget.parallel_threads)
    torch.set_flush_denormal(True)
    runner = accuracy.AccuracyRunner(budget, Path(work), data_root)
    funcs = {"accuracy": accuracy.run_accuracy, "ablation": accuracy.run_ablation}
    results: dict[str, Any] = {}
    try:
        for section in sections.split(","):
            try:
                results[section] = funcs[section](runner, (dataset,))
            except Exception as e:  # noqa: BLE001 - recorded; the parent reports it
                import traceback

                traceback.print_exc()
                results[section] = {"error": f"{type(e).__name__}: {e}"}
            Path(out).write_text(json.dumps(jsonable(results)))  # after each section: nothing lost
    finally:
        runner.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(worker(sys.argv[1:]))
