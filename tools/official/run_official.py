"""Run the OFFICIAL FCIS inference (msracver/FCIS, MXNet) on seeded weights and write the reference outputs.

    /work/venvs/mxnet-oracle/bin/python -m tools.official.run_official --official /work/ref/msracver+FCIS \
        --photos PennFudanPed/PNGImages/FudanPed00001.png ... --data-root /work/shared/data \
        --out tests/fixtures/official --seed 0 [--bn-stats tests/fixtures/official/bn_stats.npz] \
        [--scratch /work/shared-scratch/official] [--load-as test|demo]

Steps (the official code does every numeric step; see tools/official/README.md):
1. the official COCO test symbol (fcis/symbols/resnet_v1_101_fcis.py, is_train=False) and config
   (experiments/fcis/cfgs/resnet_v1_101_coco_fcis_end2end_ohem.yaml: TEST.ITER 2, mask merge, NMS 0.3, ...);
2. weights: tools/official/seed_rule.py; BatchNorm statistics calibrated on the photos (each photo's batch
   statistics with every BN in training mode, pooled over the photos; or --bn-stats);
3. saved by MXNet (mx.nd.save, a trainer checkpoint's layout incl. fcis_bbox_*_test) to the scratch folder
   and loaded back with the official utils/load_model.load_param: ``--load-as test`` (the default) as the
   official evaluation fcis/function/test_fcis.py does, ``process=False`` (the network binds fcis_bbox_*,
   the BoxParser applies TRAIN.BBOX_STDS; the _test arrays are loaded and unused), ``--load-as demo`` as
   fcis/demo.py does, ``process=True`` (the _test arrays, already x stds, renamed over fcis_bbox_*, so the
   BoxParser's stds apply a second time);
4. per photo: the official preprocessing, core.tester.Predictor + im_detect, then the COCO post-processing
   of core.tester.pred_eval with cpu_mask_voting, and the COCO result encoding of dataset/coco.py
   (utils.mask_voc2coco) at the photo's size;
5. fixtures (small) under --out, full intermediates (.npy) under --scratch/<photo id>/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from tools.official import seed_rule
from tools.official.official_model import (
    Official,
    Photo,
    load_official,
    load_photo,
    param_shapes,
    round_stats,
)

N_SAMPLES = 64  # sampled feature values per map
N_FINAL = 100


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sha256_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def photo_id(rel: str) -> str:
    return Path(rel).stem


def feature_summary(name: str, x: np.ndarray) -> dict:
    """mean/std/min/max of a (1, C, H, W) map, and N_SAMPLES values at fixed positions
    (RandomState(0) over (C, H, W), the positions stored with the values)."""
    x = x[0].astype(np.float64)
    c, h, w = x.shape
    rs = np.random.RandomState(0)
    idx = np.stack([rs.randint(0, c, N_SAMPLES), rs.randint(0, h, N_SAMPLES), rs.randint(0, w, N_SAMPLES)], 1)
    return {
        "name": name,
        "shape": [1, c, h, w],
        "mean": float(x.mean()),
        "std": float(x.std()),
        "min": float(x.min()),
        "max": float(x.max()),
        "fraction_positive": float((x > 0).mean()),
        "sample_chw": idx.tolist(),
        "sample_values": [float(x[i, j, k]) for i, j, k in idx],
    }


# ----------------------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------------------
def build_weights(off: Official, seed: int, bn_stats_in: Path | None, calib_photos: list[Photo],
                  calib_names: list[str], out_dir: Path) -> tuple[dict[str, np.ndarray], set[str], dict]:
    from tools.official.official_model import calibrate_bn, pool_stats

    ps = param_shapes(off)
    (out_dir / "param_shapes.json").write_text(json.dumps(ps) + "\n")
    shapes = {**{k: tuple(v) for k, v in ps["arg"].items()}, **{k: tuple(v) for k, v in ps["aux"].items()}}
    aux = set(ps["aux"])
    params = seed_rule.seeded_params(shapes, seed)
    info: dict = {}
    if bn_stats_in is not None:
        params = seed_rule.full_params(shapes, seed, bn_stats_in)
        info["bn_stats"] = {"loaded_from": str(bn_stats_in), "sha256": _sha256_file(bn_stats_in)}
        # keep the record of the run that calibrated them (its run.json beside the statistics)
        prev = bn_stats_in.parent / "run.json"
        if prev.is_file():
            old = json.loads(prev.read_text()).get("weights", {}).get("bn_stats")
            old = old.get("calibration", old) if isinstance(old, dict) else None
            if isinstance(old, dict) and "calibrated_on" in old:
                info["bn_stats"]["calibration"] = old
    else:
        t = time.time()
        raw = pool_stats([calibrate_bn(off, params, photo) for photo in calib_photos])
        rounded = round_stats(raw)
        np.savez_compressed(out_dir / "bn_stats.npz", **{k: v.astype(np.float16) for k, v in rounded.items()})
        params.update(rounded)
        rel = max(float(np.max(np.abs(rounded[k] - raw[k]) / (np.abs(raw[k]) + 1e-3))) for k in raw)
        info["bn_stats"] = {"calibrated_on": calib_names, "seconds": round(time.time() - t, 1),
                            "max_relative_float16_rounding": rel}
    return params, aux, info


# --load-as: which official entry point's loader call the oracle repeats
LOAD_AS = {
    "test": ("fcis/function/test_fcis.py", False),  # the official evaluation (the paper's numbers)
    "demo": ("fcis/demo.py", True),
}


def save_and_reload(off: Official, params: dict[str, np.ndarray], aux: set[str], prefix: Path, load_as: str
                    ) -> tuple[dict, dict, Path, dict]:
    """mx.nd.save in the trainer checkpoint layout, then the official load_param(prefix, 0, process=...) as
    the entry point ``load_as`` ("test" or "demo", :data:`LOAD_AS`) calls it. Also returns what the network
    binds as fcis_bbox_weight/bias: which array of the saved layout it equals (sha256)."""
    mx = off.mx
    prefix.parent.mkdir(parents=True, exist_ok=True)
    layout = seed_rule.checkpoint_layout(params, aux)
    path = Path(f"{prefix}-0000.params")
    mx.nd.save(str(path), {k: mx.nd.array(v, dtype="float32") for k, v in layout.items()})
    from utils.load_model import load_param

    entry, process = LOAD_AS[load_as]
    arg_params, aux_params = load_param(str(prefix), 0, process=process)
    by_sha = {_sha256_array(v): k for k, v in layout.items() if k.startswith("arg:fcis_bbox_")}
    bound = {name: by_sha.get(_sha256_array(arg_params[name].asnumpy()), "(none of the saved arrays)")
             for name in ("fcis_bbox_weight", "fcis_bbox_bias")}
    info = {"load_as": load_as, "entry_point": entry,
            "call": f"utils.load_model.load_param(prefix, 0, process={process})",
            "network_binds": bound}
    return arg_params, aux_params, path, info


# ----------------------------------------------------------------------------------------------------------
# intermediates
# ----------------------------------------------------------------------------------------------------------
# (file stem, internal output name, occurrence of that name in sym.get_internals().list_outputs())
DUMPS = [
    ("res4b22_relu", "res4b22_relu_output", 0),
    ("res5c_relu", "res5c_relu_output", 0),
    ("conv_new_1", "conv_new_1_output", 0),
    ("relu_new_1", "relu_new_1_output", 0),
    ("rpn_cls_score", "rpn_cls_score_output", 0),
    ("rpn_cls_prob_reshape", "rpn_cls_prob_reshape_output", 0),
    ("rpn_bbox_pred", "rpn_bbox_pred_output", 0),
    ("rois_pass1", "rois_output", 0),
    ("fcis_cls_seg", "fcis_cls_seg_output", 0),
    ("fcis_bbox", "fcis_bbox_output", 0),
    ("psroipool_cls_seg_pass1", "psroipool_cls_seg_output", 0),
    ("psroipool_bbox_pass1", "psroipool_bbox_output", 0),
    ("psroipool_cls_pass1", "psroipool_cls_output", 0),
    ("cls_score_pass1", "cls_score_reshape_output", 0),
    ("cls_prob_pass1", "cls_prob_output", 0),
    ("bbox_pred_pass1", "bbox_pred_reshape_output", 0),
    ("seg_pred_pass1", "seg_pred_output", 0),
    ("rois_iter2", "rois_iter2_output", 0),
    ("psroipool_cls_seg_pass2", "psroipool_cls_seg_output", 1),
    ("psroipool_bbox_pass2", "psroipool_bbox_output", 1),
    ("psroipool_cls_pass2", "psroipool_cls_output", 1),
    ("cls_score_pass2", "cls_score_reshape_output", 1),
    ("cls_prob_pass2", "cls_prob_output", 1),
    ("bbox_pred_pass2", "bbox_pred_reshape_output", 1),
    ("seg_pred_pass2", "seg_pred_output", 1),
    ("out_rois", "rois_output", 1),
    ("out_cls_prob_reshape", "cls_prob_reshape_output", 0),
    ("out_bbox_pred_reshape", "bbox_pred_reshape_output", 2),
    ("out_seg_pred", "seg_pred_output", 2),
]


def run_internals(off: Official, arg_params: dict, aux_params: dict, photo: Photo) -> dict[str, np.ndarray]:
    """A second forward of the same official symbol, exposing internal outputs (get_internals)."""
    mx = off.mx
    ints = off.sym.get_internals()
    names = ints.list_outputs()
    picks = []
    for _, name, occ in DUMPS:
        where = [i for i, n in enumerate(names) if n == name]
        picks.append(ints[where[occ]])
    group = mx.sym.Group(picks)
    args = {n: arg_params[n] for n in group.list_arguments() if n in arg_params}
    args["data"] = mx.nd.array(photo.tensor, dtype="float32")  # what the Predictor's bound float32 array holds
    args["im_info"] = mx.nd.array(photo.im_info)
    aux = {n: aux_params[n] for n in group.list_auxiliary_states()}
    exe = group.bind(mx.cpu(), args, grad_req="null", aux_states=aux)
    outs = exe.forward(is_train=False)
    return {stem: o.asnumpy() for (stem, _, _), o in zip(DUMPS, outs)}


# ----------------------------------------------------------------------------------------------------------
# one photo
# ----------------------------------------------------------------------------------------------------------
def run_photo(off: Official, arg_params: dict, aux_params: dict, photo: Photo, rel: str, data_root: Path,
              out_dir: Path, scratch: Path | None) -> dict:
    mx, cfg = off.mx, off.cfg
    import mask.mask_transform as mask_transform
    from bbox.bbox_transform import clip_boxes, filter_boxes
    from core.tester import Predictor, im_detect
    from utils.mask_voc2coco import mask_voc2coco

    pid = photo_id(rel)
    data_names = ["data", "im_info"]
    data = [mx.nd.array(photo.tensor), mx.nd.array(photo.im_info)]
    provide_data = [[(k, v.shape) for k, v in zip(data_names, data)]]
    t = time.time()
    # max_data_shapes = this photo's shape: the official executor group reshapes a larger bound array to a
    # smaller one, which MXNet 1.9.1's NDArray.reshape refuses; binding at the exact shape avoids that reshape.
    predictor = Predictor(off.sym, data_names, [], context=[mx.cpu()], max_data_shapes=[[("data", photo.tensor.shape)]],
                          provide_data=provide_data, provide_label=[None], arg_params=arg_params,
                          aux_params=aux_params)
    t_bind = time.time() - t
    batch = mx.io.DataBatch(data=[data], label=[], pad=0, index=0, provide_data=provide_data, provide_label=[None])
    scales = [batch.data[i][1].asnumpy()[0, 2] for i in range(len(batch.data))]
    np.random.seed(0)  # the official Proposal pads with np.random.choice when NMS keeps < 300
    t = time.time()
    scores_all, boxes_all, masks_all, _ = im_detect(predictor, batch, data_names, scales, cfg)
    t_net = time.time() - t
    raw_out = predictor._mod.get_outputs(merge_multi_context=False)
    out_names = predictor._mod.output_names
    official_out = {n: o[0].asnumpy() for n, o in zip(out_names, raw_out)}
    im_shape = batch.data[0][0].shape[2:4]

    # pred_eval's USE_MASK_MERGE branch, with cpu_mask_voting; the per-class NMS calls are recorded.
    nms_log: list[list[int]] = []
    py_nms_wrapper = mask_transform.py_nms_wrapper

    def recording_nms_wrapper(thresh):
        inner = py_nms_wrapper(thresh)

        def _nms(dets):
            keep = inner(dets)
            nms_log.append([int(i) for i in keep])
            return keep
        return _nms

    scores, boxes, masks = scores_all[0], boxes_all[0], masks_all[0]
    t = time.time()
    masks_fg = masks[:, 1:, :, :]
    im_height = int(np.round(im_shape[0] / scales[0]).astype("int"))
    im_width = int(np.round(im_shape[1] / scales[0]).astype("int"))
    boxes = clip_boxes(boxes, (im_height, im_width))
    mask_transform.py_nms_wrapper = recording_nms_wrapper
    try:
        result_mask, result_box = mask_transform.cpu_mask_voting(
            masks_fg, boxes, scores, cfg.dataset.NUM_CLASSES, 100, im_width, im_height, cfg.TEST.NMS,
            cfg.TEST.MASK_MERGE_THRESH, cfg.BINARY_THRESH)
    finally:
        mask_transform.py_nms_wrapper = py_nms_wrapper
    t_post = time.time() - t

    # which RoI (row of the 600 after filter_boxes) seeded each voted detection
    all_scores = []
    kept = [[]] + [k[:100] for k in nms_log]
    for c in range(1, cfg.dataset.NUM_CLASSES):
        all_scores.extend(scores[kept[c], c])
    sorted_scores = np.sort(all_scores)[::-1]
    thresh = max(sorted_scores[min(len(sorted_scores), 100) - 1], 1e-3)
    rows600 = filter_boxes(official_out["rois_output"][:, 1:], cfg.TEST.MIN_DROP_SIZE)

    # dataset/coco.py's segm results: boxes clipped to the photo's size, mask_voc2coco at that size
    height, width = photo.original_bgr.shape[:2]
    dets = []
    empty_fallback = 0
    for c in range(1, cfg.dataset.NUM_CLASSES):
        box = result_box[c].astype(np.float64)
        if len(box) == 0:
            continue
        seeds = [i for i in kept[c] if scores[i, c] >= thresh]
        assert len(seeds) == len(box), (c, len(seeds), len(box))
        msk = result_mask[c][:, 0, :, :]
        box[:, :4] = clip_boxes(box[:, :4], [height, width])
        rles = mask_voc2coco(msk, box[:, :4], height, width, cfg.BINARY_THRESH)
        for k in range(len(box)):
            x1, y1, x2, y2, s = box[k]
            if x1 == x2 and y1 == y2 and float(msk[k].max()) < cfg.BINARY_THRESH:
                empty_fallback += 1
            counts = rles[k]["counts"]
            dets.append({
                "class_index": c,
                "score": float(s),
                "box": [float(x1), float(y1), float(x2), float(y2)],
                "seed_row": int(seeds[k]),
                "seed_roi_index": int(rows600[seeds[k]]),
                "mask_rle": {"size": [int(v) for v in rles[k]["size"]],
                             "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts},
                "mask_area": int(_rle_area(rles[k])),
            })
    dets.sort(key=lambda d: -d["score"])
    n_total = len(dets)
    dets = dets[:N_FINAL]

    # internals (second forward) and consistency with the official Predictor's outputs
    del predictor, raw_out
    t = time.time()
    inter = run_internals(off, arg_params, aux_params, photo)
    t_int = time.time() - t
    same = {
        "rois_output": bool(np.array_equal(inter["out_rois"], official_out["rois_output"])),
        "cls_prob_reshape_output": bool(np.array_equal(inter["out_cls_prob_reshape"],
                                                       official_out["cls_prob_reshape_output"])),
        "seg_pred_output": bool(np.array_equal(inter["out_seg_pred"], official_out["seg_pred_output"])),
        "bbox_pred_reshape_output": bool(np.array_equal(inter["out_bbox_pred_reshape"],
                                                        official_out["bbox_pred_reshape_output"])),
    }

    p1 = inter["cls_prob_pass1"]
    result = {
        "photo": {
            "id": pid,
            "path": rel,
            "sha256": _sha256_file(data_root / rel),
            "bytes": (data_root / rel).stat().st_size,
            "height": int(height),
            "width": int(width),
            "decoded_bgr_sha256": _sha256_array(photo.original_bgr),
            "resized_bgr_sha256": _sha256_array(photo.resized_bgr),
        },
        "im_info": [float(v) for v in photo.im_info[0]],
        "im_info_note": "resized height, width, scale (float32 as fed to the network)",
        "voting_size": [im_height, im_width],
        "features": [feature_summary(n, inter[n]) for n in
                     ("res4b22_relu", "res5c_relu", "conv_new_1", "relu_new_1", "rpn_cls_prob_reshape",
                      "rpn_bbox_pred")],
        "num_rows_after_min_drop": int(len(rows600)),
        "nms_kept_per_class": [len(k) for k in kept[1:]],
        "score_threshold": float(thresh),
        "empty_mask_fallbacks": empty_fallback,
        "num_final_detections_total": n_total,
        "detections": dets,
        "internal_forward_equals_predictor": same,
        "seconds": {"bind": round(t_bind, 2), "im_detect": round(t_net, 2), "cpu_mask_voting": round(t_post, 2),
                    "internals_forward": round(t_int, 2)},
    }
    (out_dir / f"{pid}.json").write_text(json.dumps(result, indent=1) + "\n")

    # small arrays (npz)
    np.savez_compressed(
        out_dir / f"{pid}.npz",
        proposals=inter["rois_pass1"].astype(np.float32),  # (300, 5): batch index, x1, y1, x2, y2
        rpn_scores=_proposal_scores(off, inter, photo),  # (300,) fg prob of each proposal
        cls_prob_pass1=p1.astype(np.float16),  # (300, 81)
        cls_score_pass1=inter["cls_score_pass1"].astype(np.float32),  # (300, 81) logits
        bbox_pred_pass1=inter["bbox_pred_pass1"].astype(np.float32),  # (300, 8)
        rois_iter2=inter["rois_iter2"].astype(np.float32),  # (300, 5)
        cls_prob_pass2=inter["cls_prob_pass2"].astype(np.float16),  # (300, 81)
        seg_fg_pass1_first50=inter["seg_pred_pass1"][:50, 1].astype(np.float16),  # (50, 21, 21)
        channel_mean_res4b22_relu=inter["res4b22_relu"][0].mean((1, 2)).astype(np.float32),
        channel_mean_res5c_relu=inter["res5c_relu"][0].mean((1, 2)).astype(np.float32),
        channel_mean_conv_new_1=inter["conv_new_1"][0].mean((1, 2)).astype(np.float32),
    )

    if scratch is not None:
        d = scratch / pid
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "input_data.npy", photo.tensor.astype(np.float32))
        np.save(d / "input_im_info.npy", photo.im_info)
        np.save(d / "resized_bgr.npy", photo.resized_bgr)
        for stem, arr in inter.items():
            np.save(d / f"{stem}.npy", arr)
        np.save(d / "im_detect_scores.npy", scores)
        np.save(d / "im_detect_boxes_clipped.npy", boxes)
        np.save(d / "im_detect_masks.npy", masks)
        np.save(d / "kept_rows600.npy", rows600)
        pre = [(c, i, float(scores[i, c])) for c in range(1, cfg.dataset.NUM_CLASSES) for i in kept[c]
               if scores[i, c] >= thresh]
        np.save(d / "prevoting_dets.npy", np.array([[c, i, s, *boxes[i]] for c, i, s in pre], dtype=np.float64))
        fb = [np.concatenate([result_box[c], np.full((len(result_box[c]), 1), c)], 1)
              for c in range(1, cfg.dataset.NUM_CLASSES) if len(result_box[c])]
        np.save(d / "voted_boxes.npy", np.concatenate(fb, 0) if fb else np.zeros((0, 6)))
        fm = [result_mask[c][:, 0] for c in range(1, cfg.dataset.NUM_CLASSES) if len(result_mask[c])]
        np.save(d / "voted_masks21.npy", np.concatenate(fm, 0) if fm else np.zeros((0, 21, 21)))
        (d / "nms_log.json").write_text(json.dumps(nms_log) + "\n")
    return result


def _proposal_scores(off: Official, inter: dict, photo: Photo) -> np.ndarray:
    """The fg probability of each of the 300 proposals. The official proposal op does not output them
    (output_score False); recomputed here with the same steps as fcis/operator_py/proposal.py (anchors,
    clip_pad, bbox_pred, clip_boxes, filter, top-6000 by argsort, NMS) and matched to the op's rois."""
    from bbox.bbox_transform import bbox_pred, clip_boxes
    from rpn.generate_anchor import generate_anchors

    cfg = off.cfg
    a = generate_anchors(base_size=cfg.network.RPN_FEAT_STRIDE, scales=np.array(cfg.network.ANCHOR_SCALES, dtype=float),
                         ratios=np.array(cfg.network.ANCHOR_RATIOS, dtype=float))
    na = a.shape[0]
    prob = inter["rpn_cls_prob_reshape"][:, na:]
    deltas = inter["rpn_bbox_pred"]
    h, w = int(photo.im_info[0, 0] / 16), int(photo.im_info[0, 1] / 16)
    sx, sy = np.meshgrid(np.arange(w) * 16, np.arange(h) * 16)
    shifts = np.vstack((sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel())).T
    anchors = (a.reshape(1, na, 4) + shifts.reshape(1, -1, 4).transpose(1, 0, 2)).reshape(-1, 4)
    d = deltas[:, :, :h, :w].transpose(0, 2, 3, 1).reshape(-1, 4)
    s = prob[:, :, :h, :w].transpose(0, 2, 3, 1).reshape(-1)
    props = clip_boxes(bbox_pred(anchors, d), photo.im_info[0, :2])
    rois = inter["rois_pass1"][:, 1:]
    out = np.zeros(len(rois), np.float32)
    props32 = props.astype(np.float32)
    for i, r in enumerate(rois):
        hit = np.nonzero(np.all(props32 == r, axis=1))[0]
        out[i] = s[hit].max() if len(hit) else np.nan
    return out


