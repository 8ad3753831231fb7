"""Mixed precision speed (issue 6): fp32 beside AMP for fcis_resnet50 at 600x1000 on CUDA.

One training step (forward under autocast, backward, SGD step; fp16 with a GradScaler, through
``fcis.engine.step.train_step``, the code the trainer runs) and one inference, each timed as
the median of ``--repeats`` runs after ``--warmup`` runs, in fp32 and under AMP in the same
process, with the ratio fp32 / AMP (above 1: AMP is faster) and the peak memory of each.
Random weights, one 600x1000 image with three objects, 81 classes (COCO).

    python -m benchmarks.amp_speed [--dtype bf16|fp16] [--repeats 10] [--warmup 3] [--json out.json]

Needs CUDA: without it the script says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from fcis.engine.amp import autocast, check_amp, make_grad_scaler
from fcis.engine.step import train_step
from fcis.models import fcis_resnet50

HEIGHT, WIDTH = 600, 1000


def timeit(fn, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn`` in seconds (CUDA synchronised around each run)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def image_and_target(device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A random 600x1000 image with three rectangular objects."""
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(3, HEIGHT, WIDTH, generator=gen)
    boxes = torch.tensor([[50.0, 60.0, 300.0, 400.0], [350.0, 100.0, 800.0, 550.0], [600.0, 420.0, 960.0, 590.0]])
    masks = torch.zeros(3, HEIGHT, WIDTH, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        m[y1:y2, x1:x2] = 1
    target = {"boxes": boxes, "labels": torch.tensor([1, 5, 17]), "masks": masks}
    return image.to(device), {k: v.to(device) for k, v in target.items()}


def measure(dtype: torch.dtype | None, device: torch.device, repeats: int, warmup: int) -> dict[str, float]:
    """Train-step and inference medians (s) and peak memory (GiB) with autocast ``dtype`` (None: fp32)."""
    torch.manual_seed(0)
    model = fcis_resnet50(num_classes=80, min_size=HEIGHT, max_size=WIDTH).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    scaler = make_grad_scaler(device, dtype)
    image, target = image_and_target(device)

    def step() -> None:
        model.train() # noqa: F821 (ruff resolves it after the del below; the closure runs before)
        train_step(model, optimizer, params, [image], [target], device, amp_dtype=dtype, scaler=scaler)  # noqa: F821

    @torch.no_grad()
    def infer() -> None:
        model.eval()  # noqa: F821 (as above)
        with autocast(device, dtype):
            model([image])  # noqa: F821

    out = {}
    torch.cuda.reset_peak_memory_stats(device)
    out["train_step_s"] = timeit(step, repeats, warmup)
    out["train_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    out["inference_s"] = timeit(infer, repeats, warmup)
    out["inference_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del model, optimizer
    torch.cuda.empty_cache()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16", help="AMP dtype (default bf16)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="a CUDA device (default cuda)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("amp_speed.py: CUDA is not available; this benchmark measures GPU mixed precision "
              "and needs a CUDA device", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    amp_dtype = check_amp(True, args.dtype, device)
    fp32 = measure(None, device, args.repeats, args.warmup)
    amp = measure(amp_dtype, device, args.repeats, args.warmup)
    result = {"machine": platform.platform(), "gpu": torch.cuda.get_device_name(device), "torch": torch.__version__,
              "amp_dtype": args.dtype, "repeats": args.repeats, "image": f"{HEIGHT}x{WIDTH}",
              **{f"fp32_{k}": v for k, v in fp32.items()}, **{f"amp_{k}": v for k, v in amp.items()},
              "train_speedup_fp32_over_amp": fp32["train_step_s"] / amp["train_step_s"],
              "inference_speedup_fp32_over_amp": fp32["inference_s"] / amp["inference_s"]}
    for key, value in result.items():
        print(f"{key:36s} {value:.4f}" if isinstance(value, float) else f"{key:36s} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
