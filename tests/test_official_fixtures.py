"""Integrity of the official-code fixtures (tests/fixtures/official, written by tools/official/run_official.py
with MXNet running the official FCIS code) and of the real MXNet files for the reader tests
(tests/fixtures/mxnet). The comparison of fcis's official variant against these outputs is elsewhere; here:
files present and self-consistent, the seed rule reproducing the weights MXNet ran (sha256 per array), the
photos being the ones the oracle saw."""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import pycocotools.mask as coco_mask
import pytest

from tools.official import seed_rule

HERE = Path(__file__).resolve().parent
OFFICIAL = HERE / "fixtures" / "official"
MXNET = HERE / "fixtures" / "mxnet"


def _run() -> dict:
    return json.loads((OFFICIAL / "run.json").read_text())


def _photo_ids() -> list[str]:
    return [Path(p).stem for p in _run()["photos"]]


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_official_fixture_files_present_and_small():
    run = _run()
    assert len(run["photos"]) >= 4
    names = ["run.json", "param_shapes.json", "bn_stats.npz"]
    for pid in _photo_ids():
        names += [f"{pid}.json", f"{pid}.npz"]
    total = 0
    for name in names:
        path = OFFICIAL / name
        assert path.is_file(), f"missing fixture {path}"
        total += path.stat().st_size
    assert total < 3_000_000, f"official fixtures take {total} bytes"


def test_param_shapes_are_the_coco_resnet101_fcis():
    shapes, aux = seed_rule.load_param_shapes(OFFICIAL / "param_shapes.json")
    assert len(aux) == 208 and all(n.endswith(("_moving_mean", "_moving_var")) for n in aux)
    assert shapes["conv1_weight"] == (64, 3, 7, 7)
    assert shapes["rpn_cls_score_weight"] == (2 * 12, 512, 1, 1)  # 12 anchors, bg then fg
    assert shapes["rpn_bbox_pred_weight"] == (4 * 12, 512, 1, 1)
    assert shapes["fcis_cls_seg_weight"] == (7 * 7 * 81 * 2, 1024, 1, 1)  # 81 classes incl. background
    assert shapes["fcis_bbox_weight"] == (7 * 7 * 4 * 2, 1024, 1, 1)  # class-agnostic
    assert shapes["res5a_branch2b_weight"] == (512, 512, 3, 3)
    assert sum(int(np.prod(s)) for s in shapes.values()) > 50_000_000


def test_bn_stats_cover_every_batchnorm_in_float16():
    shapes, aux = seed_rule.load_param_shapes(OFFICIAL / "param_shapes.json")
    with np.load(OFFICIAL / "bn_stats.npz") as z:
        assert set(z.files) == aux
        for name in z.files:
            v = z[name]
            assert v.dtype == np.float16 and v.shape == shapes[name], name
            assert np.all(np.isfinite(v)), name
            if name.endswith("_moving_var"):
                assert np.all(v > 0), name
    stats = seed_rule.load_bn_stats(OFFICIAL / "bn_stats.npz")
    assert all(v.dtype == np.float32 for v in stats.values())


def test_seed_rule_reproduces_the_arrays_mxnet_ran():
    """A sample of parameters (small ones, the heads, a calibrated BN): same bytes as the weights file the
    oracle saved with MXNet (sha256 recorded in run.json), in this NumPy version."""
    run = _run()
    shapes, aux = seed_rule.load_param_shapes(OFFICIAL / "param_shapes.json")
    stats = seed_rule.load_bn_stats(OFFICIAL / "bn_stats.npz")
    names = ["conv1_weight", "bn_conv1_gamma", "bn_conv1_beta", "bn5c_branch2c_gamma", "rpn_cls_score_weight",
             "rpn_cls_score_bias", "rpn_bbox_pred_weight", "fcis_bbox_weight", "fcis_bbox_bias",
             "conv_new_1_bias", "fcis_cls_seg_bias"]
    sub = {n: seed_rule.seeded_param(n, shapes[n], run["seed"]) for n in names}
    sub.update({n: stats[n] for n in ("bn_conv1_moving_mean", "bn_conv1_moving_var", "bn4b22_branch2c_moving_var")})
    layout = seed_rule.checkpoint_layout(sub, aux)
    for key, value in layout.items():
        assert run["weights_sha256"][key] == _sha(value), key
    assert len(run["weights_sha256"]) == len(shapes) + 2  # + fcis_bbox_{weight,bias}_test


