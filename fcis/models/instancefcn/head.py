"""InstanceFCN's two branches on the backbone features."""

from __future__ import annotations

from torch import Tensor, nn

from ..norm import head_norm, init_normalised_conv
from .config import InstanceFCNConfig

__all__ = ["InstanceBranch", "ObjectnessBranch"]


def _init(*layers: nn.Conv2d) -> None:
    for layer in layers:
        nn.init.normal_(layer.weight, std=0.01)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


class InstanceBranch(nn.Module):
    """1×1 conv (512) + ReLU + 3×3 conv to the k² instance-sensitive score maps; with
    ``cfg.norm == "gn"`` the 1×1 conv has no bias, He-normal weights and GroupNorm
    (``reduce_norm``) comes before the ReLU (:mod:`fcis.models.norm`).

    forward(features: (N, C, H, W)) -> (N, k², H, W) logits; map i·k + j scores "this pixel
    belongs to an instance at relative position (row i, column j)".
    """

    def __init__(self, cfg: InstanceFCNConfig, in_channels: int) -> None:
        super().__init__()
        norm = head_norm(cfg.norm)
        self.reduce = nn.Conv2d(in_channels, cfg.instance_channels, 1, bias=norm is None)
        self.reduce_norm = norm(cfg.instance_channels) if norm is not None else None
        self.scores = nn.Conv2d(cfg.instance_channels, cfg.group_size ** 2, 3, padding=1)
        _init(self.reduce, self.scores)
        if self.reduce_norm is not None:
            init_normalised_conv(self.reduce)

    def forward(self, features: Tensor) -> Tensor:
        x = self.reduce(features)
        if self.reduce_norm is not None:
            x = self.reduce_norm(x)
        return self.scores(x.relu())


class ObjectnessBranch(nn.Module):
    """3×3 conv (512) + ReLU + 1×1 conv: per position and window size, the logit of "an
    instance is framed by the window centred here".

    forward(features: (N, C, H, W)) -> (N, S, H, W) logits, S = len(cfg.window_sizes).
    """

    def __init__(self, cfg: InstanceFCNConfig, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, cfg.objectness_channels, 3, padding=1)
        self.logits = nn.Conv2d(cfg.objectness_channels, len(cfg.window_sizes), 1)
        _init(self.conv, self.logits)

    def forward(self, features: Tensor) -> Tensor:
        return self.logits(self.conv(features).relu())
