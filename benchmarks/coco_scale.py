"""COCO at full scale (issue 23): start-up time, the training process tree's memory, and the
memory growth of DataLoader workers, for two checkouts of the project ("before", "after").

The data: ``benchmarks/coco_scale_data.py`` (a COCO-train2017-sized file, 118,287 images and 828k
polygon annotations in 396 MB of JSON, the images symlinks to a few real JPEGs; and a 40,000-image
file of the same kind), made once under ``--work``.

For each checkout (its ``fcis`` imported from its folder; the same Python environment):

1. **first step**: ``python -m fcis train --model fcis_resnet18 --workers 4 --log-every 1`` on the
   full file (``--iterations`` steps, no validation), timed from the process start: when the
   data summary line appears on stderr (the index or JSON loaded, checked, summarised, the anchors
   fitted), when the run was set up (the first ``log.jsonl`` line's time minus its
   ``sec_per_iter``, which spans the first batch and step) and when the first step was done;
2. **process tree PSS**: every ``--sample`` seconds during that run, the sum of ``Pss`` of
   ``/proc/<pid>/smaps_rollup`` over the training process and all its descendants (the DataLoader
   workers); the peak is reported;
3. **one epoch through 4 workers** over the 40k file: a DataLoader with 4 workers calls
   ``dataset.target(i)`` for every image in a seeded random order (the training dataset as the
   checkout's trainer configures it; masks decoded, images not read: the growth comes from the
   annotations) and returns only counts; each worker's private memory (``Private_Clean +
   Private_Dirty`` of ``smaps_rollup``, USS) is read after its first batch and after the last;
4. **forked readers**: the dataset of the full file is built, then 4 processes are forked from it
   (one after another unless ``--parallel-forks``; each alone measures the same growth and the
   machine is spared 4 GB at once), each reading every image's annotation entries (the
   coordinates of every polygon, the length of every RLE), with its USS read before and after.

Run it on a quiet machine: it records the load average and the busiest other processes at the
start of each measurement and says so in the report.

    python -m benchmarks.coco_scale --before /work/main --after . [--images 118287] [--iterations 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()


# --- /proc -----------------------------------------------------------------------------------------

def smaps(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` in bytes (empty if the process is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except OSError:
        pass
    return out


def uss(pid: int) -> int:
    s = smaps(pid)
    return s.get("Private_Clean", 0) + s.get("Private_Dirty", 0)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def machine_state() -> dict[str, Any]:
    """Load average and the busiest processes (by CPU time over one second)."""
    def times() -> dict[int, tuple[float, str]]:
        out = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        head, rest = f.read().rsplit(")", 1)
                    fields = rest.split()
                    out[int(d)] = (int(fields[11]) + int(fields[12]), head.split("(", 1)[1])
                except (OSError, IndexError, ValueError):
                    continue
        return out
    a = times()
    time.sleep(1.0)
    b = times()
    tick = os.sysconf("SC_CLK_TCK")
    busy = sorted(((b[p][0] - a[p][0]) / tick, p, b[p][1]) for p in b if p in a and p != os.getpid())[::-1][:5]
    return {"loadavg": list(os.getloadavg()), "cpus": os.cpu_count(),
            "busiest": [{"pid": p, "name": n, "cpu": round(c, 2)} for c, p, n in busy if c > 0.05]}


# --- 1 + 2: fcis train ----------------------------------------------------------------------------

def first_step(code: Path, json_path: Path, out: Path, *, iterations: int, sample: float, threads: int,
               model: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Measurements 1 and 2 for the checkout ``code`` (``extra``: more ``fcis train`` flags)."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-m", "fcis", "train", "--model", model, "--train", str(json_path),
           "--image-root", str(json_path.parent / "images"), "--output", str(out), "--workers", "4", "--iterations", str(iterations), "--log-every", "1",
           "--checkpoint-every", str(10 * iterations), "--no-progress", "--overwrite", *extra]
    state = machine_state()
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: [lines.append((time.time() - t0, line.rstrip()))
                                              for line in proc.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    peak, peak_at, series = 0, 0.0, []
    while proc.poll() is None:
        pids = descendants(proc.pid)
        total = sum(smaps(p).get("Pss", 0) for p in pids)
        series.append((round(time.time() - t0, 2), len(pids), total))
        if total > peak:
            peak, peak_at = total, time.time() - t0
        time.sleep(sample)
    reader.join(timeout=10)
    res: dict[str, Any] = {"command": " ".join(cmd), "cwd": str(code), "returncode": proc.returncode,
                           "machine_at_start": state, "peak_pss": peak, "peak_pss_at_s": round(peak_at, 1),
                           "pss_series": series[:: max(1, len(series) // 200)], "wall_s": round(time.time() - t0, 1)}
    summary = [t for t, line in lines if line.startswith("data ")]
    res["data_summary_at_s"] = round(summary[0], 1) if summary else None
    log = out / "log.jsonl"
    if log.exists():
        recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        recs = [r for r in recs if "sec_per_iter" in r]
        if recs:
            first = recs[0]
            res["first_step_done_s"] = round(first["time"] - t0, 1)
            res["setup_done_s"] = round(first["time"] - first["sec_per_iter"] - t0, 1)
            res["iterations_logged"] = len(recs)
            res["median_sec_per_iter"] = sorted(r["sec_per_iter"] for r in recs[1:] or recs)[len(recs[1:] or recs) // 2]
    if proc.returncode != 0:
        res["output_tail"] = [line for _, line in lines[-30:]]
    return res


# --- 3 + 4: the workers (run in a subprocess with the checkout's fcis first on sys.path) --------

def _dataset(json_path: str):
    """The training dataset as the checkout's trainer makes it (with ``input_size`` where the
    checkout has it: the model's default 600/1000)."""
    import inspect

    from fcis.data import CocoInstances

    if "input_size" in inspect.signature(CocoInstances).parameters:
        return CocoInstances(json_path, input_size=(600, 1000))
    return CocoInstances(json_path)


