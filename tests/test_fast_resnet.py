"""fcis.models.fast_resnet: channels-last ResNet bodies with BatchNorm folded at inference give the
modules' own results (float64: to rounding), keep the state dict, and notice changed weights."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from fcis.models import fcis_resnet18, maskrcnn_resnet18_fpn
from fcis.models.backbone import ResNetC4C5, build_resnet
from fcis.models.fast_resnet import BatchNormFolder, ResNetLayerGetter


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so that folding has work to do."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
            n = m.running_mean.numel()
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def _reference(backbone: ResNetC4C5, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The modules' own forward, (N, C, H, W) throughout, nothing folded."""
    c4 = backbone.body(x)
    return c4, backbone.layer4(c4)


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("depth", [18, 50])
def test_folded_backbone_equals_the_modules_forward(depth: int, frozen: bool) -> None:
    torch.manual_seed(0)
    net = build_resnet(depth, None, pretrained=frozen, dilate_conv5=True, frozen_bn=True, trainable_layers=3)
    backbone = ResNetC4C5(net).double().eval()
    _randomise_bn(backbone)
    x = torch.rand(2, 3, 64, 80, dtype=torch.float64)
    with torch.no_grad():
        want = _reference(backbone, x)
        got = backbone(x)
    for g, w in zip(got, want):
        assert g.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
    assert len(backbone._bn_folder._cache) > 0             # the folded path ran


def test_training_and_autograd_take_the_modules_forward() -> None:
    torch.manual_seed(0)
    net = build_resnet(18, None, pretrained=False, dilate_conv5=True, frozen_bn=True, trainable_layers=5)
    backbone = ResNetC4C5(net).double().train()
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    c4, c5 = backbone(x)
    assert c4.is_contiguous(memory_format=torch.channels_last)   # channels-last in training too
    c5.sum().backward()
    assert net.conv1.weight.grad is not None and net.bn1.weight.grad is not None
    assert not backbone._bn_folder._cache                          # nothing folded in training
    backbone.eval()
    backbone(x)                                                    # eval with autograd on
    assert not backbone._bn_folder._cache


def test_folded_weights_follow_changed_parameters() -> None:
    torch.manual_seed(0)
    net = build_resnet(18, None, pretrained=True, dilate_conv5=True, frozen_bn=True, trainable_layers=3)
    backbone = ResNetC4C5(net).double().eval()
    x = torch.rand(1, 3, 48, 48, dtype=torch.float64)
    with torch.no_grad():
        backbone(x)
        net.layer4[1].bn2.running_var.mul_(4.0)                      # in place: the version changes
        torch.testing.assert_close(backbone(x)[1], _reference(backbone, x)[1], rtol=1e-10, atol=1e-10)
        state = {k: v * 1.5 if v.is_floating_point() else v for k, v in backbone.state_dict().items()}
        backbone.load_state_dict(state)
        torch.testing.assert_close(backbone(x)[1], _reference(backbone, x)[1], rtol=1e-10, atol=1e-10)
        net.conv1.weight = torch.nn.Parameter(net.conv1.weight * -1.0)  # a new tensor
        torch.testing.assert_close(backbone(x)[0], _reference(backbone, x)[0], rtol=1e-10, atol=1e-10)


def test_maskrcnn_body_is_replaced_in_place_of_torchvisions() -> None:
    torch.manual_seed(0)
    model = maskrcnn_resnet18_fpn(num_classes=3).double().eval()
    body = model.backbone.body
    assert isinstance(body, ResNetLayerGetter)
    _randomise_bn(body)
    x = torch.rand(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        got = body(x)
        want, h = {}, x
        for name, module in body.items():                             # IntermediateLayerGetter's loop
            h = module(h)
            if name in body.return_layers:
                want[body.return_layers[name]] = h
    assert list(got) == list(want) == ["0", "1", "2", "3"]
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-10)
    assert all(k.startswith(("layer", "conv1", "bn1")) for k in body.state_dict())


def test_copies_and_pickles_rebuild_their_cache() -> None:
    torch.manual_seed(0)
    model = fcis_resnet18(num_classes=2, min_size=64, max_size=96).eval()
    image = torch.rand(3, 64, 80)
    with torch.no_grad():
        first = model([image])[0]
        clone = copy.deepcopy(model)
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        for other in (clone, loaded):
            assert isinstance(other.backbone._bn_folder, BatchNormFolder)
            assert not other.backbone._bn_folder._cache
            out = other([image])[0]
            torch.testing.assert_close(out["boxes"], first["boxes"])
            torch.testing.assert_close(out["scores"], first["scores"])
