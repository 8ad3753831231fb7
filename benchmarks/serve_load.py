"""Load test of ``fcis serve``: start the server as a subprocess on a free local port, send
``--requests`` predictions from ``--clients`` concurrent clients, check every answer against the
server's own answer to the same image sent alone, and write p50/p95 latency, throughput and the
server's resident memory before and after to ``benchmarks/SERVE.md``.

    python -m benchmarks.serve_load                  # random-init fcis_resnet18: the tiny and the demo configuration
    python -m benchmarks.serve_load --weights runs/demo/train/best.pt --images runs/demo/data/images

Also imported by tests/test_serve_process.py (the server process, the client and the tiny model).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]

#: a tiny FCIS (64-80 px input, 64-channel heads, 20 RoIs) that answers in tens of milliseconds on a CPU.
SMALL = dict(min_size=64, max_size=80, anchor_sizes=(16, 32, 64), head_channels=64, rpn_channels=64,
             rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=20, detections_per_img=8)
NAMES = ["circle", "square", "triangle"]
CAT_IDS = {1: 11, 2: 12, 3: 13}


def tiny_checkpoint(path: str | os.PathLike, seed: int = 0, config: dict[str, Any] | None = None) -> Path:
    """A random-init ``fcis_resnet18`` (3 classes, category ids 11-13; ``config``: builder
    keywords, default :data:`SMALL`) saved with the project's checkpoint writer; its heads are
    re-initialised wider so that the scores spread out."""
    import torch
    from torch import nn

    from fcis.engine import save_checkpoint
    from fcis.models import fcis_resnet18

    torch.manual_seed(seed)
    model = fcis_resnet18(num_classes=3, **(SMALL if config is None else config))
    nn.init.normal_(model.head.reduce.weight, std=0.05)
    for layer in (model.head.inside_outside, model.head.boxes, model.rpn.head.cls_logits, model.rpn.head.bbox_pred):
        nn.init.normal_(layer.weight, std=0.3)
    return save_checkpoint(path, model=model.state_dict(), model_name="fcis_resnet18",
                           model_config=model.config.to_dict(),
                           dataset={"class_names": NAMES, "label_to_cat_id": CAT_IDS})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m fcis serve ARGS --port <free>`` in a subprocess (this checkout first on the
    path), its output in ``log``. Use as a context manager; ``wait_ready()`` polls ``/readyz``."""

    def __init__(self, args: Sequence[str], log: str | os.PathLike, *, threads: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": str(threads)}
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "fcis", "serve", *map(str, args),
                                      "--port", str(self.port), "--log-level", "warning"],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the server was not ready after {timeout} s: {self.log()}")

    def rss_mib(self) -> dict[str, float]:
        """Resident memory now (VmRSS) and at its peak (VmHWM), MiB (Linux /proc)."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        return {"rss": fields["VmRSS"], "peak": fields["VmHWM"]}

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def post_image(client, url: str, data: bytes, filename: str = "image.png", field: str = "image",
               headers: dict[str, str] | None = None) -> tuple[int, dict, float]:
    """POST ``data`` as multipart field ``field`` to ``url/v1/predict``: (status, JSON body, seconds)."""
    start = time.perf_counter()
    r = client.post(f"{url}/v1/predict", files={field: (filename, data)}, headers=headers or {}, timeout=120)
    return r.status_code, r.json(), time.perf_counter() - start


def without_time(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "time_ms"}


def run_load(url: str, payloads: Sequence[tuple[str, bytes]], *, clients: int = 8,
             requests: int = 200) -> list[dict[str, Any]]:
    """``requests`` predictions from ``clients`` threads (each with its own connection), image
    ``i % len(payloads)`` for request ``i``. Returns ``[{"index", "image", "status", "body",
    "seconds"}]`` in request order."""
    import httpx

    def client_job(c: int) -> list[dict[str, Any]]:
        out = []
        with httpx.Client() as client:
            for i in range(c, requests, clients):
                name, data = payloads[i % len(payloads)]
                status, body, seconds = post_image(client, url, data, name)
                out.append({"index": i, "image": i % len(payloads), "status": status, "body": body,
                            "seconds": seconds})
        return out

    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client_job, range(clients)) for r in rs]
    return sorted(results, key=lambda r: r["index"])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def png_bytes(path: Path) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


#: random-init stand-ins, by name: (model config, image size of the synthetic photos sent)
STAND_INS = {
    "tiny": (SMALL, (96, 120)),
    # fcis demo's model (fcis_resnet18, 256-320 px input): what `fcis serve --weights runs/demo/train/best.pt` serves
    "demo": (dict(min_size=256, max_size=320, anchor_sizes=(16, 32, 64, 128), rpn_pre_nms_top_n_test=1000),
             (256, 320)),
}


def measure(weights: Path, files: Sequence[Path], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Start the server on ``weights``, send each file alone (the reference answers), then the
    load; returns the figures and whether every answer was right."""
    import httpx

    payloads = [(p.name, png_bytes(p)) for p in files]
    cmd = ["--weights", weights, "--workers", args.workers, "--threads", args.threads,
           "--score-threshold", args.score_threshold, "--max-queue", 4 * args.clients, "--device", "cpu"]
    with ServerProcess(cmd, tmp / "server.log", threads=args.threads) as server:
        t0 = time.perf_counter()
        server.wait_ready(timeout=300)
        ready_s = time.perf_counter() - t0
        with httpx.Client() as client:
            reference = [without_time(post_image(client, server.url, d, n)[1]) for n, d in payloads]
        before, load_before = server.rss_mib(), os.getloadavg()[0]
        t0 = time.perf_counter()
        results = run_load(server.url, payloads, clients=args.clients, requests=args.requests)
        wall = time.perf_counter() - t0
        after, load_after = server.rss_mib(), os.getloadavg()[0]
        log = server.log()
    correct = sum(r["status"] == 200 and without_time(r["body"]) == reference[r["image"]] for r in results)
    lat = [1000 * r["seconds"] for r in results]
    server_ms = [r["body"]["time_ms"] for r in results if r["status"] == 200]
    sizes = ", ".join(sorted({f"{r['image']['width']}x{r['image']['height']}" for r in reference}))
    rows = [("requests", f"{len(results)} from {args.clients} concurrent clients, {len(payloads)} PNGs ({sizes})"),
            ("answered correctly", f"{correct} / {len(results)}"),
            ("status codes", ", ".join(f"{s}: {sum(r['status'] == s for r in results)}"
                                       for s in sorted({r["status"] for r in results}))),
            ("latency p50 / p95 / max (client, ms)",
             f"{percentile(lat, 50):.0f} / {percentile(lat, 95):.0f} / {max(lat):.0f}"),
            ("inference p50 (server's time_ms)", f"{statistics.median(server_ms):.0f} ms" if server_ms else "-"),
            ("throughput", f"{len(results) / wall:.1f} requests/s ({wall:.1f} s wall)"),
            ("server RSS before / after the load (MiB)",
             f"{before['rss']:.0f} / {after['rss']:.0f} (peak {after['peak']:.0f})"),
            ("start to /readyz", f"{ready_s:.1f} s"),
            ("machine's 1-minute load average before / after (other jobs included)",
             f"{load_before:.1f} / {load_after:.1f} on {os.cpu_count()} CPUs"),
            ("instances per image (score >= threshold)", ", ".join(str(len(ref["instances"])) for ref in reference))]
    return {"rows": rows, "ok": correct == len(results), "log": log}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="a checkpoint to serve (default: the random-init stand-ins of --models)")
    parser.add_argument("--models", default="tiny,demo", help=f"stand-ins without --weights: {', '.join(STAND_INS)}")
    parser.add_argument("--images", help="folder of images to send (default: 4 synthetic shapes images)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="the server's --workers")
    parser.add_argument("--threads", type=int, default=1, help="the server's --threads (per inference)")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "SERVE.md"))
    args = parser.parse_args(argv)

    import torch

    from fcis.data import make_shapes

    runs = [(args.weights, None)] if args.weights else [(None, m.strip()) for m in args.models.split(",")]
    sections, ok = [], True
    for weights, stand_in in runs:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if stand_in is not None:
                config, size = STAND_INS[stand_in]
                weights = tiny_checkpoint(tmp / f"{stand_in}.pt", config=config)
                label = f"random-init fcis_resnet18, the `{stand_in}` configuration ({config['min_size']}-{config['max_size']} px input)"
            else:
                size, label = (256, 320), f"`{weights}`"
            if args.images:
                files = sorted(p for p in Path(args.images).iterdir()
                               if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:8]
            else:
                files = sorted(make_shapes(tmp / "shapes", num_images=4, seed=1, image_size=size,
                                           val_fraction=0.0)["images"].glob("*.png"))
            print(f"measuring {label} ...", flush=True)
            result = measure(Path(weights), files, args, tmp)
        ok &= result["ok"]
        if not result["ok"]:
            print(f"NOT ALL CORRECT; server log:\n{result['log']}", file=sys.stderr)
        sections += [f"### {label}", "", "| | |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in result["rows"]], ""]

    cmdline = "python -m benchmarks.serve_load " + " ".join(argv if argv is not None else sys.argv[1:])
    text = [
        "# `fcis serve` under load",
        "",
        f"Written by `{cmdline.strip()}` on {_dt.date.today().isoformat()} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"Python {platform.python_version()}).",
        "",
        f"Each server: `fcis serve --weights W --workers {args.workers} --threads {args.threads} "
        f"--score-threshold {args.score_threshold} --max-queue {4 * args.clients} --device cpu`, a subprocess "
        "on a free local port. Request i sends image i mod the number of images; every answer is compared "
        "with the server's answer to that image sent alone before the load (all JSON fields but `time_ms`). "
        "Latency is measured by the client: upload, queue, decode, inference, RLE encoding and JSON. RSS is "
        "the server process's resident memory (Linux `VmRSS`; peak: `VmHWM`), read after the reference "
        "answers and after the load. No timing is asserted by the tests (tests/test_serve_process.py checks "
        "that 200 requests from 8 clients are all answered correctly).",
        "",
        *sections,
    ]
    Path(args.out).write_text("\n".join(text))
    print("\n".join(text))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