class _Targets:
    """``dataset.target(i)``'s instance count (the masks are decoded; only a number travels)."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> int:
        return int(self.ds.target(i)["labels"].shape[0])


def worker_epoch(json_path: str, workers: int, batch: int) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    t0 = time.time()
    ds = _dataset(json_path)
    built = time.time() - t0
    loader = DataLoader(_Targets(ds), batch_size=batch, shuffle=True, num_workers=workers,
                        collate_fn=list, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)
    pids = [w.pid for w in it._workers]   # type: ignore[attr-defined]  # the worker processes
    time.sleep(0.5)
    start = {p: uss(p) for p in pids}
    n = batch
    for b in it:
        n += len(b)
        if n >= len(ds) - workers * batch * 2:   # the last batches: read before the workers exit
            break
    end = {p: uss(p) for p in pids}
    rest = sum(len(b) for b in it)
    growth = [end[p] - start[p] for p in pids]
    return {"images": len(ds), "read": n + rest, "dataset_s": round(built, 1), "epoch_s": round(time.time() - t0 - built, 1),
            "worker_uss_start": [start[p] for p in pids], "worker_uss_end": [end[p] for p in pids],
            "worker_growth": growth, "max_growth": max(growth), "main_pss": smaps(os.getpid()).get("Pss", 0)}


def _read_entries(ds) -> float:
    """Every image's annotation entries: each polygon's coordinates, each RLE's length."""
    total = 0.0
    ix = getattr(ds, "index", None)
    if ix is not None:
        for i in range(ix.num_images):
            for a in ix.annotations_of(i):
                total += float(ix.ann_bbox[a, 2])
                if ix.ann_part_count[a]:
                    total += sum(float(p.sum()) for p in ix.polygons(int(a)))
                else:
                    total += int(ix.rle_len[a])
        return total
    coco = ds.coco
    for img_id in ds.image_ids:
        for a in coco.imgToAnns.get(img_id, []):
            total += a["bbox"][2]
            seg = a["segmentation"]
            if isinstance(seg, list):
                total += sum(sum(p) for p in seg)
            else:
                total += len(seg["counts"])
    return total


def forked_readers(json_path: str, forks: int, parallel: bool) -> dict[str, Any]:
    t0 = time.time()
    ds = _dataset(json_path)
    built = time.time() - t0
    results = []

    def child(w) -> None:
        before = uss(os.getpid())
        t = time.time()
        _read_entries(ds)
        os.write(w, json.dumps({"before": before, "after": uss(os.getpid()), "s": round(time.time() - t, 1)}).encode())
        os.close(w)

    def collect(batch_size: int) -> None:
        pipes = []
        for _ in range(batch_size):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                try:
                    child(w)
                finally:
                    os._exit(0)
            os.close(w)
            pipes.append((pid, r))
        for pid, r in pipes:
            with os.fdopen(r) as f:
                results.append(json.loads(f.read()))
            os.waitpid(pid, 0)

    if parallel:
        collect(forks)
    else:
        for _ in range(forks):
            collect(1)
    growth = [r["after"] - r["before"] for r in results]
    return {"images": len(ds), "dataset_s": round(built, 1), "parent_pss": smaps(os.getpid()).get("Pss", 0),
            "parallel": parallel, "children": results, "child_growth": growth, "max_growth": max(growth)}


def _in_checkout(code: Path, what: str, *args: str, threads: int = 1) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, str(THIS), "--worker", what, "--code", str(code), *args],
                          cwd=code, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the report ----------------------------------------------------------------------------------

def _gb(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e9:.2f} GB"


def _mb(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e6:.0f} MB"


