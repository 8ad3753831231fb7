"""fcis's official-inference variant against the official MXNet code's outputs on real photos.

The official outputs are the oracle's fixtures (tests/fixtures/official/, tools/official/README.md):
the official FCIS inference run by MXNet 1.9.1 on seeded weights (tools/official/seed_rule.py with the
committed BatchNorm statistics). Here the same weights are rebuilt, converted with
:func:`fcis.weights.official_layout.official_to_fcis` and run by ``FCISConfig(variant="official")``
on the same photos, stage by stage::

    ~/.cache/fcis/venv/bin/python -m tools.variant.compare_official [--data-root ../shared/data]

prints the per-stage agreement of every photo (and ``--json FILE`` writes it); the test
tests/test_official_comparison.py asserts on the same figures.

The weights reach fcis the way a user's file does: :func:`write_seeded_params` writes the oracle's
weights file again (the trainer-checkpoint layout, ``fcis_bbox_*_test`` included; with the NumPy
writer, byte for byte the file MXNet saved: its sha256 is in ``run.json``), and :func:`build_model`
runs ``fcis convert weights`` on it (:func:`fcis.weights.convert_official.convert_weights`) and
loads the checkpoint as ``fcis predict --weights`` does. The oracle loaded that file as the official
evaluation ``fcis/function/test_fcis.py`` does (``run.json["load_as"] == "test"``:
``load_param(prefix, 0, process=False)``, the network binds ``fcis_bbox_*`` and the ``BoxParser``
applies the stds), which is what the converter follows, so nothing is renamed. Fixtures written with
``--load-as demo`` (``fcis/demo.py``'s ``process=True``: the ``_test`` arrays, already × stds, renamed
over ``fcis_bbox_*``, the stds applied again) are compared by writing the file as that loader sees it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "official"
FEATURES = ("res4b22_relu", "res5c_relu", "conv_new_1", "relu_new_1", "rpn_cls_prob_reshape", "rpn_bbox_pred")


def load_as(fixtures: Path = FIXTURES) -> str:
    """How the oracle loaded its weights file: "test" (``fcis/function/test_fcis.py``,
    ``process=False``) or "demo" (``fcis/demo.py``, ``process=True``; fixtures from before the
    ``--load-as`` option, which record none, were written that way)."""
    return str(json.loads((fixtures / "run.json").read_text()).get("load_as", "demo"))


def seeded_params(fixtures: Path = FIXTURES) -> tuple[dict[str, np.ndarray], set[str]]:
    """The arrays of the oracle's weights file in its order (official names without ``arg:`` /
    ``aux:``; seed and BatchNorm statistics of ``fixtures/``), and the aux names. For "demo"
    fixtures, as ``load_param(process=True)`` hands them over: ``fcis_bbox_*_test`` renamed over
    ``fcis_bbox_*``."""
    from tools.official import seed_rule

    run = json.loads((fixtures / "run.json").read_text())
    shapes, aux = seed_rule.load_param_shapes(fixtures / "param_shapes.json")
    params = seed_rule.full_params(shapes, int(run["seed"]), fixtures / "bn_stats.npz")
    layout = {k.split(":", 1)[1]: v for k, v in seed_rule.checkpoint_layout(params, aux).items()}
    if load_as(fixtures) == "demo":
        for name in [k for k in layout if k.endswith("_test")]:
            layout[name[: -len("_test")]] = layout.pop(name)
    elif load_as(fixtures) != "test":
        raise ValueError(f"{fixtures / 'run.json'}: unknown load_as {load_as(fixtures)!r}")
    return layout, aux


def write_seeded_params(path: Path, fixtures: Path = FIXTURES) -> str:
    """Write the oracle's weights file (:func:`seeded_params`) as an MXNet ``.params`` with fcis's
    NumPy writer; returns its sha256 (for "test" fixtures, that of the file MXNet saved)."""
    from fcis.weights.mxnet_params import write_mxnet_params

    params, aux = seeded_params(fixtures)
    write_mxnet_params(path, params, aux=aux)
    del params
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_model(fixtures: Path = FIXTURES, workdir: Path | None = None) -> tuple[torch.nn.Module, dict]:
    """The seeded official FCIS through ``fcis convert weights`` (MXNet file -> checkpoint) and
    ``load_model`` (as ``fcis predict --weights``): ``(model, info)``, info = the written file's
    sha256 and the conversion's description. ``workdir`` (default a temporary folder) receives the
    233 MB ``.params`` file and the checkpoint; both are deleted with a temporary folder."""
    import tempfile

    from fcis.engine.checkpoint import load_model
    from fcis.weights.convert_official import convert_weights

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        src, out = Path(tmp) / "fcis_seeded-0000.params", Path(tmp) / "fcis_seeded.pt"
        sha = write_seeded_params(src, fixtures)
        result = convert_weights(src, out)
        model, meta = load_model(out)
    info = {"params_sha256": sha, "load_as": load_as(fixtures), "conversion": result.describe(),
            "converted_from": meta.get("converted_from")}
    return model.eval(), info


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _inclusive_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1, 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0] + 1) * (x[:, 3] - x[:, 1] + 1)  # noqa: E731
    inter = iw * ih
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _feature_agreement(ref: dict, ours: np.ndarray) -> dict:
    """Sampled values and statistics of one (1, C, H, W) map against the fixture's summary."""
    x = ours[0].astype(np.float64)
    idx = np.asarray(ref["sample_chw"])
    sampled = x[idx[:, 0], idx[:, 1], idx[:, 2]]
    scale = max(abs(ref["max"]), abs(ref["min"]), 1e-12)
    return {"shape_equal": list(ours.shape) == ref["shape"],
            "sample_max_abs": float(np.abs(sampled - np.asarray(ref["sample_values"])).max()),
            "sample_max_rel_to_range": float(np.abs(sampled - np.asarray(ref["sample_values"])).max() / scale),
            "mean_rel": float(abs(x.mean() - ref["mean"]) / max(ref["std"], 1e-12)),
            "std_rel": float(abs(x.std() - ref["std"]) / max(ref["std"], 1e-12)),
            "max_rel": float(abs(x.max() - ref["max"]) / scale)}


