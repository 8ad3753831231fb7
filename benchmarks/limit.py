"""Section 6: the limit. Each backbone's achieved GFLOP/s at 600×800 beside this machine's measured
float32 matrix-multiply peak (``torch.matmul`` of two n×n matrices, 2n³ FLOPs, median time).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add; convolutions
and matrix products only: BatchNorm, ReLU, pooling and the assembling's ``grid_sample`` count as 0)
over one forward of ``model.backbone`` on the normalised batch (FCIS: the dilated ResNet up to conv5;
Mask R-CNN: ResNet + FPN). The same counter over the whole ``model([image])`` gives the counted
FLOPs of inference, for scale.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .common import Budget, available, build, calibrate_bn, forced_detections_overrides, log, random_image, timeit


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(n: int, repeats: int, warmup: int, device: str = "cpu") -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    t = timeit(lambda: torch.matmul(a, b), repeats, warmup, device)
    return {"n": n, "median_s": t["median"], "times": t["times"], "gflops_per_s": 2 * n ** 3 / t["median"] / 1e9}


@torch.no_grad()
def run(budget: Budget, device: str = "cpu") -> dict[str, Any]:
    out: dict[str, Any] = {"image": list(budget.limit_image), "repeats": budget.repeats, "warmup": budget.warmup,
                           "matmul": {}, "models": {}}
    for n in budget.matmul_sizes:
        log(f"limit: matmul {n}x{n}")
        out["matmul"][str(n)] = matmul_peak(n, max(budget.repeats, 3), budget.warmup, device)
    peak = max(m["gflops_per_s"] for m in out["matmul"].values())
    out["matmul_peak_gflops_per_s"] = peak
    h, w = budget.limit_image
    image = random_image(h, w).to(device)
    for name in budget.limit_models:
        if not available(name):
            out["models"][name] = {"available": False}
            continue
        log(f"limit: {name} backbone FLOPs and time")
        torch.manual_seed(0)
        model = build(name, budget.num_classes, budget, min_size=min(h, w), max_size=max(h, w),
                      **forced_detections_overrides(name, budget.detections)).to(device).eval()
        calibrate_bn(model, image)
        batch, _ = model.transform([image])
        x = batch.tensors
        # The lambdas are called at once, inside this iteration (noqa: B023).
        flops = count_flops(lambda: model.backbone(x))  # noqa: B023
        t = timeit(lambda: model.backbone(x), budget.repeats, budget.warmup, device)  # noqa: B023
        total_flops = count_flops(lambda: model([image]))  # noqa: B023
        achieved = flops / t["median"] / 1e9
        out["models"][name] = {
            "available": True, "input": list(x.shape), "backbone_gflops": flops / 1e9,
            "backbone_s": t["median"], "backbone_times": t["times"], "achieved_gflops_per_s": achieved,
            "fraction_of_matmul_peak": achieved / peak, "inference_counted_gflops": total_flops / 1e9,
        }
    return out
