"""Core timings of issue 2, each beside its torchvision peer in the same run (medians, ratios).

1. ps_roi_assemble forward+backward, K=300 RoIs, k=7, P=21, G=162 groups (COCO: 2·81) on a
   38×50 map, beside torchvision's compiled roi_align producing the same number of values
   (300 × 162 × 21 × 21) from a 162-channel map.
2. One training step (forward, backward, SGD step) and one inference of fcis_resnet50 at 600×800,
   beside torchvision's maskrcnn_resnet50_fpn on the same image and targets. Random weights; both
   models keep 100 detections (Mask R-CNN's score threshold set to 0 so it does too).

    python -m benchmarks.bench_core [--repeats 5] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.ops import roi_align

from fcis.models import fcis_resnet50
from fcis.ops import ps_roi_assemble


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn, repeats: int, device: str, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def random_rois(num: int, height: int, width: int, stride: int, gen: torch.Generator) -> torch.Tensor:
    h, w = height * stride, width * stride
    xy = torch.rand(num, 2, generator=gen) * torch.tensor([w, h]) * 0.8
    wh = torch.rand(num, 2, generator=gen) * torch.tensor([w, h]) * 0.5 + 16
    boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([w, h]))], dim=1)
    return torch.cat([torch.zeros(num, 1), boxes], dim=1)


def bench_op(repeats: int, device: str) -> dict:
    gen = torch.Generator().manual_seed(0)
    k, p, groups, h, w, stride = 7, 21, 162, 38, 50, 16
    rois = random_rois(300, h, w, stride, gen).to(device)
    ours_in = torch.randn(1, groups * k * k, h, w, generator=gen).to(device).requires_grad_()
    peer_in = torch.randn(1, groups, h, w, generator=gen).to(device).requires_grad_()

    def ours():
        ps_roi_assemble(ours_in, rois, k, p, 1 / stride, 2).sum().backward()

    def peer():
        roi_align(peer_in, rois, p, 1 / stride, 2, aligned=True).sum().backward()

    t_ours, t_peer = timeit(ours, repeats, device), timeit(peer, repeats, device)
    return {"ps_roi_assemble_fwd_bwd_s": t_ours, "roi_align_same_output_fwd_bwd_s": t_peer,
            "ratio_ours_over_peer": t_ours / t_peer}


def _image_and_target(device: str):
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(3, 600, 800, generator=gen)
    boxes = torch.tensor([[50.0, 60.0, 300.0, 400.0], [350.0, 100.0, 700.0, 550.0], [100.0, 420.0, 260.0, 580.0]])
    masks = torch.zeros(3, 600, 800, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        m[y1:y2, x1:x2] = 1
    target = {"boxes": boxes, "labels": torch.tensor([1, 5, 17]), "masks": masks}
    return image.to(device), {k: v.to(device) for k, v in target.items()}


def bench_models(repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    image, target = _image_and_target(device)
    models = {
        "fcis_resnet50": fcis_resnet50(num_classes=80, min_size=600, max_size=1000),
        "maskrcnn_resnet50_fpn": maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=81,
                                                       min_size=600, max_size=1000, box_score_thresh=0.0),
    }
    out = {}
    for name, model in models.items():
        model.to(device)
        opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1e-4, momentum=0.9)

        # step and infer are called in this iteration only (noqa: B023).
        def step():
            model.train()  # noqa: B023
            loss = sum(model([image], [target]).values())  # noqa: B023
            opt.zero_grad()  # noqa: B023
            loss.backward()
            opt.step()  # noqa: B023

        def infer():
            model.eval()  # noqa: B023
            with torch.no_grad():
                return model([image])  # noqa: B023

        out[f"{name}_train_step_s"] = timeit(step, repeats, device)
        out[f"{name}_inference_s"] = timeit(infer, repeats, device)
        out[f"{name}_detections"] = len(infer()[0]["boxes"])
    out["train_ratio_fcis_over_maskrcnn"] = out["fcis_resnet50_train_step_s"] / out["maskrcnn_resnet50_fpn_train_step_s"]
    out["inference_ratio_fcis_over_maskrcnn"] = out["fcis_resnet50_inference_s"] / out["maskrcnn_resnet50_fpn_inference_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    result = {"machine": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "device": args.device, "repeats": args.repeats, **bench_op(args.repeats, args.device)}
    if not args.skip_models:
        result.update(bench_models(args.repeats, args.device))
    for key, value in result.items():
        print(f"{key:42s} {value:.4f}" if isinstance(value, float) else f"{key:42s} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
