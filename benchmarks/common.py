"""Shared pieces of the benchmark harness: budgets, timing, machine description, model building.

Every timing is ``timeit``: ``warmup`` untimed calls, then ``repeats`` timed calls; the median is
the reported figure and the individual times are kept in the JSON.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as _dt
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]

#: COCO's 80 foreground classes: the class count of every timing section (head sizes as the paper's).
COCO_CLASSES = 80


@dataclass
class Budget:
    """Every size, count and budget of a run. ``FULL`` took 83 minutes on the quiet
    2-core CPU (2026-11-21); ``QUICK`` is sized for under 10 minutes (smoke numbers, not results)."""

    name: str = "full"
    repeats: int = 5                  # timed repeats per figure (median reported)
    warmup: int = 1                   # untimed calls before them
    num_classes: int = COCO_CLASSES
    # 1. latency: batch 1, image (H, W), short side min_size, long side <= max_size
    latency_image: tuple[int, int] = (600, 800)
    latency_min_size: int = 600
    latency_max_size: int = 1000
    latency_models: tuple[str, ...] = ("fcis_resnet50", "fcis_resnet101", "maskrcnn_resnet50_fpn")
    detections: int = 100             # forced detection count of the random-weight timings (1, 6, 7)
    # 2. per-RoI scaling on the score maps / FPN features of one latency_image
    roi_models: tuple[str, str] = ("fcis_resnet50", "maskrcnn_resnet50_fpn")
    roi_counts: tuple[int, ...] = (100, 300, 1000, 2000)
    roi_repeats: int = 3
    # 3. training throughput and peak memory (one subprocess per model)
    throughput_models: tuple[str, ...] = ("fcis_resnet50", "maskrcnn_resnet50_fpn")
    throughput_image: tuple[int, int] = (600, 800)
    throughput_batch: int = 2
    throughput_steps: int = 3
    # 4./5. accuracy at equal budget (fcis.engine.train from scratch, same TrainConfig for all)
    datasets: tuple[str, ...] = ("shapes", "pennfudan")
    shapes_num_images: int = 300
    shapes_image: tuple[int, int] = (256, 320)
    shapes_min_object_size: int = 32  # as the demo: objects of 32 px .. 45% of the short side
    shapes_iterations: int = 300
    penn_iterations: int = 160
    penn_min_size: int = 320
    penn_max_size: int = 512
    penn_train: int = 130             # the fixed split: 130 train / 40 held out (seeded, sorted names)
    penn_val_limit: int = 0           # evaluate on the first N held-out images only (0: all)
    shapes_val_limit: int = 0
    batch_size: int = 2
    # Random backbones: AdamW (as the demo) learns in hundreds of iterations where SGD barely starts.
    optimizer: str = "adamw"
    lr: float = 1e-3
    warmup_iters: int = 50
    lr_steps: tuple[float, ...] = (0.75, 0.92)
    clip_grad_norm: float | None = 10.0
    eval_detections: int = 0          # detections kept per image at evaluation (0: each model's 100)
    train_workers: int = 1
    seed: int = 0
    # With both datasets present, train them side by side: one process per dataset with this many
    # torch threads each (on 2 cores, two 1-thread processes do ~1.6× the work of one 2-thread one).
    parallel_datasets: bool = True
    parallel_threads: int = 1
    # 6. the limit: backbone FLOP/s beside the matmul peak
    limit_models: tuple[str, ...] = ("fcis_resnet50", "fcis_resnet101", "maskrcnn_resnet50_fpn")
    limit_image: tuple[int, int] = (600, 800)
    matmul_sizes: tuple[int, ...] = (2048, 4096)
    # 8. the bare `fcis train` against the pre-issue-11 defaults on real photos (opt-in: --only real_photos)
    real_model: str = "fcis_resnet18"
    real_penn_iterations: int = 300
    real_balloon_iterations: int = 200
    # 9. a converted model (fcis convert weights) on COCO val2017 (opt-in: --only coco_val; skipped
    # without the files): the checkpoint, the folder with annotations/ and val2017/, first N images (0: all)
    coco_val_weights: str = ""
    coco_val_root: str = ""
    coco_val_limit: int = 0
    # 7. GPU (only where torch.cuda.is_available())
    gpu_model: str = "fcis_resnet101"
    gpu_image: tuple[int, int] = (600, 1000)
    gpu_repeats: int = 10
    gpu_warmup: int = 3
    gpu_num_rois: int = 300
    gpu_train_batch: int = 2
    gpu_train_models: tuple[str, ...] = ("fcis_resnet101", "maskrcnn_resnet50_fpn")
    # Extra config fields per builder name, applied wherever the harness builds that model (empty
    # in the real runs; the tests use it to shrink proposal counts).
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: int = 0                  # torch threads (0: torch's default); also in the subprocesses

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Budget":
        """Inverse of ``to_dict`` after a JSON round trip (lists back to tuples)."""
        def tuples(x: Any) -> Any:
            if isinstance(x, list):
                return tuple(tuples(v) for v in x)
            if isinstance(x, dict):
                return {k: tuples(v) for k, v in x.items()}
            return x

        return cls(**{k: tuples(v) for k, v in data.items()})

    def with_overrides(self, assignments: list[str]) -> "Budget":
        """``["key=value", ...]`` (values as Python literals) applied on a copy."""
        changes = {}
        names = {f.name for f in dataclasses.fields(self)}
        for item in assignments:
            key, _, raw = item.partition("=")
            key = key.strip()
            if key not in names:
                raise SystemExit(f"--set {item!r}: unknown budget field (fields: {', '.join(sorted(names))})")
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
            if isinstance(value, list):
                value = tuple(value)
            changes[key] = value
        return dataclasses.replace(self, **changes)


FULL = Budget()
QUICK = Budget(
    name="quick", repeats=1, warmup=1, roi_counts=(100, 300), roi_repeats=1,
    throughput_batch=1, throughput_steps=1,
    shapes_num_images=30, shapes_iterations=10, penn_iterations=6, batch_size=1, shapes_val_limit=4,
    penn_val_limit=4, warmup_iters=4, eval_detections=20, matmul_sizes=(1024, 2048), gpu_repeats=3, gpu_warmup=1,
)


# --- timing --------------------------------------------------------------------------------------

def sync(device: str | torch.device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn: Callable[[], Any], repeats: int, warmup: int = 1, device: str = "cpu") -> dict[str, Any]:
    """``warmup`` untimed calls, then ``repeats`` timed ones: ``{"median", "times"}`` in seconds."""
    for _ in range(warmup):
        fn()
        sync(device)
    times = []
    for _ in range(max(repeats, 1)):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return {"median": statistics.median(times), "times": times}


def alternate(calls: dict[str, Callable[[], Any]], rounds: int,
              line: Callable[[int, list[float]], str]) -> dict[str, list[float]]:
    """Each of ``calls`` once, untimed, then ``rounds`` rounds calling each in turn, timed: seconds
    per call by name. After each round ``line(round, its times in calls' order)`` is printed. A
    shared machine's load swings move the ratio within a round far less than separate medians."""
    for fn in calls.values():                                            # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(rounds):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
        print(line(i, [t[-1] for t in times.values()]), flush=True)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# --- machine -------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def other_cpu_use(seconds: float = 3.0) -> float | None:
    """Fraction of the machine's CPU time spent busy over ``seconds`` while this process sleeps:
    the load from other processes just before a run. (The load average is a poorer guide: it
    lags by minutes, and at the end of a run it counts the run's own worker processes.)"""
    def busy_total() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
        return sum(fields) - idle, sum(fields)
    try:
        b0, t0 = busy_total()
        time.sleep(seconds)
        b1, t1 = busy_total()
    except (OSError, ValueError, IndexError):
        return None
    return (b1 - b0) / (t1 - t0) if t1 > t0 else None


def machine_info() -> dict[str, Any]:
    import torchvision

    info = {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "torch_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    busy = other_cpu_use()
    if busy is not None:
        info["cpu_busy_before_start"] = busy
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --- models --------------------------------------------------------------------------------------

def available(name: str) -> bool:
    from fcis.models import BUILDERS

    return name in BUILDERS


def build(name: str, num_classes: int, budget: Budget | None = None, **overrides: Any) -> torch.nn.Module:
    """``fcis.models.BUILDERS[name]`` with ``overrides`` (and ``budget.model_overrides[name]``): the
    project's models, each with its typed ``config`` (FCIS, InstanceFCN, Mask R-CNN alike)."""
    from fcis.models import BUILDERS

    if budget is not None:
        overrides = {**overrides, **budget.model_overrides.get(name, {})}

    if name in BUILDERS:
        return BUILDERS[name](num_classes=num_classes, **overrides)
    raise KeyError(f"model {name!r} is not available (not in fcis.models.BUILDERS)")


def detections_override(name: str, n: int) -> dict[str, Any]:
    """The config field that caps the detections per image of model ``name`` set to ``n``."""
    return {"detections_per_img": n}


def forced_detections_overrides(name: str, n: int = 100) -> dict[str, Any]:
    """Settings under which a random-weight model keeps exactly ``n`` detections: no score
    threshold, and the cap at ``n`` (100 is every model's default)."""
    if name.startswith(("fcis", "maskrcnn")):
        return {"score_thresh": 0.0, **({} if n == 100 else detections_override(name, n))}
    return {}


@torch.no_grad()
def calibrate_bn(model: torch.nn.Module, image: torch.Tensor) -> int:
    """Set the backbone's BatchNorm running statistics from one pass over ``image`` (returns the
    number of layers set).

    A randomly initialised ResNet in eval mode normalises with mean 0 / variance 1, so each
    residual block adds to the activations' scale: at ResNet-101 they reach ~1e5, the head's
    logits saturate the softmax and FCIS keeps no detection at all. With statistics from the
    image itself the activations have a trained network's scale. Weights stay random."""
    from torch.nn.modules.batchnorm import _BatchNorm

    layers = [m for m in model.backbone.modules() if isinstance(m, _BatchNorm)]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one pass, exactly that pass's statistics
    was_training = model.backbone.training
    batch, _ = model.transform([image])
    model.backbone.train()
    model.backbone(batch.tensors)
    model.backbone.train(was_training)
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    return len(layers)


def random_image(height: int, width: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(3, height, width, generator=gen)


def synthetic_target(height: int, width: int, num_classes: int) -> dict[str, torch.Tensor]:
    """Three rectangles (boxes, labels, masks) scaled to the image."""
    rel = torch.tensor([[0.06, 0.1, 0.38, 0.67], [0.44, 0.17, 0.88, 0.92], [0.12, 0.7, 0.33, 0.97]])
    boxes = (rel * torch.tensor([width, height, width, height])).round()
    masks = torch.zeros(3, height, width, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        m[y1:y2, x1:x2] = 1
    labels = torch.tensor([1, 5, 17]).clamp(max=num_classes)
    return {"boxes": boxes, "labels": labels, "masks": masks}


def random_rois(num: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(num, 4) xyxy boxes inside a ``height``×``width`` image, 16 px to about half the image."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=gen) * torch.tensor([width, height]) * 0.8
    wh = torch.rand(num, 2, generator=gen) * torch.tensor([width, height]) * 0.5 + 16
    return torch.cat([xy, (xy + wh).minimum(torch.tensor([width, height]))], dim=1)


def pick(names, prefix: str) -> str | None:
    """The first of ``names`` starting with ``prefix`` (the peer a ratio is taken against)."""
    return next((n for n in names if n.startswith(prefix)), None)


def fmt_s(x: float | None, unit: str = "ms") -> str:
    if x is None:
        return "-"
    if unit == "ms":
        return f"{1000 * x:.1f}"
    return f"{x:.3f}"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)
