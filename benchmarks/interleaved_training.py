"""Interleaved training steps (benchmarks/SPEED.md, command F; one torch thread unless --threads).

``fcis_resnet50`` and ``maskrcnn_resnet50_fpn`` (or two named models) take training steps
alternately in one process on the same two 600×800 images (or H×W) with three rectangles each
(random weights, 80 classes, SGD as the throughput section: benchmarks/training.py); the ratio of each adjacent pair of steps is taken
(Mask R-CNN's step time over FCIS's = FCIS's images/s over Mask R-CNN's) and their median
reported, which a shared machine's load swings move much less than two separate runs. Peak memory
needs a process per model: that stays with the throughput section.

    python -m benchmarks.interleaved_training [PAIRS]     # default 3 pairs, after one warm-up step each
    python -m benchmarks.interleaved_training 3 fcis_resnet18 maskrcnn_resnet18_fpn 256 320   # the small setting
    python -m benchmarks.interleaved_training 3 --threads 2     # both cores (nothing else running)
    (python benchmarks/interleaved_training.py ... too)
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python benchmarks/interleaved_training.py`: run as the module
    _path = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.getenv("PYTHONPATH")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.interleaved_training", *sys.argv[1:]],
              {**os.environ, "PYTHONPATH": _path})

import torch

from .common import alternate, build, random_image, synthetic_target


def main(pairs: int = 3, fcis: str = "fcis_resnet50", maskrcnn: str = "maskrcnn_resnet50_fpn",
         height: int = 600, width: int = 800, threads: int = 1) -> float:
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    images = [random_image(height, width, seed=i + 1) for i in range(2)]
    targets = [synthetic_target(height, width, 80) for _ in range(2)]
    models, optimizers = {}, {}
    for name in (fcis, maskrcnn):
        torch.manual_seed(0)
        models[name] = build(name, 80, min_size=min(height, width), max_size=max(height, width)).train()
        params = [p for p in models[name].parameters() if p.requires_grad]
        optimizers[name] = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=5e-4)

    def step(name: str) -> None:
        losses = models[name](images, targets)
        loss = sum(losses.values())
        optimizers[name].zero_grad(set_to_none=True)
        loss.backward()                                                  # type: ignore[union-attr]
        optimizers[name].step()

    times = alternate({name: (lambda n=name: step(n)) for name in models}, pairs,
                      lambda i, t: f"pair {i}: fcis {t[0]:.1f} s, maskrcnn {t[1]:.1f} s, images/s ratio {t[1] / t[0]:.2f}")
    f_t, m_t = times.values()
    ratios = [m / f for f, m in zip(f_t, m_t)]
    print(f"median step fcis {statistics.median(f_t):.1f} s, maskrcnn {statistics.median(m_t):.1f} s, "
          f"median pair images/s ratio FCIS / Mask R-CNN {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")
    return statistics.median(ratios)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="?", type=int, default=3, help="interleaved pairs of steps (default 3)")
    parser.add_argument("fcis", nargs="?", default="fcis_resnet50")
    parser.add_argument("maskrcnn", nargs="?", default="maskrcnn_resnet50_fpn")
    parser.add_argument("height", nargs="?", type=int, default=600)
    parser.add_argument("width", nargs="?", type=int, default=800)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = parser.parse_args()
    main(a.pairs, a.fcis, a.maskrcnn, a.height, a.width, a.threads)
