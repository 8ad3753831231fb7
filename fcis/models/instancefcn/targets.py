"""Training targets of InstanceFCN: which windows are positive, and their m×m mask targets.

The rule (the paper's: a window is positive when an object is centred in it and the object's
scale matches the window; the numbers are DeepMask's, which InstanceFCN follows):

- an object's scale is L = max(box width, box height) of its (visible) mask's tight box; it
  belongs to the one window size S nearest to L / ``object_fill`` in log scale;
- a window (centre c, size S) is **positive** for an object when S is the object's size and
  |c - box centre| <= max(``center_tolerance``·S, stride / 2) on both axes (the stride/2 floor
  gives every object at least one positive cell). With several such objects, the one whose box
  centre is nearest wins;
- it is **ignored** when not positive but within max(``ignore_tolerance``·S, stride) of an
  object's box centre (both axes) at the object's size or a neighbouring one, and when its
  centre is outside the image (padding);
- every other window is **negative**, so an image without objects has only negatives.

A positive window's mask target is its object's mask alone (other objects are background),
resampled on the m×m grid over the window (RoIAlign, aligned) and binarised.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

from .config import InstanceFCNConfig

__all__ = ["label_windows", "window_mask_targets"]


def label_windows(gt_boxes: Tensor, image_size: tuple[int, int], centers: tuple[Tensor, Tensor],
                  cfg: InstanceFCNConfig) -> tuple[Tensor, Tensor]:
    """Labels of every window of one image.

    Args:
        gt_boxes: (G, 4) xyxy boxes of the image's objects, input pixels.
        image_size: (h, w) of the image inside the padded batch.
        centers: window centres ys (H,), xs (W,) (see ``window_centers``).
        cfg: the model configuration (sizes, tolerances, stride).

    Returns:
        labels (S, H, W) int64: 1 positive, 0 negative, -1 ignored; matched (S, H, W) int64:
        index of the positive's object (-1 elsewhere).
    """
    ys, xs = centers
    sizes = torch.tensor(cfg.window_sizes, dtype=ys.dtype, device=ys.device)       # (S,)
    num_sizes, stride = len(sizes), cfg.feature_stride
    inside = (ys[:, None] < image_size[0]) & (xs[None, :] < image_size[1])          # (H, W)
    shape = (num_sizes, len(ys), len(xs))
    matched = torch.full(shape, -1, dtype=torch.int64, device=ys.device)
    if gt_boxes.numel() == 0:
        labels = torch.where(inside, 0, -1).to(torch.int64).expand(shape).clone()
        return labels, matched
    boxes = gt_boxes.to(ys.dtype)
    extent = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=1.0)
    wanted = torch.log(extent / cfg.object_fill)
    assigned = (wanted[:, None] - torch.log(sizes)[None, :]).abs().argmin(dim=1)  # (G,)
    step = torch.arange(num_sizes, device=ys.device)[:, None] - assigned[None, :]  # (S, G)

    dy = (ys[None, :] - (boxes[:, 1] + boxes[:, 3])[:, None] / 2).abs()            # (G, H)
    dx = (xs[None, :] - (boxes[:, 0] + boxes[:, 2])[:, None] / 2).abs()            # (G, W)
    tol_pos = (cfg.center_tolerance * sizes).clamp(min=stride / 2)[:, None, None, None]
    tol_ign = (cfg.ignore_tolerance * sizes).clamp(min=float(stride))[:, None, None, None]
    far = torch.maximum(dy[:, :, None], dx[:, None, :])[None]                      # (1, G, H, W)
    positive = (far <= tol_pos) & (step == 0)[:, :, None, None]                    # (S, G, H, W)
    near = (far <= tol_ign) & (step.abs() <= 1)[:, :, None, None]

    dist = (dy[:, :, None] ** 2 + dx[:, None, :] ** 2)[None].expand_as(positive)
    best_dist, best = torch.where(positive, dist, torch.full_like(dist, float("inf"))).min(dim=1)
    is_pos = torch.isfinite(best_dist) & inside
    labels = torch.zeros(shape, dtype=torch.int64, device=ys.device)
    labels[near.any(dim=1) | ~inside] = -1
    labels[is_pos] = 1
    matched[is_pos] = best[is_pos]
    return labels, matched


def window_mask_targets(masks: Tensor, matched: Tensor, boxes: Tensor, size: int, threshold: float) -> Tensor:
    """(K, m, m) float {0, 1}: mask ``matched[i]`` of ``masks`` (G, H, W) resampled over window
    ``boxes[i]`` (K, 4, input pixels) on an m×m grid, binarised at ``threshold`` (zero outside
    the image)."""
    if boxes.numel() == 0:
        return boxes.new_zeros(0, size, size)
    rois = torch.cat([matched[:, None].to(boxes.dtype), boxes], dim=1)
    crops = roi_align(masks[:, None].to(boxes.dtype), rois, size, 1.0, sampling_ratio=2, aligned=True)
    return (crops[:, 0] >= threshold).to(boxes.dtype)