@pytest.mark.slow
def test_seed_rule_reproduces_every_array_mxnet_ran():
    run = _run()
    shapes, aux = seed_rule.load_param_shapes(OFFICIAL / "param_shapes.json")
    params = seed_rule.full_params(shapes, run["seed"], OFFICIAL / "bn_stats.npz")
    layout = seed_rule.checkpoint_layout(params, aux)
    assert {k: _sha(v) for k, v in layout.items()} == run["weights_sha256"]


def test_seed_rule_is_per_name_and_order_free():
    a = seed_rule.seeded_param("res2a_branch2b_weight", (64, 64, 3, 3), 7)
    b = seed_rule.seeded_params({"zz_bias": (3,), "res2a_branch2b_weight": (64, 64, 3, 3)}, 7)
    assert a.dtype == np.float32 and np.array_equal(a, b["res2a_branch2b_weight"])
    assert not np.array_equal(a, seed_rule.seeded_param("res2a_branch2b_weight", (64, 64, 3, 3), 8))
    rs = np.random.RandomState([7, zlib.crc32(b"res2a_branch2b_weight")])
    np.testing.assert_array_equal(a, (rs.standard_normal((64, 64, 3, 3)) * np.sqrt(2.0 / 576)).astype(np.float32))
    with pytest.raises(ValueError, match="no rule"):
        seed_rule.seeded_param("mystery", (2,), 0)


