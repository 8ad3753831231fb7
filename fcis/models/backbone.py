"""ResNet backbones: conv4 and (dilated) conv5 features, with three ways to get weights."""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Callable, TypeAlias

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models._api import WeightsEnum
from torchvision.ops.misc import FrozenBatchNorm2d

from .fast_resnet import BatchNormFolder, cpu_channels_last, run_resnet_modules
from .norm import check_norm, group_norm

__all__ = ["ResNetC4C5", "build_resnet", "load_backbone_weights", "BackboneWeights"]

BackboneWeights: TypeAlias = WeightsEnum | str | os.PathLike | None

_RESNETS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50,
            101: resnet.resnet101, 152: resnet.resnet152}


def load_backbone_weights(model: nn.Module, weights: BackboneWeights) -> bool:
    """Load ImageNet weights into a torchvision ResNet.

    ``weights`` is a torchvision weights enum (downloaded, or read from torch hub's cache), a path
    to a state-dict file (a plain state dict, or a checkpoint holding one under ``state_dict`` or
    ``model``), or None (keep the random initialisation). Returns whether weights were loaded.
    """
    if weights is None:
        return False
    if isinstance(weights, WeightsEnum):
        state = weights.get_state_dict(progress=True, check_hash=True)
    else:
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"backbone weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing:
        raise ValueError(f"backbone weights {weights!s} lack {len(missing)} keys, e.g. {missing[:3]}")
    return True


def build_resnet(depth: int, weights: BackboneWeights, *, pretrained: bool, dilate_conv5: bool,
                 frozen_bn: bool, trainable_layers: int, dilate_conv4: bool = False,
                 norm: str = "bn") -> resnet.ResNet:
    """A torchvision ResNet with optional dilated conv5, frozen BN and frozen early stages.

    ``dilate_conv4`` (default off; needs ``dilate_conv5``) dilates conv4 too, so that conv4 and
    conv5 both run at stride 8 (conv5 with dilation 4), as InstanceFCN's stride-8 network.

    ``pretrained`` says whether the network is (or, when rebuilt from a checkpoint, was)
    initialised from ImageNet. When it is not, the BatchNorm layers stay ordinary (trainable,
    batch statistics) and every stage trains, as torchvision's detection builders do for a random
    backbone. ``norm="gn"`` puts GroupNorm (:func:`fcis.models.norm.group_norm`) where BatchNorm
    would be (random weights only; ``frozen_bn`` is then ignored)."""
    if depth not in _RESNETS:
        raise ValueError(f"ResNet depth must be one of {sorted(_RESNETS)}, got {depth}")
    pretrained = pretrained or weights is not None
    check_norm(norm, pretrained, f"ResNet-{depth}")
    norm_layer: Callable[[int], nn.Module]
    if norm == "gn":
        norm_layer = group_norm
    else:
        norm_layer = FrozenBatchNorm2d if (pretrained and frozen_bn) else nn.BatchNorm2d
    basic = depth < 50
    if dilate_conv4 and not dilate_conv5:
        raise ValueError("dilate_conv4 needs dilate_conv5 (conv5 cannot be strided after a dilated conv4)")
    model = _RESNETS[depth](weights=None, norm_layer=norm_layer,
                            replace_stride_with_dilation=[False, dilate_conv4 and not basic, dilate_conv5 and not basic])
    if dilate_conv4 and basic:
        _dilate_basic_layer4(model.layer3)
    if dilate_conv5 and basic:
        _dilate_basic_layer4(model.layer4, 4 if dilate_conv4 else 2, previous=2 if dilate_conv4 else 1)
    if not basic:  # torchvision leaves the first block's 3×3 at the previous dilation
        if dilate_conv4:
            _dilate_first_3x3(model.layer3[0].conv2, 2)
        if dilate_conv5:
            _dilate_first_3x3(model.layer4[0].conv2, 4 if dilate_conv4 else 2)
    load_backbone_weights(model, weights)
    if not pretrained:
        trainable_layers = 5
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trainable.append("bn1")
    for name, param in model.named_parameters():
        if all(not name.startswith(layer) for layer in trainable):
            param.requires_grad_(False)
    return model


def _dilate_first_3x3(conv: nn.Conv2d, dilation: int) -> None:
    """The official FCIS dilates res5a's 3×3 (``res5a_branch2b``, pad 2 dilate 2) like the rest of
    res5; torchvision's ``replace_stride_with_dilation`` keeps the first block's 3×3 at the
    previous stage's dilation. Same weights, wider receptive field."""
    conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)


def _dilate_basic_layer4(layer: nn.Sequential, dilation: int = 2, previous: int = 1) -> None:
    """torchvision refuses dilation in BasicBlock: apply the hole algorithm by hand. The first
    block gets stride 1, and every 3×3 conv of the stage ``dilation``, the first block's included
    (as the official FCIS's res5a); ``previous`` is unused, kept for callers. Any stage works
    (the name is historical). Shapes of the weights are unchanged, so ImageNet weights load."""
    first: Any = layer[0]
    first.conv1.stride = (1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    convs = [first.conv1, first.conv2] + [c for block in layer[1:] for c in (block.conv1, block.conv2)]
    for conv in convs:
        assert isinstance(conv, nn.Conv2d)
        conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)


class ResNetC4C5(nn.Module):
    """Runs a ResNet up to conv4 (stride 16) and conv5 (stride 16 when dilated, else 32); with
    ``build_resnet(..., dilate_conv4=True)`` both are at stride 8.

    forward(x: (N, 3, H, W)) -> (c4: (N, C4, H/16, W/16), c5: (N, C5, H/16, W/16)); on the CPU
    both come channels-last, and at inference BatchNorm is folded into the convolutions
    (:mod:`fcis.models.fast_resnet`; GroupNorm runs as it is).
    """

    def __init__(self, net: resnet.ResNet) -> None:
        super().__init__()
        self.body = nn.Sequential(OrderedDict(
            conv1=net.conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool,
            layer1=net.layer1, layer2=net.layer2, layer3=net.layer3))
        self.layer4 = net.layer4
        block = net.layer4[-1]
        self.c5_channels = (block.conv3 if hasattr(block, "conv3") else block.conv2).out_channels
        self.c4_channels = self.c5_channels // 2
        self.c3_channels = self.c5_channels // 4
        self._bn_folder = BatchNormFolder()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _, c4, c5 = self.with_conv3(x)
        return c4, c5

    def with_conv3(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """As ``forward``, with conv3 (``layer2``'s output, stride 8, ``c3_channels``) first:
        (c3, c4, c5)."""
        x = cpu_channels_last(x)
        fold = BatchNormFolder.applies(self)
        c4, kept = run_resnet_modules(self.body.named_children(), x, self._bn_folder, fold, keep=("layer2",))
        c5, _ = run_resnet_modules([("layer4", self.layer4)], c4, self._bn_folder, fold)
        return kept["layer2"], c4, c5
