"""The score-map stride a run from random weights takes (fcis/engine/head_stride.py): stride 8 when
one image's maps fit the budget, whatever the objects' sizes; the paper's 16 past the budget, with
ImageNet weights, or as given."""

from __future__ import annotations

import json

import pytest
import torch

from fcis.engine import TrainConfig
from fcis.engine.head_stride import MAP_BUDGET_BYTES, choose_head_stride, score_map_bytes
from fcis.models import FCISConfig


def _shapes(tmp_path_factory, name: str, min_object_size: int, max_object_fraction: float):
    from fcis.data import make_shapes

    return make_shapes(tmp_path_factory.mktemp(name), num_images=4, seed=4, image_size=(64, 80), max_objects=3,
                       min_object_size=min_object_size, max_object_fraction=max_object_fraction, val_fraction=0.0)


@pytest.fixture(scope="module")
def small_objects(tmp_path_factory):
    return _shapes(tmp_path_factory, "small", 8, 0.2)         # boxes 8-16 px at 64 x 80


@pytest.fixture(scope="module")
def large_objects(tmp_path_factory):
    return _shapes(tmp_path_factory, "large", 40, 0.9)        # boxes 40 px and more


def test_score_map_bytes_counts_every_channel_on_the_grid():
    # k = 7, C = 1: 2·49·2 + 4·49 = 392 channels on ceil(600/8) x ceil(1000/8) = 75 x 125 cells
    assert score_map_bytes(1, 7, 600, 1000, 8) == 4 * 392 * 75 * 125
    assert score_map_bytes(1, 7, 600, 1000, 16) == 4 * 392 * 38 * 63
    assert score_map_bytes(1, 7, 600, 1000, 8, separate=True) == 4 * (392 + 98) * 75 * 125
    assert score_map_bytes(80, 7, 600, 1000, 8) > MAP_BUDGET_BYTES > score_map_bytes(33, 7, 600, 1000, 8)


@pytest.mark.parametrize(("classes", "pretrained", "given", "want", "source", "words"), [
    (2, False, False, 8, "data", "within"),          # TreePheno-like, PennFudanPed-like: a few classes
    (33, False, False, 8, "data", "within"),         # the budget's edge at 600 x 1000
    (80, False, False, 16, "model", "budget"),       # COCO's 80 classes: over the budget
    (1, True, False, 16, "model", "ImageNet"),       # ImageNet weights: the paper's head
    (1, False, True, 16, "given", "given"),          # --set head_stride=16 wins
])
def test_choice(classes, pretrained, given, want, source, words):
    choice = choose_head_stride(FCISConfig(num_classes=classes), pretrained=pretrained, given=given)
    assert (choice.stride, choice.source) == (want, source)
    assert choice.describe().startswith(f"head stride {want} (") and words in choice.reason
    assert choice.map_bytes == score_map_bytes(classes, 7, 600, 1000, want)


def test_budget_follows_the_input_size():
    # 18 classes fit at 1000 x 1000 no longer than 33 do at 600 x 1000: the maps' bytes decide
    assert choose_head_stride(FCISConfig(num_classes=18, min_size=1000, max_size=1000), pretrained=False,
                              given=False).stride == 8
    assert choose_head_stride(FCISConfig(num_classes=33, min_size=1000, max_size=1000), pretrained=False,
                              given=False).stride == 16


def test_undilated_conv5_keeps_its_stride():
    choice = choose_head_stride(FCISConfig(num_classes=1, dilate_conv5=False), pretrained=False, given=False)
    assert (choice.stride, choice.source) == (16, "model") and "dilated" in choice.reason   # the field, kept


def test_runs_choose_stride_8_for_small_and_large_objects_and_record_it(small_objects, large_objects, tmp_path):
    from fcis.engine import train

    cfg = TrainConfig(iterations=1, workers=0, min_size=64, max_size=80, device="cpu")
    for name, data in (("small", small_objects), ("large", large_objects)):
        out = tmp_path / name
        train("fcis_resnet18", data["train"], None, out, cfg, progress=False)
        run = json.loads((out / "config.json").read_text())
        assert run["head_stride"]["stride"] == run["model_config"]["head_stride"] == 8
        assert run["head_stride"]["source"] == "data"
        assert torch.load(out / "last.pt", weights_only=False)["head_stride"] == run["head_stride"]


def test_given_stride_and_other_models_are_left_alone(small_objects, tmp_path):
    from fcis.engine import train

    cfg = TrainConfig(iterations=1, workers=0, min_size=64, max_size=80, device="cpu")
    train("fcis_resnet18", small_objects["train"], None, tmp_path / "fcis", cfg, progress=False,
          model_overrides={"head_stride": 16})
    run = json.loads((tmp_path / "fcis" / "config.json").read_text())
    assert run["model_config"]["head_stride"] == 16 and run["head_stride"]["source"] == "given"
    train("instancefcn_resnet18", small_objects["train"], None, tmp_path / "ifcn", cfg, progress=False)
    run = json.loads((tmp_path / "ifcn" / "config.json").read_text())
    assert run["head_stride"] is None and "head_stride" not in run["model_config"]
