"""The official FCIS RPN head and region proposals (msracver/FCIS ``fcis/operator_py/proposal.py``,
the Python op of the released COCO and VOC test configs: ``TEST.CXX_PROPOSAL: false``).

The head (``rpn_conv_3x3``, ``rpn_cls_score``, ``rpn_bbox_pred``) runs in PyTorch; its 2A score
channels are background-then-foreground (``Reshape(0, 2, -1, 0)``), turned into foreground
probabilities by a 2-way softmax per anchor (float32, max-subtracted, as mshadow's). The proposal
op then runs in NumPy, as the official one: :func:`fcis.inference.official_ops.official_proposals`
(py-faster-rcnn anchors, conv4 cut to ``int(h / 16)`` × ``int(w / 16)``, the +1 decode in float64
without clamp, clip, minimum size in input pixels, top 6000, NMS 0.7 with +1 areas in float32,
top 300, padding). For ONNX export (``exportable=True``) the same steps are written in PyTorch
(:meth:`OfficialRPN.export_proposals`), with ``torchvision.ops.nms`` on boxes widened by one
pixel (the official IoU up to float32 rounding order) and ``topk``'s order among equal scores.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import nms as tv_nms

from ...inference.official_ops import generate_anchors, official_proposals

__all__ = ["OfficialRPNHead", "OfficialRPN", "foreground_probs", "decode_boxes", "clip_inclusive", "pad_indices"]


class OfficialRPNHead(nn.Module):
    """``rpn_conv_3x3`` (3×3, 512) + ReLU, ``rpn_cls_score`` (1×1, 2A channels: A background, then
    A foreground) and ``rpn_bbox_pred`` (1×1, 4A: per anchor dx, dy, dw, dh). The names match
    :class:`fcis.models.rpn.RPNHead` (``conv``, ``cls_logits``, ``bbox_pred``); ``cls_logits``
    has 2A channels instead of A.

    forward((N, C, H, W)) -> (scores (N, 2A, H, W), deltas (N, 4A, H, W))."""

    def __init__(self, in_channels: int, mid_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(mid_channels, 2 * num_anchors, 1)
        self.bbox_pred = nn.Conv2d(mid_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            assert layer.bias is not None
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = self.conv(x).relu()
        return self.cls_logits(t), self.bbox_pred(t)


def foreground_probs(scores: Tensor) -> Tensor:
    """(N, 2A, H, W) logits -> (N, A, H, W) foreground probabilities of the 2-way softmax over
    channels (a, A + a), computed as mshadow's softmax: exp(x - max) / sum."""
    n, c, h, w = scores.shape
    pair = scores.view(n, 2, c // 2, h, w)
    top = pair.amax(dim=1, keepdim=True)
    e = (pair - top).exp()
    return e[:, 1] / (e[:, 0] + e[:, 1])


def decode_boxes(boxes: Tensor, deltas: Tensor) -> Tensor:
    """:func:`fcis.inference.official_ops.bbox_pred` in PyTorch (for export): (K, 4) inclusive
    boxes, (K, 4) deltas (dx, dy, dw, dh) -> (K, 4) float64, ``exp`` in the deltas' dtype. No
    clamp on dw, dh."""
    boxes = boxes.to(torch.float64)
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * (widths - 1.0)
    ctr_y = boxes[:, 1] + 0.5 * (heights - 1.0)
    d = deltas.to(torch.float64)
    px = d[:, 0] * widths + ctr_x
    py = d[:, 1] * heights + ctr_y
    pw = deltas[:, 2].exp().to(torch.float64) * widths
    ph = deltas[:, 3].exp().to(torch.float64) * heights
    return torch.stack([px - 0.5 * (pw - 1.0), py - 0.5 * (ph - 1.0), px + 0.5 * (pw - 1.0), py + 0.5 * (ph - 1.0)],
                       dim=1)


def clip_inclusive(boxes: Tensor, height, width) -> Tensor:
    """``bbox_transform.clip_boxes``: x to [0, width - 1], y to [0, height - 1] (sizes may be
    symbolic while exporting)."""
    x = boxes[:, 0::2].clamp(min=0.0, max=(width - 1) * 1.0)
    y = boxes[:, 1::2].clamp(min=0.0, max=(height - 1) * 1.0)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def pad_indices(n, total: int, device: torch.device | None = None) -> Tensor:
    """:func:`fcis.inference.official_ops.pad_rows` with tensor arithmetic only (exports with a
    dynamic ``n``): (total,) int64 indices for ``1 <= n <= total`` kept rows; for ``n = 0`` all
    are 0 (keep those ``< n``: none)."""
    n_t = torch.as_tensor(n, device=device).to(torch.int64).reshape(())
    span = (total - n_t).clamp(min=1).to(torch.float64)
    j = torch.arange(total, device=device)
    pad = torch.floor((j - n_t).to(torch.float64).add(0.5) * n_t.to(torch.float64) / span).to(torch.int64)
    return torch.where(j < n_t, j, pad.clamp(min=0))


class OfficialRPN(nn.Module):
    """The official RPN on conv4 and its proposal op (module docstring).

    ``forward(c4 (1, C, H, W), image_size (h, w))`` -> (R, 4) float32 proposals, inclusive input
    pixels (R = ``post_nms_top_n``, or 0 when no box survives); ``exportable=True`` takes the
    PyTorch re-statement that exports to ONNX."""

    def __init__(self, in_channels: int, *, scales: tuple[float, ...], ratios: tuple[float, ...],
                 feature_stride: int = 16, mid_channels: int = 512, pre_nms_top_n: int = 6000,
                 post_nms_top_n: int = 300, nms_iou: float = 0.7, min_size: float = 2.0) -> None:
        super().__init__()
        self.base_anchors = generate_anchors(feature_stride, ratios, scales)          # (A, 4) float64
        self.head = OfficialRPNHead(in_channels, mid_channels, len(self.base_anchors))
        self.feature_stride = feature_stride
        self.pre_nms_top_n, self.post_nms_top_n = pre_nms_top_n, post_nms_top_n
        self.nms_iou, self.min_size = nms_iou, min_size

    def forward(self, c4: Tensor, image_size: tuple[int, int], exportable: bool = False) -> Tensor:
        scores, deltas = self.head(c4)
        probs = foreground_probs(scores.float())
        if exportable:
            return self.export_proposals(probs, deltas.float(), image_size)
        boxes = official_proposals(probs[0].detach().cpu().numpy(), deltas[0].detach().float().cpu().numpy(),
                                   int(image_size[0]), int(image_size[1]), anchors=self.base_anchors,
                                   feat_stride=self.feature_stride, pre_nms_top_n=self.pre_nms_top_n,
                                   post_nms_top_n=self.post_nms_top_n, nms_iou=self.nms_iou, min_size=self.min_size)
        return torch.from_numpy(boxes).to(c4.device)

    def anchors(self, h, w, device: torch.device) -> Tensor:
        """(h·w·A, 4) float64 anchors, positions row-major, anchors innermost."""
        stride = self.feature_stride
        base = torch.as_tensor(self.base_anchors, device=device)
        sy, sx = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float64) * stride,
                                torch.arange(w, device=device, dtype=torch.float64) * stride, indexing="ij")
        shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)
        return (shifts + base.view(1, -1, 4)).reshape(-1, 4)

    def export_proposals(self, probs: Tensor, deltas: Tensor, image_size) -> Tensor:
        """The proposal op in PyTorch for ONNX export: (1, A, H, W) probabilities, (1, 4A, H, W)
        deltas, symbolic (h, w) -> (R, 4) float32. Boxes under the minimum size get score -1
        (sorted last: dropped after NMS, suppressing nothing kept before them)."""
        img_h, img_w = image_size
        a = probs.shape[1]
        probs = probs[:, :, : img_h // self.feature_stride, : img_w // self.feature_stride]
        h, w = probs.shape[-2], probs.shape[-1]
        deltas = deltas[:, :, :h, :w]
        score = probs[0].permute(1, 2, 0).reshape(-1)
        delta = deltas[0].reshape(a, 4, h, w).permute(2, 3, 0, 1).reshape(-1, 4)
        boxes = clip_inclusive(decode_boxes(self.anchors(h, w, probs.device), delta), img_h, img_w)
        valid = (boxes[:, 2] - boxes[:, 0] + 1 >= self.min_size) & (boxes[:, 3] - boxes[:, 1] + 1 >= self.min_size)
        masked = torch.where(valid, score, torch.full_like(score, -1.0))
        top, order = masked.topk(min(self.pre_nms_top_n, score.shape[0]))
        boxes32 = boxes[order].float()
        wide = torch.cat([boxes32[:, :2], boxes32[:, 2:] + 1.0], dim=1)
        keep = tv_nms(wide, top, self.nms_iou)
        keep = keep[top[keep] >= 0][: self.post_nms_top_n]
        idx = pad_indices(keep.shape[0], self.post_nms_top_n, keep.device)
        return boxes32[keep[idx[idx < keep.shape[0]]]]          # no row at all when nothing was kept
