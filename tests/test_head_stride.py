"""FCIS's head at stride 8 (``head_stride=8``, fcis/models/fcis/fine_features.py): conv5 upsampled
2× plus a 1×1 projection of conv3; the config's checks, the merge's start, conv3 as the modules
compute it, training, inference, checkpoints and ONNX export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_onnx_candidates_match, box_target

from fcis.engine.checkpoint import build_from_checkpoint
from fcis.models import BUILDERS, FCISConfig
from fcis.models.backbone import ResNetC4C5, build_resnet
from fcis.models.fcis.fine_features import FineFeatures, head_input

SMALL = dict(min_size=64, max_size=80, anchor_sizes=(16, 32, 64), rpn_pre_nms_top_n_test=200,
             rpn_post_nms_top_n_test=30, rpn_post_nms_top_n_train=50, ohem_rois=32, head_channels=64,
             rpn_channels=64)


def test_config_accepts_8_and_16_only_and_8_needs_dilated_conv5():
    assert FCISConfig().head_stride == 16
    assert FCISConfig(head_stride=8).head_stride == 8
    with pytest.raises(ValueError, match="head_stride must be 8 or 16, got 4"):
        FCISConfig(head_stride=4)
    with pytest.raises(ValueError, match="head_stride=8 needs dilate_conv5"):
        FCISConfig(head_stride=8, dilate_conv5=False)
    with pytest.raises(ValueError, match="head_stride"):   # the official arithmetic has one stride
        FCISConfig(head_stride=8, variant="official", depth=50, assemble_mode="average", image_std=(1.0, 1.0, 1.0))


def test_merge_starts_as_upsampled_conv5_and_learns_conv3():
    torch.manual_seed(0)
    fine = FineFeatures(8, 16)
    c3, c5 = torch.rand(2, 8, 10, 13), torch.rand(2, 16, 5, 7)
    out = fine(c3, c5)
    assert out.shape == (2, 16, 10, 13)
    torch.testing.assert_close(out, F.interpolate(c5, size=(10, 13), mode="bilinear", align_corners=False))
    out.square().sum().backward()
    assert float(fine.lateral.weight.grad.abs().sum()) > 0    # zero weights, but not a dead end


@pytest.mark.parametrize("training", [False, True])
def test_with_conv3_equals_the_modules_forward(training):
    """conv3 is layer2's output, also where inference folds BatchNorm (float64)."""
    torch.manual_seed(0)
    net = build_resnet(18, None, pretrained=False, dilate_conv5=True, frozen_bn=True, trainable_layers=5)
    backbone = ResNetC4C5(net).double().train(training)
    for m in backbone.modules():          # non-trivial running statistics for the folded path
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(2, 3, 64, 80, dtype=torch.float64)
    with torch.no_grad():
        h = x
        for name, module in backbone.body.named_children():
            h = module(h)
            if name == "layer2":
                c3_want = h
        c4_want = h
        want = (c3_want, c4_want, backbone.layer4(c4_want))
        got = backbone.with_conv3(x)
    assert got[0].shape == (2, backbone.c3_channels, 8, 10)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_stride_8_model_trains_predicts_and_round_trips():
    torch.manual_seed(0)
    model = BUILDERS["fcis_resnet18"](num_classes=3, head_stride=8, **SMALL)
    coarse = BUILDERS["fcis_resnet18"](num_classes=3, **SMALL)
    assert model.feature_stride == 8 and model.head.spatial_scale == 1 / 8 and coarse.fine is None
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        _, fine_maps = head_input(model.backbone, model.fine, x)
        _, coarse_maps = head_input(coarse.backbone, coarse.fine, x)
    assert fine_maps.shape[-2:] == (8, 12) and coarse_maps.shape[-2:] == (4, 6)

    model.train()
    target = box_target(64, 80, [[8, 10, 40, 50], [44, 20, 76, 60]], [1, 3])
    losses = model([torch.rand(3, 64, 80), torch.rand(3, 64, 80)], [target, target])
    assert set(losses) >= {"loss_classifier", "loss_mask", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert float(model.fine.lateral.weight.grad.abs().sum()) > 0

    model.eval()
    images = [torch.rand(3, 64, 80), torch.rand(3, 56, 72)]
    with torch.no_grad():
        outs = model(images)
        windows = [list(w) for w in model.detect_windows(images)]
    for out, image, win in zip(outs, images, windows):
        n = len(out["scores"])
        assert n > 0 and out["masks"].shape == (n, 1, *image.shape[-2:])
        assert 0.0 <= float(out["masks"].min()) and float(out["masks"].max()) <= 1.0
        assert len(win) == n

    state = {"model_name": "fcis_resnet18", "model_config": model.config.to_dict(), "model": model.state_dict()}
    rebuilt = build_from_checkpoint(BUILDERS, state, "fine.pt").eval()
    assert rebuilt.config.head_stride == 8
    with torch.no_grad():
        again = rebuilt(images)
    for a, b in zip(outs, again):
        torch.testing.assert_close(a["masks"], b["masks"])
    with pytest.raises(Exception, match="do not fit"):   # the lateral conv is not a stride-16 model's
        build_from_checkpoint(BUILDERS, {**state, "model_config": {**state["model_config"], "head_stride": 16}},
                              "x.pt")


@pytest.mark.slow
def test_stride_8_exports_to_onnx_with_the_same_candidates(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from fcis.export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = BUILDERS["fcis_resnet18"](num_classes=3, head_stride=8, **SMALL).eval()
    torch.nn.init.normal_(model.fine.lateral.weight, std=0.05)     # not the zero start: conv3 counts
    path = export_onnx(model, tmp_path / "fine.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_onnx_candidates_match(session, model, torch.rand(3, 64, 80))


def test_cost_benchmark_runs_at_a_toy_size():
    from benchmarks.head_stride import measure

    r = measure(64, 96, 2, rounds=1)
    assert r["map_mib"][8] == pytest.approx(4 * r["map_mib"][16], rel=0.2)
    for part in ("train_step", "inference"):
        assert r[part]["stride16_s"] > 0 and r[part]["stride8_s"] > 0 and r[part]["ratio_median"] > 0
