"""Write README.md for the oracle's full dumps (the scratch folder of run_official.py): every .npy with its
shape, dtype and layout, per photo. NumPy only.

    python -m tools.official.scratch_readme /work/shared-scratch/official
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

LAYOUTS = {
    "input_data": "(1, 3, h, w) float32: the official transform() of the cv2-resized photo, channel 0 = R - 123.15, "
                  "1 = G - 115.90, 2 = B - 103.06 (0-255 scale, no std); exactly what the network consumed",
    "input_im_info": "(1, 3) float32: resized h, w, scale",
    "resized_bgr": "(h, w, 3) uint8: cv2.imread(IMREAD_COLOR|IMREAD_IGNORE_ORIENTATION) then "
                   "cv2.resize(fx=fy=scale, INTER_LINEAR), BGR",
    "res4b22_relu": "(1, 1024, H, W): conv4 output (after the last ReLU), feeds the RPN and res5",
    "res5c_relu": "(1, 2048, H, W): res5 output (stride 16, dilation 2)",
    "conv_new_1": "(1, 1024, H, W): conv_new_1 BEFORE its ReLU",
    "relu_new_1": "(1, 1024, H, W): after ReLU (the input of fcis_cls_seg and fcis_bbox)",
    "rpn_cls_score": "(1, 24, H, W): RPN logits, channels 0-11 background of anchors 0-11, 12-23 foreground",
    "rpn_cls_prob_reshape": "(1, 24, H, W): softmax over (bg, fg) per anchor; channel a = bg prob, 12 + a = fg prob",
    "rpn_bbox_pred": "(1, 48, H, W): channel 4a + (dx, dy, dw, dh) of anchor a (no normalisation at test time)",
    "rois_pass1": "(300, 5) float32: the official Python proposal op's output, (batch 0, x1, y1, x2, y2) in "
                  "resized-image pixels, order = NMS keep order (highest RPN score first)",
    "fcis_cls_seg": "(1, 7938, H, W): position-sensitive score maps; channel ((class*2 + pair)*7 + gh)*7 + gw, "
                    "class 0..80 (0 = background), pair 0 = outside, 1 = inside",
    "fcis_bbox": "(1, 392, H, W): class-agnostic box maps; channel ((k)*7 + gh)*7 + gw, k = 0..7 = (bg dx, dy, "
                 "dw, dh, fg dx, dy, dw, dh); computed with fcis_bbox_weight/bias (load_param process=False, the official "
                 "evaluation; with --load-as demo: the _test ones, std-folded)",
    "psroipool_cls_seg_pass1": "(300, 162, 21, 21): PSROIPooling(group 7, pooled 21, scale 1/16) of fcis_cls_seg, "
                               "channel class*2 + pair",
    "psroipool_bbox_pass1": "(300, 8, 21, 21): PSROIPooling of fcis_bbox",
    "psroipool_cls_pass1": "(300, 81, 21, 21): ChannelOperator Group_Max over each class's (outside, inside) pair",
    "cls_score_pass1": "(300, 81): global average of psroipool_cls (the class logits)",
    "cls_prob_pass1": "(300, 81): softmax of cls_score",
    "bbox_pred_pass1": "(300, 8): global average of psroipool_bbox; columns 4:8 are used (class-agnostic fg)",
    "seg_pred_pass1": "(300, 2, 21, 21): Group_Softmax over each pair, then the pair of the argmax class over "
                      "classes 1..80 (Score_Pick); [:, 1] = foreground probability",
    "rois_iter2": "(300, 5): BoxParser(rois_pass1, bbox_pred_pass1[:, 4:8] * (0.2, 0.2, 0.5, 0.5), clipped to "
                  "(h - 1, w - 1)) -- the pass-2 RoIs",
    "psroipool_cls_seg_pass2": "(300, 162, 21, 21): as pass 1 on rois_iter2",
    "psroipool_bbox_pass2": "(300, 8, 21, 21)",
    "psroipool_cls_pass2": "(300, 81, 21, 21)",
    "cls_score_pass2": "(300, 81)",
    "cls_prob_pass2": "(300, 81)",
    "bbox_pred_pass2": "(300, 8) (computed by the official symbol but not used by the tester)",
    "seg_pred_pass2": "(300, 2, 21, 21)",
    "out_rois": "(600, 5): the symbol's output rois = concat(rois_pass1, rois_iter2)",
    "out_cls_prob_reshape": "(1, 600, 81): output cls_prob",
    "out_bbox_pred_reshape": "(1, 600, 8): output bbox_pred (unused by the tester)",
    "out_seg_pred": "(600, 2, 21, 21): output seg_pred",
    "im_detect_scores": "(n, 81): im_detect's scores after filter_boxes(rois, MIN_DROP_SIZE=2) (n <= 600)",
    "im_detect_boxes_clipped": "(n, 4): im_detect's boxes = rois / scale, then clip_boxes to (round(h/scale), "
                               "round(w/scale)) as pred_eval does before mask voting (original-image pixels)",
    "im_detect_masks": "(n, 2, 21, 21): im_detect's masks (seg_pred rows kept by filter_boxes)",
    "kept_rows600": "(n,): which of the 600 output rows im_detect kept (filter_boxes)",
    "prevoting_dets": "(m, 7) float64: the detections cpu_mask_voting votes for: class, row (into the n kept rows), "
                      "score, x1, y1, x2, y2 (per-class NMS 0.3, <= 100 per class, then score >= the 100th best "
                      "score over all classes and >= 1e-3), ordered by class then NMS order",
    "voted_boxes": "(m, 6): cpu_mask_voting's output boxes: x1, y1, x2, y2 (the tight box of the voted mask at 0.4, "
                   "original-image pixels, inclusive), score, class; same order as prevoting_dets",
    "voted_masks21": "(m, 21, 21): the voted masks, cv2.resize of the clipped im_mask to 21x21 (values in [0, 1], "
                     "binarised at 0.4 when pasted by mask_voc2coco into the tight box)",
}


def _loading(scratch: Path) -> str:
    """How the oracle loaded the weights file (run.json, copied into the scratch folder by run_official)."""
    run = scratch / "run.json"
    if not run.is_file():
        return "How it was loaded: see tests/fixtures/official/run.json (`load_as`)."
    r = json.loads(run.read_text())
    load = r.get("loading")
    if not load:
        return ("Loaded as the official fcis/demo.py does (load_param(process=True): the _test arrays renamed over "
                "fcis_bbox_*; the run predates --load-as).")
    return (f"Loaded as `{load['entry_point']}` does (`--load-as {load['load_as']}`): `{load['call']}`; the network "
            f"bound fcis_bbox_weight = `{load['network_binds']['fcis_bbox_weight']}` of the file.")


def write_readme(scratch: Path, status: str = "") -> Path:
    photos = sorted(p.name for p in scratch.iterdir() if p.is_dir() and p.name != "weights")
    lines = [
        "# Official FCIS intermediates (oracle dumps, not committed)",
        "",
        f"**Status: READY** for {len(photos)} photo(s): {', '.join(photos)}. {status}".rstrip(),
        "",
        "Written by `tools/official/run_official.py` (branch o-oracle) running the OFFICIAL msracver/FCIS test",
        "symbol with MXNet 1.9.1 on CPU, on the seeded weights (tools/official/seed_rule.py + the committed",
        "tests/fixtures/official/bn_stats.npz). The weights file itself, as MXNet saved it (trainer checkpoint",
        "layout: arg:/aux: names plus arg:fcis_bbox_weight_test / arg:fcis_bbox_bias_test), is in `weights/`.",
        _loading(scratch),
        "",
        "All arrays are float32 unless said otherwise. H, W = the conv4/res5 map size: from the resized h,",
        "h1 = floor((h - 1) / 2) + 1 (conv1 7x7/2 pad 3), h2 = ceil((h1 - 3) / 2) + 1 (3x3/2 max pool, ceil mode),",
        "h3 = floor((h2 - 1) / 2) + 1, H = floor((h3 - 1) / 2) + 1 (the stride-2 1x1 convs of res3a and res4a);",
        "600 -> 38, 626 -> 39, 900 -> 57. The proposal op only uses the first int(h / 16) x int(w / 16) cells",
        "(600 -> 37 of 38 rows): anchors of the last row/column are dropped when h or w is not a multiple of 16.",
        "The small committed fixtures are in tests/fixtures/official/ (<photo>.json / <photo>.npz, run.json).",
        "",
    ]
    weights = sorted((scratch / "weights").glob("*.params")) if (scratch / "weights").is_dir() else []
    for w in weights:
        lines.append(f"- `weights/{w.name}` ({w.stat().st_size / 1e6:.1f} MB)")
    for d in sorted(p for p in scratch.iterdir() if p.is_dir() and p.name != "weights"):
        lines += ["", f"## {d.name}", "", "| file | shape | dtype | layout |", "|---|---|---|---|"]
        for f in sorted(d.glob("*.npy")):
            a = np.load(f, mmap_mode="r")
            lines.append(f"| {f.name} | {tuple(a.shape)} | {a.dtype} | {LAYOUTS.get(f.stem, '')} |")
        for f in sorted(d.glob("*.json")):
            n = len(json.loads(f.read_text()))
            lines.append(f"| {f.name} | {n} lists | json | the keep list of each of the 80 per-class NMS calls "
                         "in cpu_mask_voting (indices into the n kept rows), classes 1..80 in order |")
    out = scratch / "README.md"
    out.write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    print(write_readme(Path(sys.argv[1]), " ".join(sys.argv[2:])))
