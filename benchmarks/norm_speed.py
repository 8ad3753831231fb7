"""Speed of the normalisation choices (issue 22, item 2) on the CPU: BatchNorm against GroupNorm in
``fcis_resnet18``'s backbone, each channels-last (the library's path, ``fcis/models/fast_resnet.py``)
and in PyTorch's default (N, C, H, W) layout (the modules' own forward).

    OMP_NUM_THREADS=1 python -m benchmarks.norm_speed [--size 256 320] [--batch 2] [--repeats 7]

For each variant: one training step of the backbone alone (forward + backward of ``c5.sum()``)
and one inference forward (eval mode, autograd off; BatchNorm is folded into the convolutions
there, GroupNorm cannot be). Timings are the process's CPU time (``time.process_time``: with one
thread, the computation's own time, which other jobs on a shared machine disturb far less than
wall time), medians of ``--repeats`` runs after a warm-up, the variants interleaved run by run;
ratios are against BatchNorm channels-last. Then the same for one whole training step
(``fcis.engine.step.train_step``) of each ``--models`` (default ``fcis_resnet18``; e.g. also
``maskrcnn_resnet18_fpn``, whose GN variant has detectron2's 4-conv box head) at BN and GN.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from typing import Callable

import torch

from fcis.engine.config import TrainConfig
from fcis.engine.step import build_optimizer, train_step
from fcis.models import BUILDERS
from fcis.models.backbone import ResNetC4C5, build_resnet


def _backbone(norm: str) -> ResNetC4C5:
    torch.manual_seed(0)
    return ResNetC4C5(build_resnet(18, None, pretrained=False, dilate_conv5=True, frozen_bn=True,
                                   trainable_layers=5, norm=norm))


def _nchw(backbone: ResNetC4C5, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The modules' own forward in the (N, C, H, W) layout (no channels-last, nothing folded)."""
    c4 = backbone.body(x)
    return c4, backbone.layer4(c4)


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for fn in fns.values():      # warm-up (oneDNN primitives, caches)
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.process_time()
            fn()
            times[k].append(time.process_time() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def backbone_times(size: tuple[int, int], batch: int, repeats: int) -> dict[str, dict[str, float]]:
    x = torch.rand(batch, 3, *size)
    nets = {norm: _backbone(norm) for norm in ("bn", "gn")}

    def train(net: ResNetC4C5, layout: str) -> Callable[[], object]:
        def step() -> None:
            net.train()
            c5 = net(x)[1] if layout == "channels_last" else _nchw(net, x)[1]
            c5.float().sum().backward()
            net.zero_grad(set_to_none=True)
        return step

    def infer(net: ResNetC4C5, layout: str) -> Callable[[], object]:
        def run() -> None:
            net.eval()
            with torch.no_grad():
                net(x) if layout == "channels_last" else _nchw(net, x)
        return run

    out = {}
    for phase, make in (("train", train), ("inference", infer)):
        fns = {f"{norm} {layout}": make(nets[norm], layout) for norm in ("bn", "gn")
               for layout in ("channels_last", "nchw")}
        out[phase] = _interleaved(fns, repeats)
    return out


def model_step_times(size: tuple[int, int], batch: int, repeats: int, name: str = "fcis_resnet18") -> dict[str, float]:
    """One whole training step of model ``name`` (AdamW), BN against GN, the same images and boxes."""
    gen = torch.Generator().manual_seed(1)
    images = [torch.rand(3, *size, generator=gen) for _ in range(batch)]
    h, w = size
    boxes = torch.tensor([[10.0, 12.0, 0.4 * w, 0.5 * h], [0.5 * w, 0.3 * h, 0.95 * w, 0.9 * h]])
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        m[y1:y2, x1:x2] = 1
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks} for _ in range(batch)]
    cfg = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=5e-4)
    steps: dict[str, Callable[[], object]] = {}
    for norm in ("bn", "gn"):
        torch.manual_seed(0)
        model = BUILDERS[name](num_classes=3, min_size=min(size), max_size=max(size), norm=norm).train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(params, cfg)
        steps[norm] = functools.partial(train_step, model, optimizer, params, images, targets, torch.device("cpu"))
    return _interleaved(steps, repeats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", nargs=2, type=int, default=(256, 320), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--models", nargs="+", default=["fcis_resnet18"], help="whole training steps of these models")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    torch.set_flush_denormal(True)
    size = tuple(args.size)
    result = {"size": size, "batch": args.batch, "threads": torch.get_num_threads(),
              "backbone": backbone_times(size, args.batch, args.repeats),  # type: ignore[arg-type]
              "model_step": {name: model_step_times(size, args.batch, args.repeats, name)  # type: ignore[arg-type]
                             for name in args.models}}
    print(f"fcis_resnet18 backbone, {args.batch} x 3 x {size[0]} x {size[1]}, {result['threads']} thread(s), "
          f"median of {args.repeats}")
    print("| phase | variant | CPU ms | / bn channels-last |")
    print("| --- | --- | --- | --- |")
    for phase, times in result["backbone"].items():
        base = times["bn channels_last"]
        for k, v in times.items():
            print(f"| {phase} | {k} | {1000 * v:.0f} | {v / base:.2f} |")
    for name, steps in result["model_step"].items():
        print(f"| {name} training step | bn | {1000 * steps['bn']:.0f} | 1.00 |")
        print(f"| {name} training step | gn | {1000 * steps['gn']:.0f} | {steps['gn'] / steps['bn']:.2f} (/ bn) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