def report(res: dict[str, Any]) -> str:
    rows = []
    names = [n for n in ("before", "after") if n in res["runs"]]
    runs = [res["runs"][n] for n in names]

    def cell(r, *keys, fmt=str):
        v = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return "-" if v is None else fmt(v)
    rows.append("| | " + " | ".join(names) + " | bar |")
    rows.append("| --- | " + " | ".join("---" for _ in names) + " | --- |")
    rows.append("| data summary + anchor fit printed at | " + " | ".join(cell(r, "train", "data_summary_at_s", fmt=lambda v: f"{v} s") for r in runs) + " | |")
    rows.append("| run set up (before the first batch) at | " + " | ".join(cell(r, "train", "setup_done_s", fmt=lambda v: f"{v} s") for r in runs) + " | |")
    rows.append("| first step done at | " + " | ".join(cell(r, "train", "first_step_done_s", fmt=lambda v: f"{v} s") for r in runs) + " | first step within 30 s |")
    rows.append("| median step | " + " | ".join(cell(r, "train", "median_sec_per_iter", fmt=lambda v: f"{v:.1f} s") for r in runs) + " | |")
    rows.append("| peak PSS, process tree (4 workers) | " + " | ".join(cell(r, "train", "peak_pss", fmt=_gb) for r in runs) + " | under 3 GB |")
    rows.append("| epoch over 40k images, max worker growth (USS) | " + " | ".join(cell(r, "epoch", "max_growth", fmt=_mb) for r in runs) + " | at most 100 MB |")
    rows.append("| forked reader of every entry (118k), max growth | " + " | ".join(cell(r, "forks", "max_growth", fmt=_mb) for r in runs) + " | |")
    lines = ["\n".join(rows), ""]
    for n, r in zip(names, runs):
        ms = r.get("train", {}).get("machine_at_start", {})
        lines.append(f"- {n}: {r['code']}; load average at the start of the training run {ms.get('loadavg')} "
                     f"on {ms.get('cpus')} CPUs, busiest others {[b['name'] + ' ' + str(b['cpu']) for b in ms.get('busiest', [])]}")
        for key in ("epoch", "forks"):
            if "error" in r.get(key, {}):
                lines.append(f"  - {key} failed: {r[key]['error'][-500:]}")
        if r.get("train", {}).get("returncode"):
            lines.append(f"  - training failed: {r['train'].get('output_tail')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--code", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--before", default=None, help="checkout of the code before (e.g. /work/main)")
    ap.add_argument("--after", default=str(REPO), help="checkout of the code after (default: this one)")
    ap.add_argument("--work", default="/work/scratch/coco_scale", help="the generated files go here")
    ap.add_argument("--images", type=int, default=118_287, help="images of the big file (COCO train2017: 118,287)")
    ap.add_argument("--epoch-images", type=int, default=40_000, help="images of the file of measurement 3")
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--model", default="fcis_resnet18")
    ap.add_argument("--threads", type=int, default=1, help="OMP threads of the training run")
    ap.add_argument("--sample", type=float, default=0.5, help="seconds between PSS samples")
    ap.add_argument("--forks", type=int, default=4)
    ap.add_argument("--parallel-forks", action="store_true", help="run the forked readers at the same time")
    ap.add_argument("--only", default="train,epoch,forks")
    ap.add_argument("--train-args", default="", help="more flags for the after checkout's fcis train, e.g. "
                    "'--input-size model' (one string, split on blanks)")
    ap.add_argument("--out", default=None, help="JSON of every number (default: <work>/coco_scale_<images>.json)")
    args = ap.parse_args(argv)

    if args.worker:   # inside a checkout: its fcis first on the path
        sys.path.insert(0, str(Path(args.code).resolve()))
        if args.worker == "epoch":
            out = worker_epoch(args.json, workers=4, batch=16)
        else:
            out = forked_readers(args.json, args.forks, args.parallel_forks)
        print(json.dumps(out))
        return 0

    sys.path.insert(0, str(REPO))
    from benchmarks.coco_scale_data import make_coco_scale

    work = Path(args.work)
    big = make_coco_scale(work, args.images, name=f"train_{args.images}.json")
    small = make_coco_scale(work, min(args.epoch_images, args.images), name=f"train_{min(args.epoch_images, args.images)}.json")
    only = set(args.only.split(","))
    res: dict[str, Any] = {"big": {"json": str(big), "mb": round(big.stat().st_size / 1e6)},
                           "epoch_file": {"json": str(small), "mb": round(small.stat().st_size / 1e6)},
                           "argv": sys.argv[1:], "runs": {}}
    for name, code in (("before", args.before), ("after", args.after)):
        if code is None:
            continue
        code = Path(code).resolve()
        run: dict[str, Any] = {"code": str(code)}
        res["runs"][name] = run
        if "train" in only:
            print(f"[{name}] training run on {big.name} ...", flush=True)
            run["train"] = first_step(code, big, work / f"run_{name}", iterations=args.iterations, sample=args.sample,
                                      threads=args.threads, model=args.model,
                                      extra=tuple(args.train_args.split()) if name == "after" else ())
        if "epoch" in only:
            print(f"[{name}] one epoch through 4 workers on {small.name} ...", flush=True)
            run["epoch"] = _in_checkout(code, "epoch", "--json", str(small))
        if "forks" in only:
            print(f"[{name}] forked readers on {big.name} ...", flush=True)
            run["forks"] = _in_checkout(code, "forks", "--json", str(big), "--forks", str(args.forks),
                                        *(["--parallel-forks"] if args.parallel_forks else []))
        out = Path(args.out) if args.out else work / f"coco_scale_{args.images}.json"
        out.write_text(json.dumps(res, indent=1))
    print(report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
