"""The ``norm`` config field (fcis/models/norm.py): GroupNorm in every family's ResNet and heads
for training from random weights, BatchNorm as before (and for every checkpoint written before the
field); the fast ResNet path with a GroupNorm body; the recipe's choice."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_onnx_candidates_match, box_target
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from fcis.engine.checkpoint import build_from_checkpoint
from fcis.models import BUILDERS, FCISConfig, InstanceFCNConfig, MaskRCNNConfig
from fcis.models.backbone import ResNetC4C5, build_resnet
from fcis.models.norm import check_norm, group_count, group_norm

FAMILIES = ("fcis_resnet18", "instancefcn_resnet18", "maskrcnn_resnet18_fpn")
SMALL = {
    "fcis_resnet18": dict(min_size=64, max_size=80, anchor_sizes=(16, 32, 64), rpn_pre_nms_top_n_test=200,
                          rpn_post_nms_top_n_test=30, rpn_post_nms_top_n_train=50, ohem_rois=32),
    "instancefcn_resnet18": dict(min_size=64, max_size=80, window_sizes=(24.0, 36.0, 54.0), pre_nms_top_n=50,
                                 detections_per_img=20),
    "maskrcnn_resnet18_fpn": dict(min_size=64, max_size=80, anchor_sizes=(8, 16, 32, 64, 128),
                                  rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=30, score_thresh=0.0,
                                  rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50,
                                  roi_batch_size_per_image=32),
}


def _norm_layers(module: nn.Module) -> tuple[int, int]:
    """(GroupNorm layers, BatchNorm layers of any kind) in ``module``."""
    mods = list(module.modules())
    return (sum(isinstance(m, nn.GroupNorm) for m in mods),
            sum(isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)) for m in mods))


def test_group_count_divides_the_channels():
    assert [group_count(c) for c in (32, 64, 256, 1024, 48, 40, 7, 1)] == [32, 32, 32, 32, 24, 20, 7, 1]
    for c in range(1, 130):
        g = group_count(c)
        assert c % g == 0 and g <= 32 and all(c % h for h in range(g + 1, min(32, c) + 1))
    layer = group_norm(96)
    assert (layer.num_groups, layer.num_channels) == (32, 96)
    assert torch.equal(layer.weight, torch.ones(96)) and torch.equal(layer.bias, torch.zeros(96))
    with pytest.raises(ValueError, match="at least one channel"):
        group_count(0)


def test_norm_is_checked_and_gn_refuses_imagenet_weights():
    check_norm("bn", True, "X")
    check_norm("gn", False, "X")
    with pytest.raises(ValueError, match=r"X: norm must be one of 'bn', 'gn', got 'ln'"):
        check_norm("ln", False, "X")
    for cls in (FCISConfig, InstanceFCNConfig, MaskRCNNConfig):
        assert cls().norm == "bn"
        with pytest.raises(ValueError, match=f"{cls.__name__}: norm='gn' .* random weights.*norm='bn'"):
            cls(norm="gn", backbone_pretrained=True)
    with pytest.raises(ValueError, match="norm='gn'"):   # builders record ImageNet weights, then refuse
        BUILDERS["fcis_resnet18"](num_classes=2, norm="gn", backbone_pretrained=True)
    with pytest.raises(ValueError, match="norm='gn'"):
        build_resnet(18, None, pretrained=True, dilate_conv5=True, frozen_bn=True, trainable_layers=3, norm="gn")


def test_checkpoint_config_without_the_field_loads_as_batchnorm():
    for cls in (FCISConfig, InstanceFCNConfig, MaskRCNNConfig):
        old = cls(num_classes=2).to_dict()
        del old["norm"]
        assert cls.from_dict(old).norm == "bn"
    torch.manual_seed(0)
    model = BUILDERS["fcis_resnet18"](num_classes=2, **SMALL["fcis_resnet18"])
    config = model.config.to_dict()
    del config["norm"]                                     # as written before the field existed
    state = {"model_name": "fcis_resnet18", "model_config": config, "model": model.state_dict()}
    rebuilt = build_from_checkpoint(BUILDERS, state, "old.pt")
    assert rebuilt.config.norm == "bn" and _norm_layers(rebuilt) == (0, 20)


@pytest.mark.parametrize("name", FAMILIES)
def test_gn_model_builds_trains_predicts_and_round_trips(name):
    torch.manual_seed(0)
    model = BUILDERS[name](num_classes=3, norm="gn", **SMALL[name])
    gn, bn = _norm_layers(model)
    # ResNet-18: 20 norms; heads: FCIS 1 (after the reduce conv), InstanceFCN 1, Mask R-CNN FPN 8 +
    # box head 4 + mask head 4.
    assert bn == 0 and gn == {"fcis_resnet18": 21, "instancefcn_resnet18": 21, "maskrcnn_resnet18_fpn": 36}[name]
    if name == "fcis_resnet18":
        assert model.head.reduce.bias is None and isinstance(model.head.reduce_norm, nn.GroupNorm)
        # He-normal before the GroupNorm (fan out 1024: std 0.044), not the plain head's N(0, 0.01)
        assert float(model.head.reduce.weight.detach().std()) == pytest.approx((2 / 1024) ** 0.5, rel=0.05)
        assert float(model.head.inside_outside.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
        assert "head.reduce_norm.weight" in model.lr_multipliers()
        assert _norm_layers(model.rpn) == (0, 0)                         # the RPN stays plain
    elif name == "instancefcn_resnet18":
        assert model.instance.reduce.bias is None and _norm_layers(model.objectness) == (0, 0)
        assert float(model.instance.reduce.weight.detach().std()) == pytest.approx((2 / 512) ** 0.5, rel=0.05)
    else:
        assert len(model.roi_heads.box_head) == 7                        # 4 conv, flatten, fc, ReLU
        assert _norm_layers(model.rpn) == (0, 0)
    assert all(p.requires_grad for p in model.parameters())             # random weights: all train

    model.train()
    target = box_target(64, 80, [[8, 10, 40, 50], [44, 20, 76, 60]], [1, 3])
    losses = model([torch.rand(3, 64, 80), torch.rand(3, 64, 80)], [target, target])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert all(m.weight.grad is not None and torch.isfinite(m.weight.grad).all() for m in norms)
    assert any(float(m.weight.grad.abs().sum()) > 0 for m in norms)

    model.eval()
    images = [torch.rand(3, 64, 80), torch.rand(3, 56, 72)]
    with torch.no_grad():
        outs = model(images)
    for out, image in zip(outs, images):
        n = len(out["scores"])
        assert n > 0 and out["masks"].shape == (n, 1, *image.shape[-2:]) and out["masks"].dtype == torch.float32
        assert out["boxes"].shape == (n, 4) and out["labels"].dtype == torch.int64
        assert bool((out["scores"][:-1] >= out["scores"][1:]).all())
        assert 0.0 <= float(out["masks"].min()) and float(out["masks"].max()) <= 1.0

    state = {"model_name": name, "model_config": model.config.to_dict(), "model": model.state_dict()}
    rebuilt = build_from_checkpoint(BUILDERS, state, "gn.pt").eval()
    assert rebuilt.config.norm == "gn" and rebuilt.config == model.config
    with torch.no_grad():
        again = rebuilt(images)
    for a, b in zip(outs, again):
        torch.testing.assert_close(a["scores"], b["scores"])
        torch.testing.assert_close(a["masks"], b["masks"])
    with pytest.raises(Exception, match="do not fit"):     # a GN checkpoint is not a BN model's
        build_from_checkpoint(BUILDERS, {**state, "model_config": {**state["model_config"], "norm": "bn"}}, "x.pt")


def _randomise_gn(module: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.GroupNorm):
            m.weight.data.copy_(torch.rand(m.num_channels, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_channels, generator=gen) * 0.1)


@pytest.mark.parametrize("depth", [18, 50])
def test_fast_resnet_with_a_groupnorm_body_equals_the_modules_forward(depth):
    """Channels-last on the CPU, nothing folded (GroupNorm has no running statistics): the same
    values as the modules' own (N, C, H, W) forward, in float64, in eval and training mode."""
    torch.manual_seed(0)
    net = build_resnet(depth, None, pretrained=False, dilate_conv5=True, frozen_bn=True, trainable_layers=5,
                       norm="gn")
    backbone = ResNetC4C5(net).double()
    _randomise_gn(backbone)
    assert _norm_layers(backbone)[1] == 0
    x = torch.rand(2, 3, 64, 80, dtype=torch.float64)
    for training in (False, True):
        backbone.train(training)
        with torch.no_grad():
            c4_want = backbone.body(x)
            want = (c4_want, backbone.layer4(c4_want))
            got = backbone(x)
        for g, w in zip(got, want):
            assert g.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
    assert not backbone._bn_folder._cache                       # nothing was folded


