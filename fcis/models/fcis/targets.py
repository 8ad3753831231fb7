"""Training targets per RoI: class labels, box deltas and P×P mask targets."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou, roi_align

__all__ = ["RoITargets", "assign_targets", "mask_targets"]


@dataclass
class RoITargets:
    """Targets of the RoIs of one batch (R = all RoIs of all images).

    rois (R, 5) batch index + xyxy; labels (R,) int64, 0 = background; box_targets (R, 4)
    encoded deltas (meaningful where labels > 0); matched (R,) index of the matched GT in its
    image (-1 when the image has none)."""

    rois: Tensor
    labels: Tensor
    box_targets: Tensor
    matched: Tensor

    def select(self, index: Tensor) -> "RoITargets":
        return RoITargets(self.rois[index], self.labels[index], self.box_targets[index], self.matched[index])


def assign_targets(proposals: list[Tensor], targets: list[dict[str, Tensor]], box_coder: BoxCoder,
                   fg_iou: float, add_gt: bool, bg_iou_low: float = 0.0) -> RoITargets:
    """Label every proposal (plus the GT boxes when ``add_gt``): foreground with the class of the
    highest-IoU GT when that IoU >= ``fg_iou``, background otherwise. With ``bg_iou_low`` > 0
    (the official VOC setting, 0.1), RoIs whose highest IoU is below it are left out: background
    is then IoU in [bg_iou_low, fg_iou)."""
    rois, labels, deltas, matched = [], [], [], []
    for i, (props, tgt) in enumerate(zip(proposals, targets)):
        gt_boxes = tgt["boxes"].to(props.dtype)
        boxes = torch.cat([props, gt_boxes]) if add_gt else props
        if gt_boxes.numel() == 0:
            lab = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
            idx = torch.full_like(lab, -1)
            delta = torch.zeros_like(boxes)
        else:
            best_iou, idx = box_iou(gt_boxes, boxes).max(dim=0)
            lab = torch.where(best_iou >= fg_iou, tgt["labels"][idx], torch.zeros_like(idx))
            delta = box_coder.encode_single(gt_boxes[idx], boxes)
            # Background RoIs have no box target; zero them, so that a degenerate (zero-width) GT
            # box added as a RoI cannot put NaN deltas into the (masked) box loss.
            delta = torch.where((lab > 0)[:, None], delta, torch.zeros_like(delta))
            if bg_iou_low > 0:
                keep = torch.nonzero(best_iou >= bg_iou_low).flatten()
                boxes, lab, idx, delta = boxes[keep], lab[keep], idx[keep], delta[keep]
        batch = torch.full((len(boxes), 1), i, dtype=boxes.dtype, device=boxes.device)
        rois.append(torch.cat([batch, boxes], dim=1))
        labels.append(lab)
        deltas.append(delta)
        matched.append(idx)
    return RoITargets(torch.cat(rois), torch.cat(labels), torch.cat(deltas), torch.cat(matched))


def mask_targets(t: RoITargets, targets: list[dict[str, Tensor]], size: int, threshold: float) -> Tensor:
    """(R, P, P) float {0, 1}: each RoI's GT mask cropped to the RoI, resampled to P×P
    (RoIAlign, aligned) and binarised at ``threshold``. The GT mask is zero outside the GT box,
    so this is the mask restricted to RoI ∩ GT box. Background RoIs get zeros."""
    out = t.rois.new_zeros(len(t.rois), size, size)
    for i, tgt in enumerate(targets):
        sel = torch.nonzero((t.rois[:, 0] == i) & (t.labels > 0)).flatten()
        if sel.numel() == 0:
            continue
        masks = tgt["masks"][:, None].to(t.rois.dtype)                     # (G, 1, H, W)
        boxes = torch.cat([t.matched[sel, None].to(t.rois.dtype), t.rois[sel, 1:]], dim=1)
        crops = roi_align(masks, boxes, size, 1.0, sampling_ratio=2, aligned=True)[:, 0]
        out[sel] = (crops >= threshold).to(out.dtype)
    return out