def _rle_area(rle) -> int:
    import pycocotools.mask as cm

    return int(cm.area(rle))


def main() -> None:
    ap = argparse.ArgumentParser(description="official FCIS inference on seeded weights -> fixtures")
    ap.add_argument("--official", type=Path, required=True, help="msracver/FCIS checkout")
    ap.add_argument("--photos", nargs="+", required=True, help="paths relative to --data-root")
    ap.add_argument("--data-root", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--out", type=Path, required=True, help="fixture folder (small files, committed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bn-stats", type=Path, default=None, help="use these statistics instead of calibrating")
    ap.add_argument("--calibrate-on", nargs="+", default=None,
                    help="photos (relative to --data-root) whose pooled statistics calibrate the BNs "
                         "(default: all of --photos)")
    ap.add_argument("--scratch", type=Path, default=None, help="folder for the weights file and full dumps")
    ap.add_argument("--load-as", choices=sorted(LOAD_AS), default="test",
                    help="load the MXNet file as the official evaluation fcis/function/test_fcis.py does "
                         "(test: load_param(process=False), the default) or as fcis/demo.py does "
                         "(demo: process=True, the fcis_bbox_*_test arrays renamed over fcis_bbox_*)")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    scratch = args.scratch
    weights_dir = (scratch or Path("/tmp/fcis-oracle")) / "weights"
    off = load_official(args.official)
    photos = [load_photo(off, args.data_root / rel) for rel in args.photos]
    t = time.time()
    calib_names = args.calibrate_on or args.photos
    calib = [photos[args.photos.index(rel)] if rel in args.photos else load_photo(off, args.data_root / rel)
             for rel in calib_names]
    params, aux, winfo = build_weights(off, args.seed, args.bn_stats, calib, list(calib_names), args.out)
    del calib
    arg_params, aux_params, wpath, load_info = save_and_reload(off, params, aux,
                                                               weights_dir / f"fcis_seeded_s{args.seed}",
                                                               args.load_as)
    print(json.dumps(load_info), flush=True)
    winfo["seconds_total"] = round(time.time() - t, 1)

    summaries = []
    for rel, photo in zip(args.photos, photos):
        res = run_photo(off, arg_params, aux_params, photo, rel, args.data_root, args.out, scratch)
        d = res["detections"]
        summaries.append({"id": res["photo"]["id"], "n": len(d), "top_score": d[0]["score"] if d else None,
                          "seconds": res["seconds"]})
        print(json.dumps(summaries[-1]), flush=True)

    import mxnet as mx

    commit = subprocess.run(["git", "-C", str(args.official), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    meta = {
        "seed": args.seed,
        "seed_rule_version": seed_rule.SEED_RULE_VERSION,
        "scale_factors": {k: getattr(seed_rule, k) for k in
                          ("RPN_CLS_SCALE", "RPN_CLS_BIAS", "RPN_BBOX_SCALE", "CLS_SEG_SCALE", "CLS_SEG_BIAS",
                           "BBOX_SCALE", "BBOX_MEANS", "BBOX_STDS")},
        "load_as": args.load_as,
        "loading": load_info,
        "weights": winfo,
        "weights_file": str(wpath),
        "weights_file_sha256": _sha256_file(wpath),
        "weights_sha256": {k: _sha256_array(v) for k, v in
                           sorted(seed_rule.checkpoint_layout(params, aux).items())},
        "official_commit": commit,
        "config": "experiments/fcis/cfgs/resnet_v1_101_coco_fcis_end2end_ohem.yaml",
        "mxnet": mx.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "photos": args.photos,
        "summaries": summaries,
    }
    (args.out / "run.json").write_text(json.dumps(meta, indent=1) + "\n")
    if scratch is not None:
        (scratch / "run.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
