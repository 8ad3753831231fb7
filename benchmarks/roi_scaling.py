"""Section 2: time of the per-RoI stage against the number of RoIs.

FCIS: ``model.head.score_rois(maps, rois)`` on precomputed score maps (assembling of the
inside/outside maps at k = 7, P = 21 for all C+1 classes, the box maps, and the scoring): one pass.
Mask R-CNN: on precomputed FPN features of the same image, the box head (MultiScaleRoIAlign 7×7 +
TwoMLPHead + FastRCNNPredictor) and the mask head (MultiScaleRoIAlign 14×14 + 4 convs +
MaskRCNNPredictor), both on all the given RoIs. The same random boxes serve both models. At
inference Mask R-CNN runs its mask head on the <= 100 detections only; in training on the positive
RoIs; the per-RoI figures show what each RoI costs either way.
"""

from __future__ import annotations

from typing import Any

import torch

from fcis.models.fcis.fine_features import head_input

from .common import Budget, available, build, calibrate_bn, log, random_image, random_rois, ratio, timeit


@torch.no_grad()
def run(budget: Budget, device: str = "cpu") -> dict[str, Any]:
    h, w = budget.latency_image
    image = random_image(h, w).to(device)
    size = {"min_size": budget.latency_min_size, "max_size": budget.latency_max_size}
    out: dict[str, Any] = {"image": [h, w], "num_classes": budget.num_classes, "counts": list(budget.roi_counts),
                           "repeats": budget.roi_repeats, "warmup": budget.warmup, "device": device}

    torch.manual_seed(0)
    fcis_name, name = budget.roi_models
    fcis = build(fcis_name, budget.num_classes, budget, **size).to(device).eval()
    calibrate_bn(fcis, image)
    batch, _ = fcis.transform([image])
    bh, bw = batch.image_sizes[0]
    _, c5 = head_input(fcis.backbone, fcis.fine, batch.tensors)
    maps = fcis.head(c5)
    out["fcis_score_maps"] = list(maps.inside_outside.shape)
    rois = {n: random_rois(n, bh, bw, seed=n).to(device) for n in budget.roi_counts}

    fcis_t = {}
    for n in budget.roi_counts:
        log(f"roi scaling: FCIS assembling, {n} RoIs")
        r5 = torch.cat([torch.zeros(n, 1, device=device), rois[n]], dim=1)
        # noqa reasons: timeit calls the lambda right away (B023); ruff resolves fcis/maps after the del below (F821).
        fcis_t[n] = timeit(lambda: fcis.head.score_rois(maps, r5), budget.roi_repeats, budget.warmup, device)  # noqa: B023, F821
    out["fcis"] = {"model": fcis_name, "stage": "head.score_rois (one pass)",
                   "median_s": {str(n): t["median"] for n, t in fcis_t.items()},
                   "times": {str(n): t["times"] for n, t in fcis_t.items()}}
    del fcis, maps, c5

    if not available(name):
        out["maskrcnn"] = {"available": False}
        return out
    torch.manual_seed(0)
    mrcnn = build(name, budget.num_classes, budget, **size).to(device).eval()
    calibrate_bn(mrcnn, image)
    mbatch, _ = mrcnn.transform([image])
    features = mrcnn.backbone(mbatch.tensors)
    sizes = mbatch.image_sizes
    rh = mrcnn.roi_heads
    box_t, mask_t = {}, {}
    for n in budget.roi_counts:
        log(f"roi scaling: Mask R-CNN box and mask heads, {n} RoIs")
        props = [rois[n]]  # the lambdas below are called at once by timeit (noqa: B023)
        box_t[n] = timeit(lambda: rh.box_predictor(rh.box_head(rh.box_roi_pool(features, props, sizes))),  # noqa: B023
                          budget.roi_repeats, budget.warmup, device)
        mask_t[n] = timeit(lambda: rh.mask_predictor(rh.mask_head(rh.mask_roi_pool(features, props, sizes))),  # noqa: B023
                           budget.roi_repeats, budget.warmup, device)
    out["maskrcnn"] = {
        "available": True, "model": name, "input_size": list(mbatch.tensors.shape),
        "box_median_s": {str(n): t["median"] for n, t in box_t.items()},
        "mask_median_s": {str(n): t["median"] for n, t in mask_t.items()},
        "total_median_s": {str(n): box_t[n]["median"] + mask_t[n]["median"] for n in budget.roi_counts},
        "box_times": {str(n): t["times"] for n, t in box_t.items()},
        "mask_times": {str(n): t["times"] for n, t in mask_t.items()},
    }
    out["ratio_maskrcnn_total_over_fcis"] = {
        str(n): ratio(out["maskrcnn"]["total_median_s"][str(n)], out["fcis"]["median_s"][str(n)])
        for n in budget.roi_counts}
    out["ratio_maskrcnn_box_over_fcis"] = {
        str(n): ratio(out["maskrcnn"]["box_median_s"][str(n)], out["fcis"]["median_s"][str(n)])
        for n in budget.roi_counts}
    return out
