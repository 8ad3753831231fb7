"""One name per setting across the model families (fcis.models.model_config): ``--set nms_iou=...``
reaches every family's effective setting, and Mask R-CNN configs saved under torchvision's former
names (``box_nms_thresh``, ...) still load."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fcis.cli.main import _override_config, _parse_set, main
from fcis.engine.checkpoint import build_from_checkpoint
from fcis.engine.errors import CheckpointError
from fcis.engine.run_state import _check_model_overrides
from fcis.models import BUILDERS, FCISConfig, InstanceFCNConfig, MaskRCNNConfig
from fcis.models.model_config import ModelConfig, TwoStageConfig

FAMILIES = ("fcis_resnet18", "maskrcnn_resnet18_fpn", "instancefcn_resnet18")
SMALL = {  # few proposals and windows: quick at 64 px
    "fcis_resnet18": dict(anchor_sizes=(16, 32, 64), rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=30),
    "maskrcnn_resnet18_fpn": dict(anchor_sizes=(8, 16, 32, 64, 128), rpn_pre_nms_top_n_test=100,
                                  rpn_post_nms_top_n_test=30),
    "instancefcn_resnet18": dict(window_sizes=(24.0, 36.0, 54.0), pre_nms_top_n=50),
}

#: A Mask R-CNN ``model_config`` as checkpoints written before the shared vocabulary hold it.
OLD_MASKRCNN = {
    "num_classes": 3, "depth": 18, "trainable_layers": 3, "backbone_pretrained": False,
    "min_size": 64, "max_size": 80, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    "anchor_sizes": [8, 16, 32, 64, 128], "aspect_ratios": [0.5, 1.0, 2.0],
    "rpn_pre_nms_top_n_train": 200, "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_train": 50,
    "rpn_post_nms_top_n_test": 30, "rpn_nms_thresh": 0.6, "rpn_fg_iou_thresh": 0.75, "rpn_bg_iou_thresh": 0.25,
    "rpn_batch_size_per_image": 128, "rpn_positive_fraction": 0.5, "rpn_score_thresh": 0.0,
    "box_fg_iou_thresh": 0.55, "box_bg_iou_thresh": 0.45, "box_batch_size_per_image": 64,
    "box_positive_fraction": 0.3, "bbox_reg_weights": [10.0, 10.0, 5.0, 5.0], "box_score_thresh": 0.1,
    "box_nms_thresh": 0.35, "box_detections_per_img": 20, "mask_threshold": 0.5,
}


def test_every_family_speaks_the_shared_vocabulary():
    shared = {f.name for f in dataclasses.fields(ModelConfig)}
    two_stage = {f.name for f in dataclasses.fields(TwoStageConfig)}
    assert {"nms_iou", "score_thresh", "detections_per_img", "class_agnostic"} <= shared
    assert {"rpn_nms_iou", "rpn_pre_nms_top_n_test", "rpn_fg_iou", "roi_fg_iou", "anchor_sizes"} <= two_stage
    for cls in (FCISConfig, MaskRCNNConfig):
        assert issubclass(cls, TwoStageConfig) and two_stage <= {f.name for f in dataclasses.fields(cls)}
    assert issubclass(InstanceFCNConfig, ModelConfig) and not issubclass(InstanceFCNConfig, TwoStageConfig)
    maskrcnn = {f.name for f in dataclasses.fields(MaskRCNNConfig)}
    assert {"box_nms_thresh", "box_score_thresh", "box_detections_per_img", "rpn_nms_thresh"} <= set(
        MaskRCNNConfig.renamed) and not maskrcnn & set(MaskRCNNConfig.renamed)
    # class_agnostic is the family's: recorded, not settable to another value
    assert (FCISConfig().class_agnostic, MaskRCNNConfig().class_agnostic, InstanceFCNConfig().class_agnostic) == (
        False, False, True)
    for cls, wrong in ((FCISConfig, True), (MaskRCNNConfig, True), (InstanceFCNConfig, False)):
        with pytest.raises(ValueError, match="class_agnostic is fixed"):
            cls(class_agnostic=wrong)
    with pytest.raises(ValueError, match="class_agnostic is fixed"):
        BUILDERS["fcis_resnet18"](num_classes=2, **_parse_set(["class_agnostic=True"]))
    with pytest.raises(TypeError, match="rpn_nms_iou"):   # InstanceFCN has no RPN
        BUILDERS["instancefcn_resnet18"](num_classes=2, rpn_nms_iou=0.5)


@pytest.mark.parametrize("name", FAMILIES)
def test_set_reaches_the_effective_setting(name):
    torch.manual_seed(0)
    items = ["nms_iou=0.4", "score_thresh=0.2", "detections_per_img=3", "min_size=64", "max_size=64"]
    two_stage = not name.startswith("instancefcn")
    model = BUILDERS[name](num_classes=3, **SMALL[name],
                          **_parse_set(items + (["rpn_nms_iou=0.6"] if two_stage else []))).eval()
    cfg = model.config
    assert (cfg.nms_iou, cfg.score_thresh, cfg.detections_per_img) == (0.4, 0.2, 3)
    if two_stage:
        assert cfg.rpn_nms_iou == 0.6 and model.rpn.nms_thresh == 0.6
    if name.startswith("maskrcnn"):   # torchvision's own copies got the values
        heads = model.roi_heads
        assert (heads.nms_thresh, heads.score_thresh, heads.detections_per_img) == (0.4, 0.2, 3)
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])[0]
    assert 1 <= len(out["scores"]) <= 3 and bool((out["scores"] > 0.2).all())


def test_maskrcnn_config_saved_under_former_names_loads():
    cfg = MaskRCNNConfig.from_dict(OLD_MASKRCNN)
    assert (cfg.nms_iou, cfg.score_thresh, cfg.detections_per_img, cfg.rpn_nms_iou) == (0.35, 0.1, 20, 0.6)
    assert (cfg.rpn_fg_iou, cfg.rpn_bg_iou, cfg.roi_fg_iou, cfg.roi_bg_iou) == (0.75, 0.25, 0.55, 0.45)
    assert (cfg.roi_batch_size_per_image, cfg.roi_positive_fraction, cfg.box_coder_weights) == (
        64, 0.3, (10.0, 10.0, 5.0, 5.0))
    saved = cfg.to_dict()
    assert "box_nms_thresh" not in saved and saved["nms_iou"] == 0.35 and MaskRCNNConfig.from_dict(saved) == cfg
    assert cfg.box_nms_thresh == 0.35 and cfg.box_detections_per_img == 20   # former names read
    with pytest.raises(AttributeError):
        cfg.box_nms_thresh = 0.5   # type: ignore[misc]
    with pytest.raises(ValueError, match="'box_nms_thresh' is the former name of 'nms_iou'"):
        MaskRCNNConfig.from_dict({**OLD_MASKRCNN, "nms_iou": 0.35})

    # a checkpoint holding that config rebuilds with torchvision set from it
    torch.manual_seed(0)
    weights = BUILDERS["maskrcnn_resnet18_fpn"](**saved).state_dict()
    state = {"model_name": "maskrcnn_resnet18_fpn", "model_config": dict(OLD_MASKRCNN), "model": weights}
    model = build_from_checkpoint(BUILDERS, state, "old.pt")
    assert model.config == cfg
    assert (model.roi_heads.nms_thresh, model.roi_heads.score_thresh, model.roi_heads.detections_per_img) == (
        0.35, 0.1, 20)
    assert (model.rpn.nms_thresh, model.roi_heads.fg_bg_sampler.batch_size_per_image) == (0.6, 64)

    # resuming it: --set under either name is compared with the checkpoint's value
    _check_model_overrides(state, {"nms_iou": 0.35, "box_score_thresh": 0.1}, "old.pt")
    with pytest.raises(CheckpointError, match="nms_iou=0.5"):
        _check_model_overrides(state, {"nms_iou": 0.5}, "old.pt")


def test_former_names_work_with_set_in_train_and_evaluate():
    """``--set box_nms_thresh=0.4`` is an alias of ``nms_iou``: for a new model and, in place, for
    a loaded one (``fcis evaluate --set``), where torchvision's RoI heads follow the config."""
    torch.manual_seed(0)
    model = BUILDERS["maskrcnn_resnet18_fpn"](num_classes=3, **SMALL["maskrcnn_resnet18_fpn"], min_size=64,
                                              max_size=64, **_parse_set(["box_nms_thresh=0.4"])).eval()
    assert model.config.nms_iou == 0.4 and model.roi_heads.nms_thresh == 0.4
    _override_config(model, _parse_set(["box_nms_thresh=0.45", "detections_per_img=2", "score_thresh=0.0"]))
    assert (model.config.nms_iou, model.config.detections_per_img) == (0.45, 2)
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])[0]
    assert model.roi_heads.nms_thresh == 0.45 and len(out["scores"]) == 2


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab") / "shapes"
    assert main(["make-shapes", str(out), "--num-images", "2", "--seed", "1", "--image-size", "64", "64",
                 "--max-objects", "2", "--val-fraction", "0"]) == 0
    return out / "train.json"


@pytest.mark.parametrize("name", FAMILIES)
def test_cli_train_set_nms_iou_for_every_family(tmp_path, tiny_shapes, name):
    out = tmp_path / "run"
    assert main(["train", "--model", name, "--train", str(tiny_shapes), "--output", str(out), "--iterations", "1",
                 "--batch-size", "1", "--min-size", "64", "--max-size", "64", "--device", "cpu", "--workers", "0",
                 "--no-progress", "--set", "nms_iou=0.4"]) == 0
    assert json.loads((out / "config.json").read_text())["model_config"]["nms_iou"] == 0.4
