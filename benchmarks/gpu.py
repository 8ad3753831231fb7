"""Section 7: GPU. Only where ``torch.cuda.is_available()``; otherwise the section records that no
GPU was available and the report says so (no figure is ever estimated).

- Latency of ``fcis_resnet101`` (random weights, 80 classes, 100 detections forced by
  ``score_thresh=0``) on one 600×1000 image, batch 1, CUDA-synchronised, beside the paper's 0.24 s
  per image on a K40 (docs/ARCHITECTURE.md §5.1); also without mask voting, and the stage breakdown of section 1.
- The assembling op ``ps_roi_assemble`` (K RoIs, k = 7, P = 21, 162 groups = COCO's 2·81, on the
  stride-16 map of a 600×1000 image) forward, and forward+backward, on this machine's CPU and GPU,
  both on its default (fast gather) path and on the ``grid_sample`` path that export takes.
- A training step (batch ``gpu_train_batch``, the same random images and three-rectangle targets
  as section 3, SGD) of each of ``gpu_train_models`` (``fcis_resnet101``, ``maskrcnn_resnet50_fpn``)
  at the same image size: images/s and ``torch.cuda.max_memory_allocated`` growth, side by side.

Run on its own with ``python -m benchmarks.run --only gpu --out DIR``; merge its JSON into the
CPU run's report with ``python -m benchmarks.run --report-only --merge DIR/results/results.json``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from .common import (
    COCO_CLASSES,
    Budget,
    available,
    build,
    calibrate_bn,
    forced_detections_overrides,
    log,
    machine_info,
    pick,
    random_image,
    random_rois,
    ratio,
    synthetic_target,
    timeit,
)

PAPER_K40_S = 0.24  # FCIS R-101, COCO, s/image on a K40 (docs/ARCHITECTURE.md §5.1)


@contextlib.contextmanager
def _grid_sample_path():
    """Route ``ps_roi_assemble`` to its grid_sample path (the one ONNX export takes)."""
    import importlib

    module = importlib.import_module("fcis.ops.ps_roi_assemble")
    original = module._gather_path_applies
    module._gather_path_applies = lambda *args: False
    try:
        yield
    finally:
        module._gather_path_applies = original


def assemble_op(device: str, num_rois: int, image: tuple[int, int], repeats: int, warmup: int,
                grid_sample: bool = False) -> dict[str, Any]:
    if grid_sample:
        with _grid_sample_path():
            return assemble_op(device, num_rois, image, repeats, warmup)
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


def training_step(name: str, budget: Budget, device: str) -> dict[str, Any]:
    """Images/s and peak allocated memory growth of a training step of ``name`` on ``device``."""
    h, w = budget.gpu_image
    n = budget.num_classes
    torch.manual_seed(0)
    model = build(name, n, budget, min_size=min(h, w), max_size=max(h, w)).to(device).train()
    images = [random_image(h, w, seed=i + 1).to(device) for i in range(budget.gpu_train_batch)]
    targets = [{k: v.to(device) for k, v in synthetic_target(h, w, n).items()} for _ in images]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    t = timeit(step, budget.gpu_repeats, budget.gpu_warmup, device)
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20 if cuda else None
    return {"model": name, "batch": budget.gpu_train_batch, "step_s": t["median"], "step_times": t["times"],
            "images_per_s": budget.gpu_train_batch / t["median"], "peak_allocated_growth_mib": peak}


def run(budget: Budget, device: str | None = None) -> dict[str, Any]:
    """``device=None``: CUDA if available, else the 'no GPU' record. Tests pass ``device='cpu'`` to
    exercise the code path."""
    if device is None:
        if not torch.cuda.is_available():
            return {"available": False, "reason": "torch.cuda.is_available() is False on this machine"}
        device = "cuda"
    from .latency import breakdown

    out: dict[str, Any] = {"available": True, "device": device, "machine": machine_info(),
                           "image": list(budget.gpu_image), "repeats": budget.gpu_repeats,
                           "warmup": budget.gpu_warmup, "paper_k40_s": PAPER_K40_S,
                           "gpu_train_batch": budget.gpu_train_batch}
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
        last["out"] = model([image]) # noqa: F821 (ruff resolves it after the del further down; the closure runs before)

    with torch.no_grad():
        e2e = timeit(e2e_call, budget.gpu_repeats, budget.gpu_warmup, device)
        out["detections"] = int(len(last["out"][0]["boxes"]))
        parts = breakdown(model, "fcis", image, budget.gpu_repeats, budget.gpu_warmup, device)
        model.config.mask_voting = False
        no_vote = timeit(lambda: model([image]), budget.gpu_repeats, budget.gpu_warmup, device)  # noqa: F821
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
    op["gpu_grid_sample"] = assemble_op(device, budget.gpu_num_rois, budget.gpu_image, budget.gpu_repeats,
                                        budget.gpu_warmup, grid_sample=True)
    op["cpu"] = assemble_op("cpu", budget.gpu_num_rois, budget.gpu_image, max(budget.repeats, 1), budget.warmup)
    op["cpu_threads"] = torch.get_num_threads()
    op["forward_ratio_cpu_over_gpu"] = ratio(op["cpu"]["forward_s"], op["gpu"]["forward_s"])
    op["fwd_bwd_ratio_cpu_over_gpu"] = ratio(op["cpu"]["fwd_bwd_s"], op["gpu"]["fwd_bwd_s"])
    out["assemble_op"] = op
    train: dict[str, Any] = {"models": {}, "fcis": pick(budget.gpu_train_models, "fcis"),
                             "peer": pick(budget.gpu_train_models, "maskrcnn")}
    for name in budget.gpu_train_models:
        if available(name):
            log(f"gpu: training step of {name}")
            train["models"][name] = training_step(name, budget, device)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    fcis_t, peer_t = train["models"].get(train["fcis"], {}), train["models"].get(train["peer"], {})
    train["ratio_images_per_s_fcis_over_maskrcnn"] = ratio(fcis_t.get("images_per_s"), peer_t.get("images_per_s"))
    train["ratio_peak_fcis_over_maskrcnn"] = ratio(fcis_t.get("peak_allocated_growth_mib"),
                                                   peer_t.get("peak_allocated_growth_mib"))
    out["training"] = train
    return out
