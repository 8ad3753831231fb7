"""Running a torchvision ResNet body fast on the CPU, without changing its maths or its weights.

Two things, applied alike to FCIS's and InstanceFCN's :class:`~fcis.models.backbone.ResNetC4C5`
and to Mask R-CNN's ResNet-FPN body (benchmarks/SPEED.md, round 3, has the measurements):

- **Channels-last on the CPU.** oneDNN's convolutions work in (N, H, W, C); on an (N, C, H, W)
  tensor every convolution reorders its input and output, and BatchNorm, ReLU, the residual add
  and the stem's max-pool run on the slow layout too. The input is turned channels-last once
  (3 channels: cheap) and every layer after it follows. Parameters keep their layout (state
  dicts, optimisers and DDP see no change). CUDA inputs are left as they are.
- **BatchNorm folded into the convolution before it, at inference** (eval mode, autograd off):
  ``bn(conv(x)) == conv'(x)`` with ``conv'``'s weight and bias scaled by the running statistics
  (``torch.nn.utils.fusion.fuse_conv_bn_weights``), for ``nn.BatchNorm2d`` in eval mode and
  torchvision's ``FrozenBatchNorm2d``. The folded weights are cached per convolution and made
  again when a parameter or statistic changes (in-place updates, ``load_state_dict``, a new
  tensor); they cost one more copy of the body's weights while the model is in eval mode.
  Training, autograd, tracing and ONNX export take the modules' own forward.

A GroupNorm body (``norm="gn"``, :mod:`fcis.models.norm`) takes the same path: channels-last
throughout (PyTorch's CPU GroupNorm keeps the layout), and each GroupNorm runs as its module after
its convolution, since per-image statistics cannot be folded into weights. Measured on the CPU
(benchmarks/NORM.md, ResNet-18 at 2×256×320, CPU time): at inference the GroupNorm body takes 1.04×
the folded BatchNorm body's time, and channels-last is 4% faster than (N, C, H, W) for it; in
training (forward + backward) it takes 1.03× BatchNorm's.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops.misc import FrozenBatchNorm2d

from .derived_cache import DerivedCache

__all__ = ["cpu_channels_last", "BatchNormFolder", "run_resnet_modules", "ResNetLayerGetter"]


def cpu_channels_last(x: Tensor) -> Tensor:
    """``x`` in the channels-last layout when it is a 4-d CPU tensor (outside tracing and export,
    whose graphs stay as the modules write them); else ``x`` itself."""
    if x.dim() != 4 or x.device.type != "cpu" or _exporting():
        return x
    return x.contiguous(memory_format=torch.channels_last)


def _exporting() -> bool:
    return torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() \
        or torch.compiler.is_compiling()


def _foldable(bn: nn.Module) -> bool:
    if isinstance(bn, FrozenBatchNorm2d):
        return True
    return isinstance(bn, _BatchNorm) and not bn.training and bn.running_mean is not None \
        and bn.running_var is not None


class BatchNormFolder:
    """Folded (weight, bias) of (convolution, BatchNorm) pairs, cached by convolution
    (:class:`~fcis.models.derived_cache.DerivedCache`: remade when a source tensor changes)."""

    def __init__(self) -> None:
        self._cache = DerivedCache()

    @staticmethod
    def applies(module: nn.Module) -> bool:
        """Whether folding applies to a call of ``module`` now: eval mode, autograd off, eager."""
        return not module.training and not torch.is_grad_enabled() and not _exporting()

    def conv_bn(self, conv: nn.Module, bn: Any, x: Tensor) -> Tensor:
        """``bn(conv(x))`` in one convolution; the two modules as they are where the pair cannot be
        folded (a BatchNorm in training mode, a padding mode other than zeros)."""
        if not (isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros" and _foldable(bn)):
            return bn(conv(x))
        sources = tuple(t for t in (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
                        if t is not None)
        weight, bias = self._cache.get(id(conv), sources, lambda: _fold(conv, bn))
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _fold(conv: nn.Conv2d, bn: Any) -> tuple[Tensor, Tensor]:
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                        bn.eps, bn.weight, bn.bias)
    return weight.detach(), bias.detach()


def run_resnet_modules(modules: Iterable[tuple[str, nn.Module]], x: Tensor, folder: BatchNormFolder,
                       fold: bool, keep: Iterable[str] = ()) -> tuple[Tensor, dict[str, Tensor]]:
    """Run a ResNet body's children in order (``conv1, bn1, relu, maxpool, layer1, ...``); return
    the last output and the outputs of the children named in ``keep``. With ``fold``, every
    BatchNorm is folded into the convolution before it (the pair's output is the BatchNorm's)."""
    keep, kept = set(keep), {}
    items = list(modules)
    i = 0
    while i < len(items):
        name, module = items[i]
        following: Any = items[i + 1][1] if i + 1 < len(items) else None
        if fold and isinstance(module, nn.Conv2d) and _is_bn(following):
            i += 1
            name = items[i][0]
            x = folder.conv_bn(module, following, x)
        elif fold and isinstance(module, nn.Sequential) and all(isinstance(b, (Bottleneck, BasicBlock))
                                                              for b in module):
            for block in module:
                x = _block(block, x, folder)
        else:
            x = module(x)
        if name in keep:
            kept[name] = x
        i += 1
    return x, kept


def _is_bn(module: Any) -> bool:
    return isinstance(module, (_BatchNorm, FrozenBatchNorm2d))


def _block(block: Any, x: Tensor, folder: BatchNormFolder) -> Tensor:
    """torchvision's ``Bottleneck.forward`` / ``BasicBlock.forward`` with each BatchNorm folded."""
    out = folder.conv_bn(block.conv1, block.bn1, x).relu_()
    out = folder.conv_bn(block.conv2, block.bn2, out)
    if isinstance(block, Bottleneck):
        out = folder.conv_bn(block.conv3, block.bn3, out.relu_())
    down = block.downsample
    if down is None:
        identity = x
    elif isinstance(down, nn.Sequential) and len(down) == 2:
        identity = folder.conv_bn(down[0], down[1], x)
    else:
        identity = down(x)
    return out.add_(identity).relu_()


class ResNetLayerGetter(IntermediateLayerGetter):
    """torchvision's ``IntermediateLayerGetter`` over a ResNet (Mask R-CNN's FPN body), run as
    :class:`~fcis.models.backbone.ResNetC4C5` runs: channels-last on the CPU, BatchNorm folded at
    inference. Same children, names and state dict as the getter it replaces."""

    @classmethod
    def replacing(cls, getter: IntermediateLayerGetter) -> "ResNetLayerGetter":
        new = cls.__new__(cls)
        nn.ModuleDict.__init__(new, getter.items())
        new.return_layers = dict(getter.return_layers)
        new.train(getter.training)
        new._bn_folder = BatchNormFolder()
        return new

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        _, kept = run_resnet_modules(self.items(), cpu_channels_last(x), self._bn_folder,
                                     BatchNormFolder.applies(self), keep=self.return_layers)
        return OrderedDict((self.return_layers[name], kept[name]) for name in self.return_layers)
