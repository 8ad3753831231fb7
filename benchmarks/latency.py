"""Section 1: inference latency, batch 1, random weights, exactly 100 detections with full-size masks.

End to end is ``model([image])``. The breakdown calls the model's own pieces in sequence on the same
input (the same code path as ``forward``), each stage timed on its own; the stages of one repeat
add up to that repeat's total, and the piecewise detections are checked against ``model([image])``.

FCIS stages: ``model.transform``, ``model.backbone`` (ResNet to conv5), ``model.rpn``,
``model.head`` (1×1 convs to the score maps), ``model.score_candidates`` (assembling and scoring of
the 300 proposals and of the 300 refined boxes), NMS + top-k (``select_detections``' first half),
mask voting (``voted_windows``, each window written into the full-image masks) split into its
pasting (every ``paste_masks_in_frame`` call inside it, timed through a wrapper put in
``fcis.models.fcis.mask_voting`` for the measurement), the tight boxes of the voted masks (found in
each window, ``tight_window_box``) and the rest.

Mask R-CNN stages (torchvision's ``GeneralizedRCNN``/``RoIHeads`` pieces): transform, backbone+FPN,
RPN, box head (MultiScaleRoIAlign + TwoMLPHead + predictor on the 1000 proposals), box
post-processing (per-class NMS, top 100), mask head (RoIAlign + 4 convs + predictor on the 100
detections), pasting (``transform.postprocess``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from .common import (
    Budget,
    available,
    build,
    calibrate_bn,
    forced_detections_overrides,
    log,
    median,
    pick,
    random_image,
    ratio,
    sync,
    timeit,
)


class StageTimer:
    """Accumulates wall time per stage name (synchronising CUDA around each stage)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        sync(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.times[name] = self.times.get(name, 0.0) + seconds


@contextlib.contextmanager
def _timed_pasting(timer: StageTimer, name: str = "pasting"):
    """Route ``fcis.models.fcis.mask_voting.paste_masks_in_frame`` through a timer (restored after)."""
    import fcis.models.fcis.mask_voting as mv

    original = mv.paste_masks_in_frame

    def timed(*args, **kwargs):
        sync(timer.device)
        start = time.perf_counter()
        out = original(*args, **kwargs)
        sync(timer.device)
        timer.add(name, time.perf_counter() - start)
        return out

    mv.paste_masks_in_frame = timed
    try:
        yield
    finally:
        mv.paste_masks_in_frame = original


FCIS_STAGES = ("transform", "backbone", "rpn", "head convs", "assembling + scoring (2 passes)",
               "NMS + top-k", "mask voting (without its pasting)", "pasting (inside voting)", "tight boxes")
MASKRCNN_STAGES = ("transform", "backbone + FPN", "rpn", "box head (per RoI)", "box NMS + top-k",
                   "mask head (per detection)", "pasting")


@torch.no_grad()
def fcis_pieces(model, image: torch.Tensor, timer: StageTimer) -> dict[str, torch.Tensor]:
    """FCIS inference of one image through its pieces (as ``FCIS.forward`` and
    ``select_detections``), each timed under its FCIS_STAGES name."""
    from torchvision.models.detection.transform import resize_boxes

    from fcis.models.fcis.fine_features import head_input
    from fcis.models.fcis.mask_voting import voted_windows
    from fcis.models.mask_paste import tight_window_box
    from fcis.models.nms import first_kept_nms

    cfg = model.config
    original = tuple(image.shape[-2:])
    with timer("transform"):
        batch, _ = model.transform([image])
    with timer("backbone"):
        c4, c5 = head_input(model.backbone, model.fine, batch.tensors)
    with timer("rpn"):
        proposals, _ = model.rpn(batch, {"0": c4})
    with timer("head convs"):
        maps = model.head(c5)
    with timer("assembling + scoring (2 passes)"):
        rois, probs, scores = model.score_candidates(maps, proposals, batch.image_sizes)
    with timer("NMS + top-k"):
        mask_probs = scores.lazy_mask_probs()     # as FCIS.detect: computed in voting, for its pairs only
        boxes = resize_boxes(rois[:, 1:], batch.image_sizes[0], original)
        class_scores = probs[:, 1:]
        cand, cls = torch.nonzero(class_scores > cfg.score_thresh, as_tuple=True)
        flat = class_scores[cand, cls]
        keep = first_kept_nms(boxes[cand], flat, cfg.nms_iou, cfg.detections_per_img, idxs=cls)
        cand, labels, det_scores = cand[keep], cls[keep] + 1, flat[keep]
        det_boxes = boxes[cand]
    paste, tight = StageTimer(timer.device), StageTimer(timer.device)
    with timer("voting total"), _timed_pasting(paste):
        masks = probs.new_zeros(len(det_boxes), *original)
        for n, frame, voted in voted_windows(det_boxes, labels, boxes, probs, mask_probs, original,
                                             iou=cfg.voting_iou, min_score=cfg.score_thresh,
                                             voting=cfg.mask_voting, kept_index=cand,
                                             binarize=cfg.mask_threshold if cfg.voting_binarize else None):
            masks[n, frame[1]:frame[3], frame[0]:frame[2]] = voted
            if cfg.mask_voting:
                with tight("tight boxes"):
                    box = tight_window_box(voted >= cfg.mask_threshold, frame[0], frame[1])
                    if box is not None:
                        det_boxes[n] = box.to(det_boxes.dtype)
    pasting, tight_boxes = paste.times.get("pasting", 0.0), tight.times.get("tight boxes", 0.0)
    total = timer.times.pop("voting total")
    timer.add("pasting (inside voting)", pasting)
    timer.add("tight boxes", tight_boxes)
    timer.add("mask voting (without its pasting)", total - pasting - tight_boxes)
    return {"boxes": det_boxes, "labels": labels, "scores": det_scores, "masks": masks[:, None]}


@torch.no_grad()
def maskrcnn_pieces(model, image: torch.Tensor, timer: StageTimer) -> dict[str, torch.Tensor]:
    """torchvision Mask R-CNN inference of one image through its pieces (GeneralizedRCNN.forward,
    RoIHeads.forward), each timed under its MASKRCNN_STAGES name."""
    from torchvision.models.detection.roi_heads import maskrcnn_inference

    original = [tuple(image.shape[-2:])]
    rh = model.roi_heads
    with timer("transform"):
        batch, _ = model.transform([image])
    with timer("backbone + FPN"):
        features = model.backbone(batch.tensors)
    with timer("rpn"):
        proposals, _ = model.rpn(batch, features)
    with timer("box head (per RoI)"):
        x = rh.box_head(rh.box_roi_pool(features, proposals, batch.image_sizes))
        class_logits, box_regression = rh.box_predictor(x)
    with timer("box NMS + top-k"):
        boxes, scores, labels = rh.postprocess_detections(class_logits, box_regression, proposals,
                                                          batch.image_sizes)
    with timer("mask head (per detection)"):
        m = rh.mask_predictor(rh.mask_head(rh.mask_roi_pool(features, boxes, batch.image_sizes)))
        mask_probs = maskrcnn_inference(m, labels)
    with timer("pasting"):
        dets = [{"boxes": b, "labels": lab, "scores": s, "masks": mp}
                for b, lab, s, mp in zip(boxes, labels, scores, mask_probs)]
        dets = model.transform.postprocess(dets, batch.image_sizes, original)
    return dets[0]


def breakdown(model, kind: str, image: torch.Tensor, repeats: int, warmup: int, device: str = "cpu"
              ) -> dict[str, Any]:
    """Median per stage over ``repeats`` piecewise runs (after ``warmup``), the median of the
    per-repeat sums, and the last piecewise output's detection count."""
    pieces, stages = (fcis_pieces, FCIS_STAGES) if kind == "fcis" else (maskrcnn_pieces, MASKRCNN_STAGES)
    for _ in range(warmup):
        pieces(model, image, StageTimer(device))
    runs, out = [], None
    for _ in range(max(repeats, 1)):
        timer = StageTimer(device)
        out = pieces(model, image, timer)
        runs.append(timer.times)
    return {
        "stages": {s: median([r.get(s, 0.0) for r in runs]) for s in stages},
        "stage_times": {s: [r.get(s, 0.0) for r in runs] for s in stages},
        "sum_median": median([sum(r.values()) for r in runs]),
        "detections": int(len(out["boxes"])),
        "output": out,
    }


def _same_detections(a: dict, b: dict) -> bool:
    if len(a["boxes"]) != len(b["boxes"]):
        return False
    return bool(torch.allclose(a["boxes"], b["boxes"], atol=1e-2) and torch.equal(a["labels"], b["labels"])
                and torch.allclose(a["masks"], b["masks"], atol=1e-4))


def measure_model(name: str, image: torch.Tensor, budget: Budget, device: str = "cpu", **extra: Any
                  ) -> dict[str, Any]:
    torch.manual_seed(0)
    kind = "fcis" if name.startswith("fcis") else "maskrcnn"
    overrides = {"min_size": budget.latency_min_size, "max_size": budget.latency_max_size,
                 **forced_detections_overrides(name, budget.detections), **extra}
    model = build(name, budget.num_classes, budget, **overrides).to(device).eval()
    image = image.to(device)
    bn_layers = calibrate_bn(model, image)
    last = {}

    def e2e_call():
        last["out"] = model([image])

    with torch.no_grad():
        e2e = timeit(e2e_call, budget.repeats, budget.warmup, device)
    reference = last["out"][0]
    parts = breakdown(model, kind, image, budget.repeats, budget.warmup, device)
    result = {
        "available": True, "overrides": {k: v for k, v in overrides.items()}, "bn_calibrated_layers": bn_layers,
        "end_to_end_s": e2e["median"], "end_to_end_times": e2e["times"],
        "detections": int(len(reference["boxes"])),
        "mask_shape": list(reference["masks"].shape),
        "breakdown_s": parts["stages"], "breakdown_times": parts["stage_times"],
        "breakdown_sum_s": parts["sum_median"],
        "breakdown_matches_end_to_end": _same_detections(parts["output"], reference),
    }
    if kind == "fcis":
        result["pasting_only_no_voting_s"] = _pasting_only(model, image, budget, device)
    return result


def _pasting_only(model, image, budget: Budget, device: str) -> float:
    """Median time of ``vote_masks(voting=False)``: pasting each detection's own mask, as a model
    without voting would (for scale beside the voting stage)."""
    cfg = model.config
    voting, cfg.mask_voting = cfg.mask_voting, False
    try:
        captured = {}
        with torch.no_grad():
            from fcis.models.fcis import inference
            from fcis.models.fcis.mask_voting import vote_masks

            original = inference.voted_windows

            def capture(*args, **kwargs):      # vote_masks takes voted_windows' arguments
                captured["call"] = (args, kwargs)
                return original(*args, **kwargs)

            inference.voted_windows = capture
            try:
                model([image])
            finally:
                inference.voted_windows = original
            args, kwargs = captured["call"]
            t = timeit(lambda: vote_masks(*args, **kwargs), budget.repeats, budget.warmup, device)
        return t["median"]
    finally:
        cfg.mask_voting = voting


def run(budget: Budget, device: str = "cpu") -> dict[str, Any]:
    h, w = budget.latency_image
    image = random_image(h, w)
    out: dict[str, Any] = {"image": [h, w], "min_size": budget.latency_min_size,
                           "max_size": budget.latency_max_size, "num_classes": budget.num_classes,
                           "detections_target": budget.detections,
                           "repeats": budget.repeats, "warmup": budget.warmup, "device": device, "models": {}}
    for name in budget.latency_models:
        if not available(name):
            out["models"][name] = {"available": False}
            continue
        log(f"latency: {name}")
        out["models"][name] = measure_model(name, image, budget, device)
    out["peer"] = pick(budget.latency_models, "maskrcnn")
    peer = out["models"].get(out["peer"], {}).get("end_to_end_s")
    for m in out["models"].values():
        if m.get("available"):
            m["ratio_over_peer"] = ratio(m["end_to_end_s"], peer)
    return out
