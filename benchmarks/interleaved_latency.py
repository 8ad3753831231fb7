"""Interleaved inference timing (benchmarks/SPEED.md, command A; one torch thread unless --threads).

``fcis_resnet50`` and ``maskrcnn_resnet50_fpn`` are called alternately on the same 600×800 image
(random weights, 80 classes, 100 forced detections, BatchNorm calibrated, as section 1); the ratio
of each adjacent pair is taken and their median reported, which a shared machine's load swings
move much less than two separate medians.

    python -m benchmarks.interleaved_latency [PAIRS] [--threads N]   # default 5 pairs, 1 thread
    (python benchmarks/interleaved_latency.py too)
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python benchmarks/interleaved_latency.py`: run as the module
    _path = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.getenv("PYTHONPATH")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.interleaved_latency", *sys.argv[1:]],
              {**os.environ, "PYTHONPATH": _path})

import torch

from .common import alternate, build, calibrate_bn, forced_detections_overrides, random_image


def main(pairs: int = 5, threads: int = 1) -> float:
    torch.set_num_threads(threads)
    image = random_image(600, 800)
    models = {}
    for name in ("fcis_resnet50", "maskrcnn_resnet50_fpn"):
        torch.manual_seed(0)
        model = build(name, 80, min_size=600, max_size=1000, **forced_detections_overrides(name, 100)).eval()
        calibrate_bn(model, image)
        models[name] = model
    with torch.no_grad():
        times = alternate({name: (lambda m=model: m([image])) for name, model in models.items()}, pairs,
                          lambda i, t: f"pair {i}: fcis {t[0]:.2f} s, maskrcnn {t[1]:.2f} s, ratio {t[0] / t[1]:.2f}")
    f_t, m_t = times.values()
    ratios = [a / b for a, b in zip(f_t, m_t)]
    print(f"median fcis {statistics.median(f_t):.2f} s, maskrcnn {statistics.median(m_t):.2f} s, "
          f"median pair ratio {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")
    return statistics.median(ratios)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="?", type=int, default=5, help="interleaved pairs to time (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    main(args.pairs, args.threads)
