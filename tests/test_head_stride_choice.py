"""The score-map stride a run from random weights takes (fcis/engine/head_stride.py): stride 8 when
one image's maps fit the budget, the paper's 16 otherwise, with ImageNet weights, or as given."""

from __future__ import annotations

import json

import pytest
import torch

from fcis.engine import TrainConfig
from fcis.engine.head_stride import MAP_BUDGET_BYTES, choose_head_stride, score_map_bytes
from fcis.models import FCISConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from fcis.data import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"), num_images=4, seed=4, image_size=(64, 80),
                       max_objects=3, min_object_size=16, val_fraction=0.0)


def test_score_map_bytes_counts_every_channel_on_the_grid():
    # k = 7, C = 1: 2·49·2 + 4·49 = 392 channels on ceil(600/8) x ceil(1000/8) = 75 x 125 cells
    assert score_map_bytes(1, 7, 600, 1000, 8) == 4 * 392 * 75 * 125
    assert score_map_bytes(1, 7, 600, 1000, 16) == 4 * 392 * 38 * 63
    assert score_map_bytes(1, 7, 600, 1000, 8, separate=True) == 4 * (392 + 98) * 75 * 125
    assert score_map_bytes(80, 7, 600, 1000, 8) > MAP_BUDGET_BYTES > score_map_bytes(33, 7, 600, 1000, 8)


@pytest.mark.parametrize(("classes", "pretrained", "given", "want", "source"), [
    (1, False, False, 8, "data"),        # PennFudanPed-like: a few classes from random weights
    (33, False, False, 8, "data"),
    (80, False, False, 16, "model"),     # COCO: over the budget
    (1, True, False, 16, "model"),       # ImageNet weights: the paper's head
    (1, False, True, 16, "given"),       # --set head_stride=16 wins
])
def test_choice(classes, pretrained, given, want, source):
    choice = choose_head_stride(FCISConfig(num_classes=classes), pretrained=pretrained, given=given)
    assert (choice.stride, choice.source) == (want, source)
    assert f"head stride {want}" in choice.describe() and choice.reason
    if source == "model" and not pretrained:
        assert "MiB" in choice.reason and "budget" in choice.reason


def test_undilated_conv5_keeps_its_stride():
    choice = choose_head_stride(FCISConfig(num_classes=1, dilate_conv5=False), pretrained=False, given=False)
    assert choice.stride == 16 and "dilated" in choice.reason


def test_given_stride_and_other_models_are_left_alone(tiny, tmp_path):
    from fcis.engine import train

    cfg = TrainConfig(iterations=1, workers=0, min_size=64, max_size=80, device="cpu")
    train("fcis_resnet18", tiny["train"], None, tmp_path / "fcis", cfg, progress=False,
          model_overrides={"head_stride": 16})
    run = json.loads((tmp_path / "fcis" / "config.json").read_text())
    assert run["model_config"]["head_stride"] == 16 and run["head_stride"]["source"] == "given"
    train("instancefcn_resnet18", tiny["train"], None, tmp_path / "ifcn", cfg, progress=False)
    run = json.loads((tmp_path / "ifcn" / "config.json").read_text())
    assert run["head_stride"] is None and "head_stride" not in run["model_config"]
    assert torch.load(tmp_path / "ifcn" / "last.pt", weights_only=False)["head_stride"] is None
