"""The InstanceFCN network: backbone, instance branch + assembling, objectness branch."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import resize_boxes

from ..backbone import ResNetC4C5
from ..mask_paste import MaskWindow
from ..rcnn_transform import RCNNTransform
from .assemble import assemble_windows, window_boxes, window_centers
from .config import InstanceFCNConfig
from .head import InstanceBranch, ObjectnessBranch
from .inference import proposal_windows, rank_proposals, select_proposals
from .losses import instancefcn_losses, sample_windows
from .targets import label_windows, window_mask_targets

__all__ = ["InstanceFCN"]


class InstanceFCN(nn.Module):
    """Instance-sensitive Fully Convolutional Networks (Dai et al., ECCV 2016): class-agnostic
    segment proposals.

    ``model(images, targets)`` in training mode returns ``loss_objectness`` and ``loss_mask``.
    ``model(images)`` in eval mode returns per image a dict with ``boxes`` (N, 4) (tight box of
    each binarised mask), ``labels`` (N,) all 1 ("object"), ``scores`` (N,) objectness,
    descending, and ``masks`` (N, 1, H, W) probabilities at the input image's size; binarise at
    ``config.mask_threshold``.
    images: list of (3, H, W) float tensors in [0, 1]; targets: list of dicts with ``boxes``
    (G, 4) xyxy and ``masks`` (G, H, W) (``labels`` are ignored).
    """

    def __init__(self, config: InstanceFCNConfig, backbone: ResNetC4C5) -> None:
        super().__init__()
        self.config = config
        self.transform = RCNNTransform(config.min_size, config.max_size,
                                                  list(config.image_mean), list(config.image_std))
        self.backbone = backbone
        self.instance = InstanceBranch(config, backbone.c5_channels)
        self.objectness = ObjectnessBranch(config, backbone.c5_channels)

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        original_sizes = [(img.shape[-2], img.shape[-1]) for img in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)[1]
        maps, objectness = self.instance(features), self.objectness(features)
        if self.training:
            return self.losses(maps, objectness, targets, batch.image_sizes)
        return self.detect(maps, objectness, batch.image_sizes, original_sizes)

    def _grid(self, maps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Window centres ys (H,), xs (W,) and sizes (S,) of the feature map ``maps``."""
        ys, xs = window_centers(maps.shape[-2], maps.shape[-1], self.config.feature_stride,
                                dtype=maps.dtype, device=maps.device)
        sizes = torch.tensor(self.config.window_sizes, dtype=maps.dtype, device=maps.device)
        return ys, xs, sizes

    def _rois(self, image: int, flat: Tensor, grid: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """(K, 5) rois of the windows with flat indices ``flat`` into (S, H, W)."""
        ys, xs, sizes = grid
        h, w = len(ys), len(xs)
        s, y, x = flat // (h * w), (flat // w) % h, flat % w
        boxes = window_boxes(ys[y], xs[x], sizes[s])
        return torch.cat([torch.full_like(boxes[:, :1], image), boxes], dim=1)

    def losses(self, maps: Tensor, objectness: Tensor, targets: list[dict[str, Tensor]],
               image_sizes: list[tuple[int, int]]) -> dict[str, Tensor]:
        """Label all windows, sample ``windows_per_image`` per image (positives up to
        ``positive_fraction``), and return the objectness loss of the sample and the mask loss
        of its positives."""
        cfg = self.config
        grid = self._grid(maps)
        labels, matched = [], []
        for tgt, size in zip(targets, image_sizes):
            lab, mat = label_windows(tgt["boxes"], size, grid[:2], cfg)
            labels.append(lab.flatten())
            matched.append(mat.flatten())
        pos, neg = sample_windows(labels, cfg.windows_per_image, cfg.positive_fraction)
        obj_logits, obj_targets, mask_logits, mask_targets = [], [], [], []
        flat_obj = objectness.flatten(1)                                        # (N, S·H·W)
        for i, (p, n) in enumerate(zip(pos, neg)):
            chosen = torch.cat([p, n])
            obj_logits.append(flat_obj[i, chosen])
            obj_targets.append((labels[i][chosen] == 1).to(maps.dtype))
            if p.numel():
                rois = self._rois(i, p, grid)
                mask_logits.append(assemble_windows(maps, rois, cfg.window_size, cfg.feature_stride))
                mask_targets.append(window_mask_targets(targets[i]["masks"], matched[i][p], rois[:, 1:],
                                                        cfg.window_size, cfg.mask_target_threshold))
        m = cfg.window_size
        return instancefcn_losses(
            torch.cat(obj_logits), torch.cat(obj_targets),
            torch.cat(mask_logits) if mask_logits else maps.new_zeros(0, m, m),
            torch.cat(mask_targets) if mask_targets else maps.new_zeros(0, m, m),
            anchor=maps.sum() + objectness.sum(), objectness_weight=cfg.objectness_loss_weight,
            mask_weight=cfg.mask_loss_weight)

    def _candidates(self, maps: Tensor, objectness: Tensor, i: int, size: tuple[int, int],
                    grid: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Image ``i``'s ``pre_nms_top_n`` windows of highest objectness whose centre is in the
        image: scores (K,), boxes (K, 4) in network-input pixels, mask probabilities (K, m, m)."""
        cfg = self.config
        ys, xs, _ = grid
        probs = objectness[i].sigmoid()                                         # (S, H, W)
        inside = (ys[:, None] < size[0]) & (xs[None, :] < size[1])
        probs = torch.where(inside, probs, torch.full_like(probs, -1.0)).flatten()
        top = torch.topk(probs, min(cfg.pre_nms_top_n, probs.numel())).indices
        top = top[probs[top] > cfg.score_thresh]
        rois = self._rois(i, top, grid)
        return probs[top], rois[:, 1:], assemble_windows(maps, rois, cfg.window_size, cfg.feature_stride).sigmoid()

    def detect(self, maps: Tensor, objectness: Tensor, image_sizes: list[tuple[int, int]],
               original_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """Per image: the ``pre_nms_top_n`` windows of highest objectness whose centre is in the
        image, mask NMS (on a grid over the network input), their assembled masks pasted at the
        original size, tight boxes."""
        cfg = self.config
        grid = self._grid(maps)
        results = []
        for i, (size, original) in enumerate(zip(image_sizes, original_sizes)):
            scores, boxes, mask_probs = self._candidates(maps, objectness, i, size, grid)
            results.append(select_proposals(scores, resize_boxes(boxes, size, original), mask_probs, original,
                                            nms_iou=cfg.nms_iou, nms_resolution=cfg.nms_resolution,
                                            mask_threshold=cfg.mask_threshold, limit=cfg.detections_per_img,
                                            nms_boxes=boxes, nms_size=size))
        return results

    @torch.no_grad()
    def detect_windows(self, images: list[Tensor], *, score_threshold: float = 0.0) -> list[Iterator[MaskWindow]]:
        """Eval-mode inference with bounded memory: per image, an iterator over its proposals with
        ``score >= score_threshold`` (descending), each a :class:`~fcis.models.mask_paste.MaskWindow`
        (mask pasted in its window only; same values as ``model(images)``'s masks)."""
        cfg = self.config
        original_sizes = [(img.shape[-2], img.shape[-1]) for img in images]
        batch, _ = self.transform(images)
        features = self.backbone(batch.tensors)[1]
        maps, objectness = self.instance(features), self.objectness(features)
        grid = self._grid(maps)
        out = []
        for i, (size, original) in enumerate(zip(batch.image_sizes, original_sizes)):
            scores, boxes, mask_probs = self._candidates(maps, objectness, i, size, grid)
            keep = rank_proposals(mask_probs, boxes, size, nms_iou=cfg.nms_iou, nms_resolution=cfg.nms_resolution,
                                  mask_threshold=cfg.mask_threshold, limit=cfg.detections_per_img)
            out.append(proposal_windows(scores, resize_boxes(boxes, size, original), mask_probs, original, keep,
                                        mask_threshold=cfg.mask_threshold, score_threshold=score_threshold))
        return out
