"""Section 7: GPU. Only where ``torch.cuda.is_available()``; otherwise the section records that no
GPU was available and the report says so (no figure is ever estimated).

- Latency of ``fcis_resnet101`` (random weights, 80 classes, 100 detections forced by
  ``score_thresh=0``) on one 600×1000 image, batch 1, CUDA-synchronised, beside the paper's 0.24 s
  per image on a K40 (docs/ARCHITECTURE.md §5.1); also without mask voting, and the stage breakdown of section 1.
- The assembling op ``ps_roi_assemble`` (K RoIs, k = 7, P = 21, 162 groups = COCO's 2·81, on the
  stride-16 map of a 600×1000 image) forward, and forward+backward, on this machine's CPU and GPU.

Run on its own with ``python benchmarks/run.py --only gpu --out DIR``; merge its JSON into the
CPU run's report with ``python benchmarks/run.py --report-only --merge DIR/results/results.json``.
"""

from __future__ import annotations

from typing import Any

import torch

from common import (Budget, COCO_CLASSES, build, calibrate_bn, forced_detections_overrides, log, machine_info,
                    random_image, random_rois, ratio, timeit)

PAPER_K40_S = 0.24  # FCIS R-101, COCO, s/image on a K40 (docs/ARCHITECTURE.md §5.1)


def assemble_op(device: str, num_rois: int, image: tuple[int, int], repeats: int, warmup: int) -> dict[str, Any]:
    from fcis.ops import ps_roi_assemble

    k, p, groups, stride = 7, 21, 2 * (COCO_CLASSES + 1), 16
    h, w = -(-image[0] // stride), -(-image[1] // stride)
    gen = torch.Generator().manual_seed(0)
    rois = torch.cat([torch.zeros(num_rois, 1), random_rois(num_rois, image[0], image[1])], dim=1).to(device)
    maps = torch.randn(1, groups * k * k, h, w, generator=gen).to(device)
    grad_maps = maps.clone().requires_grad_()

    def fwd():
        with torch.no_grad():
            ps_roi_assemble(maps, rois, k, p, 1 / stride, 2)

    def fwd_bwd():
        ps_roi_assemble(grad_maps, rois, k, p, 1 / stride, 2).sum().backward()

    f = timeit(fwd, repeats, warmup, device)
    fb = timeit(fwd_bwd, repeats, warmup, device)
    return {"forward_s": f["median"], "forward_times": f["times"], "fwd_bwd_s": fb["median"],
            "fwd_bwd_times": fb["times"], "map": [1, groups * k * k, h, w], "rois": num_rois}


def run(budget: Budget, device: str | None = None) -> dict[str, Any]:
    """``device=None``: CUDA if available, else the 'no GPU' record. Tests pass ``device='cpu'`` to
    exercise the code path."""
    if device is None:
        if not torch.cuda.is_available():
            return {"available": False, "reason": "torch.cuda.is_available() is False on this machine"}
        device = "cuda"
    from latency import breakdown

    out: dict[str, Any] = {"available": True, "device": device, "machine": machine_info(),
                           "image": list(budget.gpu_image), "repeats": budget.gpu_repeats,
                           "warmup": budget.gpu_warmup, "paper_k40_s": PAPER_K40_S}
    h, w = budget.gpu_image
    image = random_image(h, w).to(device)
    torch.manual_seed(0)
    log(f"gpu: {budget.gpu_model} latency on {device}")
    out["model"] = budget.gpu_model
    model = build(budget.gpu_model, budget.num_classes, budget, min_size=min(h, w), max_size=max(h, w),
                  **forced_detections_overrides(budget.gpu_model, budget.detections)).to(device).eval()
    calibrate_bn(model, image)
    last = {}

    def e2e_call():
        last["out"] = model([image])

    with torch.no_grad():
        e2e = timeit(e2e_call, budget.gpu_repeats, budget.gpu_warmup, device)
        out["detections"] = int(len(last["out"][0]["boxes"]))
        parts = breakdown(model, "fcis", image, budget.gpu_repeats, budget.gpu_warmup, device)
        model.config.mask_voting = False
        no_vote = timeit(lambda: model([image]), budget.gpu_repeats, budget.gpu_warmup, device)
        model.config.mask_voting = True
    out["latency_s"] = e2e["median"]
    out["latency_times"] = e2e["times"]
    out["no_voting_s"] = no_vote["median"]
    out["ratio_over_paper_k40"] = ratio(e2e["median"], PAPER_K40_S)
    out["breakdown_s"] = parts["stages"]
    out["breakdown_sum_s"] = parts["sum_median"]
    del model
    log("gpu: ps_roi_assemble on the CPU and on the GPU")
    op: dict[str, Any] = {"gpu": assemble_op(device, budget.gpu_num_rois, budget.gpu_image, budget.gpu_repeats,
                                             budget.gpu_warmup)}
    op["cpu"] = assemble_op("cpu", budget.gpu_num_rois, budget.gpu_image, max(budget.repeats, 1), budget.warmup)
    op["cpu_threads"] = torch.get_num_threads()
    op["forward_ratio_cpu_over_gpu"] = ratio(op["cpu"]["forward_s"], op["gpu"]["forward_s"])
    op["fwd_bwd_ratio_cpu_over_gpu"] = ratio(op["cpu"]["fwd_bwd_s"], op["gpu"]["fwd_bwd_s"])
    out["assemble_op"] = op
    return out
