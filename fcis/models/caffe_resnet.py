"""ResNet v1 as the official FCIS symbol computes it (Caffe/MXNet style), on torchvision's modules.

The official ``resnet_v1_101_fcis.py`` differs from torchvision's ResNet (v1.5) in three places,
none of which changes a parameter's name or shape, so torchvision's module tree and state-dict
names are kept and only the strides and the stem's pooling change:

- **stride in the first 1×1 convolution of a stage's first block** (``res3a_branch2a``,
  ``res4a_branch2a``: kernel 1, stride 2), not in its 3×3 (torchvision puts it in ``conv2``); the
  downsampling branch (``res*a_branch1``) is a 1×1 with stride 2 in both. Output sizes are equal
  (``ceil(H / 2)`` either way); the sampled positions are not.
- **max pool 3×3, stride 2, no padding, ``pooling_convention='full'``** (MXNet: output
  ``ceil((H - 3) / 2) + 1``), i.e. ``nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)`` (with no
  padding PyTorch's ceil mode keeps every window starting inside the input, as MXNet's ``full``
  does); torchvision pads by 1 and floors.
- **BatchNorm with global statistics, eps 1e-5** (``use_global_stats=True, fix_gamma=False``):
  ``FrozenBatchNorm2d(eps=1e-5)``, torchvision's default eps.

res5 (``layer4``) runs at stride 1 with every 3×3 dilated by 2, res5a's included
(``dilate_conv5``, as the default FCIS; ``res5a_branch1`` and ``res5a_branch2a`` at stride 1).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet
from torchvision.models.resnet import Bottleneck

from .backbone import BackboneWeights, build_resnet

__all__ = ["caffe_style", "build_caffe_resnet"]


def caffe_style(model: resnet.ResNet) -> resnet.ResNet:
    """Turn a torchvision Bottleneck ResNet into the official (Caffe/MXNet) ResNet v1 in place:
    each stage's stride moved from the first block's 3×3 to its first 1×1, and the stem's max
    pool made MXNet's ``full`` 3×3/2 pooling without padding. Same parameters."""
    first = model.layer1[0]
    if not isinstance(first, Bottleneck):
        raise ValueError("the official ResNet v1 is a Bottleneck ResNet (depth >= 50)")
    model.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        block = layer[0]
        stride = block.conv2.stride
        block.conv1.stride, block.conv2.stride = stride, (1, 1)
    return model


def build_caffe_resnet(depth: int, weights: BackboneWeights, *, trainable_layers: int = 0) -> resnet.ResNet:
    """The official FCIS backbone: a Caffe-style ResNet v1 (:func:`caffe_style`) with frozen
    BatchNorm (eps 1e-5) and res5 dilated by 2 at stride 1 (feature stride 16). ``weights``: a
    torchvision-named state dict file (``fcis convert weights`` of an ImageNet
    ``resnet_v1_101-0000.params`` writes one) or None."""
    if depth < 50:
        raise ValueError(f"the official FCIS backbone is a Bottleneck ResNet (50, 101, 152), got depth {depth}")
    net = build_resnet(depth, weights, pretrained=True, dilate_conv5=True, frozen_bn=True,
                       trainable_layers=trainable_layers)
    return caffe_style(net)
