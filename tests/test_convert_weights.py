"""``fcis convert weights`` and the official parameter mapping (fcis/weights/official_layout.py): an
official-layout MXNet file written from a small seeded model converts back to exactly that model,
and the checkpoint it writes runs in ``fcis predict``, ``evaluate`` and ``serve`` (``fcis export`` of a
converted checkpoint: tests/test_official_variant.py, slow); ChainerCV's npz of the same arrays
converts to the same checkpoint (slow); bad files and parameters are errors that name them."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from official_helpers import small_official_model, write_official_params
from PIL import Image

from fcis.cli.main import main
from fcis.engine.checkpoint import load_checkpoint, load_model
from fcis.models.caffe_resnet import build_caffe_resnet
from fcis.models.fcis.official import OfficialFCIS
from fcis.weights.class_names import COCO_CATEGORY_IDS, COCO_CLASSES, VOC_CLASSES
from fcis.weights.convert_official import _class_table, convert_weights
from fcis.weights.errors import WeightsFileError
from fcis.weights.mxnet_params import write_mxnet_params
from fcis.weights.official_layout import (
    fcis_to_official,
    official_backbone_names,
    official_backbone_state_dict,
    official_to_fcis,
)

SMALL_INPUT = ["--set", "min_size=64", "--set", "max_size=96"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    model = small_official_model(2)
    params = write_official_params(model, root / "fcis_small-0000.params")
    (root / "names.txt").write_text("cat\ndog\n")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(root / "photo.png")
    out = root / "converted.pt"
    assert main(["convert", "weights", str(root / "fcis_small-0000.params"), str(out), "--classes",
                 str(root / "names.txt"), *SMALL_INPUT]) == 0
    return {"root": root, "model": model, "params": params, "ckpt": out}


def test_checkpoint_holds_the_same_model_classes_and_variant(converted, capsys):
    state = load_checkpoint(converted["ckpt"])
    assert state["model_name"] == "fcis_resnet50"
    cfg = state["model_config"]
    assert cfg["variant"] == "official" and cfg["num_classes"] == 2 and cfg["min_size"] == 64
    assert cfg["anchor_sizes"] == (64, 128, 256, 512) and cfg["rpn_min_size"] == 2.0
    assert state["dataset"] == {"class_names": ["cat", "dog"], "label_to_cat_id": {1: 1, 2: 2}}
    assert state["converted_from"]["format"] == "mxnet"
    reference = converted["model"].state_dict()
    assert set(state["model"]) == set(reference)
    for name, value in reference.items():
        torch.testing.assert_close(state["model"][name], value, rtol=0, atol=0, msg=name)
    model, meta = load_model(converted["ckpt"])
    assert isinstance(model, OfficialFCIS) and meta["class_names"] == ["cat", "dog"]


def test_mapping_permutes_inside_outside_and_keeps_the_foreground_boxes(converted):
    params = converted["params"]
    _, _, state = official_to_fcis(params)
    k2 = 49
    seg, ours = params["fcis_cls_seg_bias"], state["head.inside_outside.bias"].numpy()
    for c in range(3):                           # official (2c + 1) is the foreground: fcis's inside (2c)
        np.testing.assert_array_equal(ours[(2 * c) * k2:(2 * c + 1) * k2], seg[(2 * c + 1) * k2:(2 * c + 2) * k2])
        np.testing.assert_array_equal(ours[(2 * c + 1) * k2:(2 * c + 2) * k2], seg[(2 * c) * k2:(2 * c + 1) * k2])
    np.testing.assert_array_equal(state["head.boxes.weight"].numpy(), params["fcis_bbox_weight"][4 * k2:])
    np.testing.assert_array_equal(state["rpn.head.cls_logits.weight"].numpy(), params["rpn_cls_score_weight"])
    assert state["backbone.layer4.2.bn3.running_var"].numpy().tolist() == params["bn5c_branch2c_moving_var"].tolist()
    back = fcis_to_official(state, depth=50)
    assert set(back) | {"fcis_bbox_weight_test", "fcis_bbox_bias_test"} == set(params)
    for name, value in back.items():
        want = params[name][4 * k2:] if name.startswith("fcis_bbox") else params[name]
        got = value[4 * k2:] if name.startswith("fcis_bbox") else value
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_resnet101_names_are_the_official_symbols():
    names = official_backbone_names(101)
    assert names["res4b22_branch2c_weight"] == "layer3.22.conv3.weight"
    assert names["bn3b3_branch2a_moving_mean"] == "layer2.3.bn1.running_mean"
    assert names["res5a_branch1_weight"] == "layer4.0.downsample.0.weight"
    assert names["bn_conv1_gamma"] == "bn1.weight" and "res4b23_branch2a_weight" not in names
    assert names["res2c_branch2b_weight"] == "layer1.2.conv2.weight" and "res2b1_branch2a_weight" not in names
    assert len(official_backbone_names(50)) == 1 + 4 + 16 * 3 * 5 + 4 * 5     # conv1, bn_conv1, 16 blocks, 4 branch1


def test_predict_evaluate_and_serve_run_on_the_converted_checkpoint(converted, capsys):
    root, ckpt = converted["root"], converted["ckpt"]
    assert main(["predict", str(root / "photo.png"), "--weights", str(ckpt), "--output", str(root / "pred"),
                 "--score-threshold", "0.2", "--no-progress"]) == 0
    preds = json.loads((root / "pred" / "predictions.json").read_text())
    assert preds and all(p["category_id"] in (1, 2) and p["score"] >= 0.2 for p in preds)
    gt = {"images": [{"id": 1, "file_name": "photo.png", "width": 120, "height": 90}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 40], "area": 2000,
                           "iscrowd": 0, "segmentation": [[10, 10, 60, 10, 60, 50, 10, 50]]}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    (root / "gt.json").write_text(json.dumps(gt))
    assert main(["evaluate", "--weights", str(ckpt), "--data", str(root / "gt.json"), "--output",
                 str(root / "eval"), "--no-progress"]) == 0
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert 0 <= metrics["segm"]["AP"] <= 1 and metrics["num_detections"] > 0
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from fcis.serve import ModelBackend, ServeConfig, create_app

    backend = ModelBackend.from_checkpoint(ckpt, score_threshold=0.2)
    with TestClient(create_app(backend, ServeConfig())) as client:
        info = client.get("/v1/model").json()
        assert info["name"] == "fcis_resnet50" and [c["name"] for c in info["classes"]] == ["cat", "dog"]
        reply = client.post("/v1/predict", files={"image": ("photo.png", (root / "photo.png").read_bytes(),
                                                             "image/png")}).json()
    assert len(reply["instances"]) == len(preds)
    for got, want in zip(reply["instances"], preds):
        assert got["category_id"] == want["category_id"] and got["score"] == pytest.approx(want["score"])
        assert got["segmentation"] == want["segmentation"]


def test_backbone_only_file_becomes_a_weights_backbone_state_dict(converted, tmp_path, capsys):
    params = {k: v for k, v in converted["params"].items() if k in official_backbone_names(50)}
    params["fc1000_weight"] = np.random.default_rng(0).normal(0, 0.01, (1000, 2048)).astype(np.float32)
    params["fc1000_bias"] = np.zeros(1000, np.float32)
    write_mxnet_params(tmp_path / "resnet_v1_50-0000.params", params, aux={k for k in params if "_moving_" in k})
    assert main(["convert", "weights", str(tmp_path / "resnet_v1_50-0000.params"), str(tmp_path / "bb.pt")]) == 0
    assert "backbone-only" in capsys.readouterr().out
    state = torch.load(tmp_path / "bb.pt", weights_only=True)
    assert state["fc.weight"].shape == (1000, 2048) and state["layer3.5.conv3.weight"].shape == (1024, 256, 1, 1)
    net = build_caffe_resnet(50, tmp_path / "bb.pt")
    model = converted["model"]
    torch.testing.assert_close(net.layer2[0].conv1.weight, model.backbone.body.layer2[0].conv1.weight)
    torch.testing.assert_close(net.layer4[2].bn3.running_var, model.backbone.layer4[2].bn3.running_var)
    from fcis.models import fcis_resnet50

    fcis_resnet50(num_classes=3, weights_backbone=tmp_path / "bb.pt")       # the default variant loads it too
    assert official_backbone_state_dict(converted["params"])["conv1.weight"].shape == (64, 3, 7, 7)


def test_class_tables():
    names, ids, _ = _class_table(None, 80)
    assert names == list(COCO_CLASSES) and ids == {i + 1: c for i, c in enumerate(COCO_CATEGORY_IDS)}
    assert ids[1] == 1 and ids[80] == 90                                     # the original COCO ids
    names, ids, _ = _class_table("voc", 20)
    assert names == list(VOC_CLASSES) and ids[20] == 20
    with pytest.raises(WeightsFileError, match="--classes FILE"):
        _class_table(None, 3)
    with pytest.raises(WeightsFileError, match="20 class names, but the weights have 3"):
        _class_table("voc", 3)


def test_bad_files_and_parameters_are_errors_naming_them(converted, tmp_path, capsys):
    params = converted["params"]
    (tmp_path / "text.params").write_text("not weights")
    assert main(["convert", "weights", str(tmp_path / "text.params"), str(tmp_path / "o.pt")]) == 2
    assert "text.params" in capsys.readouterr().err
    data = (converted["root"] / "fcis_small-0000.params").read_bytes()
    (tmp_path / "cut.params").write_bytes(data[: len(data) // 3])
    assert main(["convert", "weights", str(tmp_path / "cut.params"), str(tmp_path / "o.pt")]) == 2
    assert "cut.params" in capsys.readouterr().err
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    assert main(["convert", "weights", str(tmp_path / "other.npz"), str(tmp_path / "o.pt")]) == 2
    assert "other.npz" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'res3d_branch2b_weight' is missing"):
        official_to_fcis({k: v for k, v in params.items() if k != "res3d_branch2b_weight"})
    with pytest.raises(ValueError, match="unknown parameter 'fcis_extra_weight'"):
        official_to_fcis({**params, "fcis_extra_weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"'bn2a_branch2b_gamma' has shape \(63,\), expected \(64,\)"):
        official_to_fcis({**params, "bn2a_branch2b_gamma": np.ones(63, np.float32)})
    with pytest.raises(ValueError, match="'fcis_cls_seg_weight' has 3 classes"):
        official_to_fcis(params, num_classes=5)
    with pytest.raises(ValueError, match="backbone only"):
        official_to_fcis({k: v for k, v in params.items() if k in official_backbone_names(50)})
    small = {**params, "rpn_cls_score_weight": params["rpn_cls_score_weight"][:20]}
    with pytest.raises(ValueError, match="10 anchors per position"):
        official_to_fcis(small)
    with pytest.raises(WeightsFileError, match="not fcis_resnet101"):
        convert_weights(converted["root"] / "fcis_small-0000.params", tmp_path / "o.pt", classes="voc",
                        model="fcis_resnet101")
    with pytest.raises(WeightsFileError, match="2 classes"):
        convert_weights(converted["root"] / "fcis_small-0000.params", tmp_path / "o.pt", classes="voc")
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.slow
def test_chainercv_npz_converts_to_the_same_checkpoint(tmp_path, capsys):
    from test_weights_chainercv import mxnet2npz

    model = small_official_model(3, depth=101, rpn_channels=64, head_channels=64)
    params = write_official_params(model, tmp_path / "fcis-0000.params")
    aux = {k for k in params if "_moving_" in k}
    np.savez(tmp_path / "chainercv.npz", **mxnet2npz({("aux:" if k in aux else "arg:") + k: v
                                                    for k, v in params.items()}))
    (tmp_path / "names.txt").write_text("a\nb\nc\n")
    for src in ("fcis-0000.params", "chainercv.npz"):
        assert main(["convert", "weights", str(tmp_path / src), str(tmp_path / f"{src}.pt"), "--classes",
                     str(tmp_path / "names.txt")]) == 0
    out = capsys.readouterr().out
    assert "from a mxnet file" in out and "from a chainercv-npz file" in out
    a, b = load_checkpoint(tmp_path / "fcis-0000.params.pt"), load_checkpoint(tmp_path / "chainercv.npz.pt")
    assert a["model_config"] == b["model_config"] and a["model_name"] == b["model_name"] == "fcis_resnet101"
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=0, atol=0, msg=name)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(a["model"][name], value, rtol=0, atol=0, msg=name)