def test_checkpoint_layout_folds_the_box_stds_like_do_checkpoint():
    w = np.arange(392 * 2, dtype=np.float32).reshape(392, 2, 1, 1)
    b = np.linspace(-1, 1, 392).astype(np.float32)
    out = seed_rule.checkpoint_layout({"fcis_bbox_weight": w, "fcis_bbox_bias": b, "m": np.ones(2, np.float32)},
                                      {"m"})
    assert set(out) == {"arg:fcis_bbox_weight", "arg:fcis_bbox_bias", "aux:m", "arg:fcis_bbox_weight_test",
                        "arg:fcis_bbox_bias_test"}
    stds = (0.2, 0.2, 0.5, 0.5, 0.2, 0.2, 0.5, 0.5)
    for k in range(392):  # channel k belongs to box coordinate k // 49
        s = np.float32(stds[k // 49])
        assert np.array_equal(out["arg:fcis_bbox_weight_test"][k], w[k] * s)
        assert out["arg:fcis_bbox_bias_test"][k] == b[k] * s + np.float32(0.0)


@pytest.mark.parametrize("pid", _photo_ids())
def test_photo_outputs_are_consistent_and_non_degenerate(pid):
    res = json.loads((OFFICIAL / f"{pid}.json").read_text())
    h, w = res["photo"]["height"], res["photo"]["width"]
    rh, rw, scale = res["im_info"]
    assert min(rh, rw) == 600 or max(rh, rw) == 1000
    assert abs(rh - round(h * scale)) <= 1 and abs(rw - round(w * scale)) <= 1
    assert all(res["internal_forward_equals_predictor"].values())

    z = np.load(OFFICIAL / f"{pid}.npz")
    assert z["proposals"].shape == (300, 5) and np.all(z["proposals"][:, 0] == 0)
    p = z["proposals"][:, 1:]
    assert np.all(p[:, 2] >= p[:, 0]) and np.all(p[:, 3] >= p[:, 1])
    assert np.all(p[:, [0, 2]] <= rw - 1) and np.all(p[:, [1, 3]] <= rh - 1) and np.all(p >= 0)
    rpn = z["rpn_scores"]
    assert rpn.shape == (300,) and np.all(np.isfinite(rpn)) and np.all(np.diff(rpn) <= 0)  # NMS keep order
    for key in ("cls_prob_pass1", "cls_prob_pass2"):
        prob = z[key].astype(np.float64)
        assert prob.shape == (300, 81)
        np.testing.assert_allclose(prob.sum(1), 1.0, atol=0.02)
    logits = z["cls_score_pass1"].astype(np.float64)
    soft = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(soft / soft.sum(1, keepdims=True), z["cls_prob_pass1"], atol=2e-3)
    assert z["rois_iter2"].shape == (300, 5) and z["bbox_pred_pass1"].shape == (300, 8)
    assert z["seg_fg_pass1_first50"].shape == (50, 21, 21)

    dets = res["detections"]
    assert 20 <= len(dets) <= 100
    scores = [d["score"] for d in dets]
    assert scores == sorted(scores, reverse=True)
    assert max(scores) > 0.3 and min(scores) >= 1e-3 and max(scores) < 1.0
    assert len(set(scores)) >= 0.9 * len(scores)
    assert len({d["class_index"] for d in dets}) >= 5
    rles = []
    for d in dets:
        assert 1 <= d["class_index"] <= 80
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= w - 1 and 0 <= y1 <= y2 <= h - 1
        assert d["mask_rle"]["size"] == [h, w]
        rles.append({"size": [h, w], "counts": d["mask_rle"]["counts"].encode("ascii")})
    areas = coco_mask.area(rles)
    assert [int(a) for a in areas] == [d["mask_area"] for d in dets]
    for d, (bx, by, bw, bh), a in zip(dets, coco_mask.toBbox(rles), areas):
        if a:  # the pasted mask lies in the (rounded) voted box
            x1, y1, x2, y2 = d["box"]
            assert bx >= np.floor(x1) - 1 and bx + bw - 1 <= np.ceil(x2) + 1, d
            assert by >= np.floor(y1) - 1 and by + bh - 1 <= np.ceil(y2) + 1, d
    first = coco_mask.decode(rles[0])
    assert first.shape == (h, w) and int(first.sum()) == dets[0]["mask_area"]
    assert sum(a > 0 for a in areas) >= 0.9 * len(areas)
    assert max(areas) < 0.9 * h * w


@pytest.mark.data
@pytest.mark.parametrize("pid", _photo_ids())
def test_photos_are_the_ones_the_oracle_ran(pid, shared_data):
    photo = json.loads((OFFICIAL / f"{pid}.json").read_text())["photo"]
    path = shared_data / photo["path"]
    assert path.is_file(), path
    data = path.read_bytes()
    assert len(data) == photo["bytes"]
    assert hashlib.sha256(data).hexdigest() == photo["sha256"]


def test_mxnet_reader_fixtures_match_their_manifest():
    manifest = json.loads((MXNET / "MANIFEST.json").read_text())
    files = {f["file"]: f for f in manifest["files"]}
    assert {"v2_named.params", "v3_np_shape.params", "legacy_ndarray.v0", "v2_named_truncated_values.params"} <= set(files)
    for name, entry in files.items():
        data = (MXNET / name).read_bytes()
        assert len(data) == entry["size"] and hashlib.sha256(data).hexdigest() == entry["sha256"], name
    full = (MXNET / "v2_named.params").read_bytes()
    for name, entry in files.items():
        if "truncated_from" in entry:
            assert full.startswith((MXNET / name).read_bytes()) and entry["cut_at_byte"] < len(full)
    assert np.frombuffer(full[:8], "<u8")[0] == 0x112
    assert full[24:28] == bytes.fromhex("c9fa93f9")  # V2 magic 0xF993fac9, little-endian
    assert (MXNET / "v3_np_shape.params").read_bytes()[24:28] == bytes.fromhex("cafa93f9")
    legacy = files["legacy_ndarray.v0"]
    assert legacy["origin"]["license"] == "Apache-2.0"
    assert [a["shape"] for a in legacy["arrays"]] == [[128]] * 6
    scalar = next(a for a in files["v3_np_shape.params"]["arrays"] if a["name"] == "arg:scalar")
    assert scalar["shape"] == []
