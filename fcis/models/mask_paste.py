"""Paste box-relative P×P masks into image space (bilinear, zero outside the box)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["paste_masks_in_frame"]


def paste_masks_in_frame(masks: Tensor, boxes: Tensor, frame: tuple[int, int, int, int]) -> Tensor:
    """Resample each mask into the pixel window ``frame`` = (x0, y0, x1, y1) of the image.

    Args:
        masks: (M, P, P) values on a regular grid over each box.
        boxes: (M, 4) xyxy boxes in image pixels (the masks' extents).
        frame: integer pixel window; output pixel (r, c) has centre (x0 + c + 0.5, y0 + r + 0.5).

    Returns:
        (M, y1 - y0, x1 - x0): bilinear samples of each mask, zero outside its box.
    """
    x0, y0, x1, y1 = frame
    m = masks.shape[0]
    if m == 0 or x1 <= x0 or y1 <= y0:
        return masks.new_zeros(m, max(y1 - y0, 0), max(x1 - x0, 0))
    xs = torch.arange(x0, x1, dtype=masks.dtype, device=masks.device) + 0.5
    ys = torch.arange(y0, y1, dtype=masks.dtype, device=masks.device) + 0.5
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    # grid_sample (align_corners=False): -1 and +1 are the outer edges of the P×P grid = the box.
    gx = (xs[None, :] - boxes[:, 0:1]) / w[:, None] * 2 - 1                  # (M, W')
    gy = (ys[None, :] - boxes[:, 1:2]) / h[:, None] * 2 - 1                  # (M, H')
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[:, 0]
