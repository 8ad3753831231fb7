"""The head's input at stride 8 (``FCISConfig.head_stride = 8``): conv5 upsampled 2× plus a 1×1
projection of conv3, the top-down merge of a feature pyramid (Lin et al., FPN) at one level.

The paper's head reads conv5 at stride 16: an object of 32 input pixels spans two feature cells,
and its k×k = 7×7 position-sensitive cells sample fractions of one cell. At stride 8 the score
maps have four times the cells, from the same backbone (the RPN stays on conv4).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..backbone import ResNetC4C5

__all__ = ["FineFeatures", "head_input"]


class FineFeatures(nn.Module):
    """forward(c3: (N, C3, H, W), c5: (N, C5, h, w)) -> (N, C5, H, W): ``c5`` resized bilinearly to
    conv3's grid plus ``lateral(c3)`` (a 1×1 convolution, C3 -> C5).

    The lateral convolution starts at zero: a new model's stride-8 features are then exactly the
    upsampled conv5, and conv3's detail is learned on top (its gradient does not vanish: it is
    ``c3`` times the gradient of the sum)."""

    def __init__(self, c3_channels: int, c5_channels: int) -> None:
        super().__init__()
        self.lateral = nn.Conv2d(c3_channels, c5_channels, 1)
        nn.init.zeros_(self.lateral.weight)
        nn.init.zeros_(self.lateral.bias)  # type: ignore[arg-type]  # (a bias is made: bias=True)

    def forward(self, c3: Tensor, c5: Tensor) -> Tensor:
        up = F.interpolate(c5, size=c3.shape[-2:], mode="bilinear", align_corners=False)
        return up + self.lateral(c3)


def head_input(backbone: ResNetC4C5, fine: FineFeatures | None, x: Tensor) -> tuple[Tensor, Tensor]:
    """(conv4 for the RPN, the head's input): conv5 itself, or with ``fine`` the stride-8 merge."""
    if fine is None:
        return backbone(x)
    c3, c4, c5 = backbone.with_conv3(x)
    return c4, fine(c3, c5)