def test_maskrcnn_groupnorm_body_and_fpn_equal_the_modules_forward():
    torch.manual_seed(0)
    model = BUILDERS["maskrcnn_resnet18_fpn"](num_classes=3, norm="gn").double().eval()
    _randomise_gn(model.backbone)
    x = torch.rand(1, 3, 64, 96, dtype=torch.float64)
    body = model.backbone.body
    with torch.no_grad():
        got = model.backbone(x)
        want, h = {}, x
        for name, module in body.items():
            h = module(h)
            if name in body.return_layers:
                want[body.return_layers[name]] = h
        want = model.backbone.fpn(want)
    assert list(got) == list(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_gn_fcis_exports_to_onnx_with_standard_ops_and_the_same_candidates(tmp_path):
    """GroupNorm exports (as standard ops: reshape + InstanceNormalization + affine) and the graph's
    candidates equal PyTorch's (slow: the dynamo export takes ~30 s of CPU)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    from fcis.export.onnx_export import export_onnx, onnx_op_domains

    torch.manual_seed(0)
    model = BUILDERS["fcis_resnet18"](num_classes=3, norm="gn", **{**SMALL["fcis_resnet18"], "head_channels": 64,
                                                                   "rpn_channels": 64}).eval()
    _randomise_gn(model)
    path = export_onnx(model, tmp_path / "gn.onnx")
    assert set(onnx_op_domains(onnx.load(str(path)))) == {"ai.onnx"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_onnx_candidates_match(session, model, torch.rand(3, 64, 80))


def test_groupnorm_models_need_no_synchronised_batchnorm():
    from fcis.engine.distributed import has_trainable_batchnorm

    for name in FAMILIES:
        assert not has_trainable_batchnorm(BUILDERS[name](num_classes=2, norm="gn"))
        assert has_trainable_batchnorm(BUILDERS[name](num_classes=2))


def test_random_init_recipe_chooses_the_norm_and_a_given_one_wins():
    from fcis.engine.config import TrainConfig
    from fcis.engine.recipe import SCRATCH_NORM, resolve_recipe

    assert SCRATCH_NORM in ("bn", "gn")
    _, rec = resolve_recipe(TrainConfig(iterations=100, batch_size=2), pretrained=False, num_train_images=10)
    assert rec.model["norm"] == SCRATCH_NORM and "norm=" in rec.reason
    _, rec = resolve_recipe(TrainConfig(iterations=100, batch_size=2), pretrained=True, num_train_images=10)
    assert "norm" not in rec.model                          # ImageNet weights: frozen BatchNorm
    other = "bn" if SCRATCH_NORM == "gn" else "gn"
    _, rec = resolve_recipe(TrainConfig(iterations=100, batch_size=2), pretrained=False, num_train_images=10,
                            given_model={"norm": other})
    assert "norm" not in rec.model and any(f"norm={other!r} given" in n for n in rec.notes)
    _, rec = resolve_recipe(TrainConfig(iterations=100, batch_size=2), pretrained=False, num_train_images=10,
                            model_fields={"num_classes", "cls_loss_balance"})
    assert "norm" not in rec.model