@torch.no_grad()
def compare_photo(model, pid: str, data_root: Path, fixtures: Path = FIXTURES) -> dict:
    """Every stage of one photo: input, features, proposals, first-pass scores (on the official
    proposals), box refinement, final detections (top 20 of the official list: matched when our
    detection of the same class has box IoU >= 0.9 with +1 areas; greedy in official score order)."""
    from pycocotools import mask as coco_mask

    from fcis.inference.image_input import load_image_array
    from fcis.inference.official_ops import cv2_resize_u8, official_input, official_scale
    from fcis.models.fcis.official_rpn import foreground_probs
    from fcis.models.mask_paste import window_to_rle

    meta = json.loads((fixtures / f"{pid}.json").read_text())
    ref = np.load(fixtures / f"{pid}.npz")
    out: dict = {"photo": pid}
    image = load_image_array(data_root / meta["photo"]["path"])                   # (3, H, W) float32
    u8 = np.rint(image.transpose(1, 2, 0) * 255).astype(np.uint8)
    out["decoded_equal"] = _sha(u8[:, :, ::-1]) == meta["photo"]["decoded_bgr_sha256"]
    resized = cv2_resize_u8(u8, official_scale(*u8.shape[:2]))
    out["resized_equal"] = _sha(np.ascontiguousarray(resized[:, :, ::-1])) == meta["photo"]["resized_bgr_sha256"]
    data, scale = official_input(image)
    out["im_info_equal"] = [float(v) for v in np.array([data.shape[1], data.shape[2], scale], np.float32)] \
        == meta["im_info"]
    # one run of the product path (detect_windows), its intermediates caught by hooks
    caught: dict = {}
    hooks = [model.backbone.register_forward_hook(lambda m, i, o: caught.update(c4=o[0], c5=o[1])),
             model.rpn.head.register_forward_hook(lambda m, i, o: caught.update(rpn=o)),
             model.head.register_forward_hook(lambda m, i, o: caught.update(maps=o))]
    try:
        start = time.perf_counter()
        (windows,) = model.detect_windows([torch.from_numpy(image)])
        height, width = meta["photo"]["height"], meta["photo"]["width"]
        ours_final = []
        for det in windows:
            binary = (det.window >= 0.4).numpy()
            rle = window_to_rle(binary, det.x0, det.y0, height, width)
            ours_final.append((det.label, det.score, det.box.numpy() - np.array([0, 0, 1, 1], np.float32), rle))
        out["seconds_ours"] = round(time.perf_counter() - start, 2)
    finally:
        for h in hooks:
            h.remove()
    out["seconds_official"] = round(meta["seconds"]["im_detect"] + meta["seconds"]["cpu_mask_voting"], 2)
    c4, c5, maps = caught["c4"], caught["c5"], caught["maps"]
    scores, deltas = caught["rpn"]
    size = (data.shape[1], data.shape[2])
    probs = foreground_probs(scores)
    ours = {"res4b22_relu": c4, "res5c_relu": c5, "conv_new_1": model.head.reduce(c5),
            "relu_new_1": model.head.reduce(c5).relu(), "rpn_cls_prob_reshape": torch.cat([1 - probs, probs], 1),
            "rpn_bbox_pred": deltas}
    summaries = {f["name"]: f for f in meta["features"]}
    out["features"] = {name: _feature_agreement(summaries[name], ours[name].numpy()) for name in FEATURES}
    out["channel_means_max_abs"] = {
        name: float(np.abs(ours[name][0].mean(dim=(1, 2)).numpy() - ref[f"channel_mean_{name}"]).max())
        for name in ("res4b22_relu", "res5c_relu", "conv_new_1")}
    # proposals: ours from our own RPN maps
    rois = model.rpn(c4, size)
    off_rois = ref["proposals"][:, 1:]
    diff = np.abs(off_rois[:, None, :] - rois.numpy()[None]).max(axis=2)          # (300 official, ours)
    nearest = diff.min(axis=1)
    out["proposals"] = {"official": len(off_rois), "ours": len(rois),
                        "matched_within_0.05px": float((nearest <= 0.05).mean()),
                        "max_coordinate_diff_of_nearest": float(nearest.max()),
                        "same_order": bool(np.array_equal(diff.argmin(axis=1), np.arange(len(off_rois))))}
    # the head on the official proposals: first-pass logits/probabilities, box deltas, pass 2
    off = torch.from_numpy(off_rois.copy())
    probs1, masks1 = model.score(maps, off)
    deltas1 = model.box_deltas(maps, off)
    logits1 = torch.log(probs1)                       # softmax logits up to a per-row constant
    ref_logits = ref["cls_score_pass1"].astype(np.float64)
    centred = lambda a: a - a.mean(axis=1, keepdims=True)  # noqa: E731
    out["pass1"] = {
        "cls_prob_max_abs": float(np.abs(probs1.numpy() - ref["cls_prob_pass1"].astype(np.float32)).max()),
        "cls_logit_max_abs_centred": float(np.abs(centred(logits1.double().numpy()) - centred(ref_logits)).max()),
        "cls_logit_range": float(ref_logits.max() - ref_logits.min()),
        "box_delta_max_abs": float(np.abs(deltas1.numpy() - ref["bbox_pred_pass1"][:, 4:]).max()),
        "top_class_equal": float((probs1.numpy()[:, 1:].argmax(1) == ref["cls_prob_pass1"][:, 1:].argmax(1)).mean()),
        "mask_first50_max_abs": float(np.abs(masks1[:50].numpy() - ref["seg_fg_pass1_first50"].astype(np.float32))
                                      .max())}
    refined = model.box_parser(off, deltas1, size)
    out["pass2"] = {"rois_iter2_max_abs": float(np.abs(refined.numpy() - ref["rois_iter2"][:, 1:]).max())}
    probs2, _ = model.score(maps, torch.from_numpy(ref["rois_iter2"][:, 1:].copy()))
    out["pass2"]["cls_prob_max_abs"] = float(np.abs(probs2.numpy() - ref["cls_prob_pass2"].astype(np.float32)).max())
    out["final"] = _match_final(meta["detections"], ours_final, coco_mask)
    out["final"]["count_ours"], out["final"]["count_official"] = len(ours_final), meta["num_final_detections_total"]
    return out


