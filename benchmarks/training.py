"""Section 3: training throughput (images/s) and peak memory, one fresh subprocess per model.

Each model trains in its own Python process (``python -m benchmarks.training --worker SPEC``) on
the same random images and targets (three rectangles each), with SGD (momentum 0.9, weight decay
5e-4, lr 1e-4 so that random weights stay finite), at the model's default configuration (FCIS:
OHEM over the 300 proposals + GT; Mask R-CNN: torchvision's 512 sampled RoIs).

Memory: after the model, optimizer and inputs exist, the process records its resident set
(``VmRSS``), resets the kernel's high-water mark (writing ``5`` to ``/proc/self/clear_refs``), runs
the warm-up and timed steps and reads the high-water mark again (``VmHWM``; ``getrusage``'s
``ru_maxrss`` gives the same number after the reset). Peak growth = high-water mark − resident set
before the first step: activations, gradients, the optimizer's momentum buffers and allocator
slack, everything torch takes from the OS (tracemalloc sees none of torch's allocations). Where
``clear_refs`` cannot be written the high-water mark may predate training, which the JSON says
(``hwm_reset``: false).
"""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from .common import build, random_image, synthetic_target, timeit

    torch.set_flush_denormal(True)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec.get("seed", 0))
    h, w = spec["image"]
    n = spec["num_classes"]
    model = build(spec["model"], n, min_size=min(h, w), max_size=max(h, w),
                  **spec.get("overrides", {})).train()
    images = [random_image(h, w, seed=i + 1) for i in range(spec["batch"])]
    targets = [synthetic_target(h, w, n) for _ in range(spec["batch"])]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=5e-4)
    losses_seen: list[float] = []

    def step() -> None:
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses_seen.append(float(loss.detach()))

    gc.collect()
    rss_before = _status_kib("VmRSS")
    hwm_before_reset = _status_kib("VmHWM")
    reset = _reset_hwm()
    t = timeit(step, spec["steps"], spec["warmup"])
    hwm = _status_kib("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    peak = hwm if hwm is not None else maxrss
    return {
        "model": spec["model"], "batch": spec["batch"], "image": [h, w], "num_classes": n,
        "step_s": t["median"], "step_times": t["times"], "images_per_s": spec["batch"] / t["median"],
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "trainable_params_m": sum(p.numel() for p in params) / 1e6,
        "rss_before_mib": rss_before / 1024 if rss_before else None,
        "peak_rss_mib": peak / 1024, "peak_growth_mib": (peak - rss_before) / 1024 if rss_before else None,
        "ru_maxrss_mib": maxrss / 1024, "hwm_before_reset_mib": hwm_before_reset / 1024 if hwm_before_reset else None,
        "hwm_reset": reset, "losses": losses_seen, "torch_threads": torch.get_num_threads(),
    }


def run(budget, device: str = "cpu") -> dict[str, Any]:
    from . import module_command, module_env
    from .common import available, log, pick, ratio

    out: dict[str, Any] = {"image": list(budget.throughput_image), "batch": budget.throughput_batch,
                           "steps": budget.throughput_steps, "warmup": budget.warmup,
                           "num_classes": budget.num_classes, "models": {}}
    for name in budget.throughput_models:
        if not available(name):
            out["models"][name] = {"available": False}
            continue
        log(f"training throughput: {name} (subprocess)")
        spec = {"model": name, "image": list(budget.throughput_image), "batch": budget.throughput_batch,
                "steps": budget.throughput_steps, "warmup": budget.warmup, "num_classes": budget.num_classes,
                "overrides": budget.model_overrides.get(name, {}), "threads": budget.threads}
        start = time.perf_counter()
        proc = subprocess.run(module_command("training", "--worker", json.dumps(spec)),
                              capture_output=True, text=True, env={**module_env(), "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            out["models"][name] = {"available": True, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["available"] = True
        result["process_wall_s"] = time.perf_counter() - start
        out["models"][name] = result
    out["fcis"] = pick(budget.throughput_models, "fcis")
    out["peer"] = pick(budget.throughput_models, "maskrcnn")
    fcis = out["models"].get(out["fcis"], {})
    peer = out["models"].get(out["peer"], {})
    out["ratio_step_fcis_over_maskrcnn"] = ratio(fcis.get("step_s"), peer.get("step_s"))
    out["ratio_images_per_s_fcis_over_maskrcnn"] = ratio(fcis.get("images_per_s"), peer.get("images_per_s"))
    out["ratio_peak_growth_fcis_over_maskrcnn"] = ratio(fcis.get("peak_growth_mib"), peer.get("peak_growth_mib"))
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
    else:
        raise SystemExit("usage: python -m benchmarks.training --worker SPEC_JSON (run by benchmarks.run)")
