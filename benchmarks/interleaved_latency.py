"""Interleaved inference timing (benchmarks/SPEED.md, command A), one torch thread.

``fcis_resnet50`` and ``maskrcnn_resnet50_fpn`` are called alternately on the same 600×800 image
(random weights, 80 classes, 100 forced detections, BatchNorm calibrated, as section 1); the ratio
of each adjacent pair is taken and their median reported, which a shared machine's load swings
move much less than two separate medians.

    python benchmarks/interleaved_latency.py [PAIRS]     # default 5 pairs
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import build, calibrate_bn, forced_detections_overrides, random_image  # noqa: E402


def main(pairs: int = 5) -> float:
    torch.set_num_threads(1)
    image = random_image(600, 800)
    models = {}
    for name in ("fcis_resnet50", "maskrcnn_resnet50_fpn"):
        torch.manual_seed(0)
        model = build(name, 80, min_size=600, max_size=1000, **forced_detections_overrides(name, 100)).eval()
        calibrate_bn(model, image)
        models[name] = model
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():                                     # warm-up
            model([image])
        for i in range(pairs):
            for name, model in models.items():
                start = time.perf_counter()
                model([image])
                times[name].append(time.perf_counter() - start)
            f, m = (times[n][-1] for n in models)
            print(f"pair {i}: fcis {f:.2f} s, maskrcnn {m:.2f} s, ratio {f / m:.2f}", flush=True)
    f_t, m_t = times.values()
    ratios = [a / b for a, b in zip(f_t, m_t)]
    print(f"median fcis {statistics.median(f_t):.2f} s, maskrcnn {statistics.median(m_t):.2f} s, "
          f"median pair ratio {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")
    return statistics.median(ratios)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