def _match_final(official: list[dict], ours: list, coco_mask, top: int = 20) -> dict:
    boxes = np.array([o[2] for o in ours], dtype=np.float64).reshape(-1, 4)
    used: set[int] = set()
    score_diffs, mask_ious, exact_boxes = [], [], 0
    for det in official[:top]:
        cands = [j for j, o in enumerate(ours) if o[0] == det["class_index"] and j not in used]
        if not cands:
            continue
        ious = _inclusive_iou(np.array([det["box"]]), boxes[cands])[0]
        if ious.max() < 0.9:
            continue
        j = cands[int(ious.argmax())]
        used.add(j)
        score_diffs.append(abs(ours[j][1] - det["score"]))
        exact_boxes += bool(np.array_equal(boxes[j], det["box"]))
        a = {"size": ours[j][3]["size"], "counts": ours[j][3]["counts"].encode()}
        b = {"size": det["mask_rle"]["size"], "counts": det["mask_rle"]["counts"].encode()}
        mask_ious.append(float(coco_mask.iou([a], [b], [0])[0, 0]))
    n = min(top, len(official))
    return {"top": n, "matched": len(score_diffs), "matched_fraction": len(score_diffs) / max(n, 1),
            "boxes_exactly_equal": exact_boxes,
            "max_score_diff": float(max(score_diffs)) if score_diffs else None,
            "median_mask_iou": float(np.median(mask_ious)) if mask_ious else None,
            "min_mask_iou": float(min(mask_ious)) if mask_ious else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    ap.add_argument("--fixtures", type=Path, default=FIXTURES)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    run = json.loads((args.fixtures / "run.json").read_text())
    model, info = build_model(args.fixtures)
    info["params_equal_oracle_file"] = info["params_sha256"] == run["weights_file_sha256"]
    print(json.dumps(info))
    results = [compare_photo(model, Path(p).stem, args.data_root, args.fixtures) for p in run["photos"]]
    for r in results:
        print(json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
