"""The FCIS network: backbone, RPN on conv4, position-sensitive head on conv5 (or at stride 8, conv5
merged with conv3: ``head_stride``)."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import clip_boxes_to_image

from ..backbone import ResNetC4C5
from ..mask_paste import MaskWindow
from ..rcnn_transform import RCNNTransform
from ..rpn import build_rpn
from .config import FCISConfig
from .fine_features import FineFeatures, head_input
from .head import DetectionScores, FCISHead, ScoreMaps
from .inference import select_detection_windows, select_detections
from .losses import per_roi_losses, reduce_losses, select_hard, select_random
from .targets import assign_targets, mask_targets

__all__ = ["FCIS"]

#: RoIs per chunk of OHEM's gradient-free scoring pass (bounds its transient memory).
_OHEM_CHUNK = 128


class FCIS(nn.Module):
    """Fully Convolutional Instance-aware Semantic Segmentation (Li et al., CVPR 2017).

    ``model(images, targets)`` in training mode returns the losses ``loss_objectness``,
    ``loss_rpn_box_reg`` (RPN), ``loss_classifier``, ``loss_mask``, ``loss_box_reg`` (RoIs).
    ``model(images)`` in eval mode returns per image a dict with ``boxes`` (N, 4), ``labels``
    (N,) in 1..C, ``scores`` (N,) and ``masks`` (N, 1, H, W) probabilities at the input image's
    size; binarise at ``config.mask_threshold`` (0.4, the paper's value).
    images: list of (3, H, W) float tensors in [0, 1]; targets: list of dicts with ``boxes``
    (G, 4) xyxy, ``labels`` (G,) in 1..C and ``masks`` (G, H, W).
    """

    def __init__(self, config: FCISConfig, backbone: ResNetC4C5) -> None:
        super().__init__()
        self.config = config
        self.transform = RCNNTransform(config.min_size, config.max_size,
                                                  list(config.image_mean), list(config.image_std))
        self.backbone = backbone
        self.rpn = build_rpn(config, backbone.c4_channels)
        # The head reads conv5 (stride 16 dilated, else 32), or at head_stride 8 conv5 merged with conv3.
        self.fine = FineFeatures(backbone.c3_channels, backbone.c5_channels) if config.head_stride == 8 else None
        self.feature_stride = 8 if self.fine is not None else 16 if config.dilate_conv5 else 32
        self.head = FCISHead(config, backbone.c5_channels, self.feature_stride)
        self.box_coder = BoxCoder(config.box_coder_weights)

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        original_sizes = [(img.shape[-2], img.shape[-1]) for img in images]
        batch, targets = self.transform(images, targets)
        c4, c5 = head_input(self.backbone, self.fine, batch.tensors)
        # Anchors and proposals take the features' dtype: keep them float32 under bf16/fp16 autocast.
        rpn_in = c4 if c4.dtype in (torch.float32, torch.float64) else c4.float()
        proposals, rpn_losses = self.rpn(batch, {"0": rpn_in}, targets)
        maps = self.head(c5)
        if self.training:
            return {**rpn_losses, **self.roi_losses(maps, proposals, targets)}
        return self.detect(maps, proposals, batch.image_sizes, original_sizes)

    @torch.no_grad()
    def detect_windows(self, images: list[Tensor], *, score_threshold: float = 0.0) -> list[Iterator[MaskWindow]]:
        """Eval-mode inference with bounded memory: per image, an iterator over its detections with
        ``score >= score_threshold`` (descending), each a :class:`~fcis.models.mask_paste.MaskWindow`
        (mask voted inside its box window only; same values as ``model(images)``'s masks)."""
        original_sizes = [(img.shape[-2], img.shape[-1]) for img in images]
        batch, _ = self.transform(images)
        c4, c5 = head_input(self.backbone, self.fine, batch.tensors)
        rpn_in = c4 if c4.dtype in (torch.float32, torch.float64) else c4.float()
        proposals, _ = self.rpn(batch, {"0": rpn_in})
        rois, probs, scores = self.score_candidates(self.head(c5), proposals, batch.image_sizes)
        mask_probs = scores.lazy_mask_probs()      # only the voting candidates' classes are computed
        out = []
        for i, (size, original) in enumerate(zip(batch.image_sizes, original_sizes)):
            sel = torch.nonzero(rois[:, 0] == i).flatten()
            boxes = resize_boxes(rois[sel, 1:], size, original)
            out.append(select_detection_windows(boxes, probs[sel], mask_probs.select(sel),  # type: ignore[arg-type]
                                                original, self.config,
                                                score_threshold))
        return out

    def roi_losses(self, maps: ScoreMaps, proposals: list[Tensor], targets: list[dict[str, Tensor]]
                   ) -> dict[str, Tensor]:
        """Label the proposals (+ GT), pick the RoIs to learn from (OHEM: the ``ohem_rois`` with
        the highest loss of a gradient-free pass over all; else a random balanced sample), and
        return the reduced RoI losses of those."""
        cfg = self.config
        t = assign_targets([p.detach() for p in proposals], targets, self.box_coder,
                           cfg.roi_fg_iou, cfg.add_gt_to_proposals, cfg.roi_bg_iou_low)
        masks = mask_targets(t, targets, cfg.mask_size, cfg.mask_target_threshold)
        weights = (cfg.cls_loss_weight, cfg.mask_loss_weight, cfg.box_loss_weight)
        if cfg.ohem:
            with torch.no_grad():
                # Per-RoI losses are independent: scored _OHEM_CHUNK RoIs at a time, so that the
                # (RoIs, 2(C+1), P, P) logits of this gradient-free pass never exist all at once
                # (and as inference scores them: each chunk of the gather reduced in the cache).
                parts = []
                for s in range(0, len(t.labels), _OHEM_CHUNK):
                    part = slice(s, s + _OHEM_CHUNK)
                    losses = per_roi_losses(self.head.score_rois_for_detection(maps, t.rois[part]), t.labels[part],
                                            t.box_targets[part], masks[part], cfg.smooth_l1_beta)
                    parts.append(sum(w * loss for w, loss in zip(weights, losses)))
                total: Tensor = torch.cat(parts) if parts else t.rois.new_zeros(0)  # type: ignore[arg-type]
                index = select_hard(total, t.rois[:, 0], cfg.ohem_rois)
        else:
            index = select_random(t.labels, t.rois[:, 0], cfg.ohem_rois, cfg.random_fg_fraction)
        t, masks = t.select(index), masks[index]
        losses = per_roi_losses(self.head.score_rois(maps, t.rois, release_maps=True, labels=t.labels), t.labels,
                                t.box_targets, masks, cfg.smooth_l1_beta)
        return reduce_losses(*losses, t.labels, weights, cfg.mask_loss_normalization,
                             balance_cls=cfg.cls_loss_balance)

    def lr_multipliers(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter name (the official 3× on ``conv_new_1``, and on
        the GroupNorm that follows it with ``norm="gn"``)."""
        mult = self.config.head_lr_mult
        return {f"head.{n}": mult for n, _ in self.head.named_parameters() if n.startswith(("reduce.", "reduce_norm."))}

    def score_candidates(self, maps: ScoreMaps, proposals: list[Tensor], image_sizes: list[tuple[int, int]]
                         ) -> tuple[Tensor, Tensor, DetectionScores]:
        """Score the proposals and, with ``two_pass``, again the boxes they regress to (inference).

        Returns rois (M, 5), class probabilities (M, C+1) and the DetectionScores of all candidates."""
        rois = torch.cat([torch.cat([torch.full_like(p[:, :1], i), p], dim=1)
                          for i, p in enumerate(proposals)])
        if not self.config.two_pass:
            first = self.head.score_rois_for_detection(maps, rois)
            return rois, first.class_logits.softmax(-1), first
        # The refinement needs only the first pass's box deltas (a small k×k assembling); both
        # passes' candidates are then scored in one call (one table, no concatenation of the
        # (2R, 2(C+1), P, P) mask logits).
        refined = self.box_coder.decode_single(self.head.box_deltas(maps, rois), rois[:, 1:])
        for i, size in enumerate(image_sizes):
            sel = rois[:, 0] == i
            refined[sel] = clip_boxes_to_image(refined[sel], size)
        both_rois = torch.cat([rois, torch.cat([rois[:, :1], refined], dim=1)])
        both = self.head.score_rois_for_detection(maps, both_rois)
        return both_rois, both.class_logits.softmax(-1), both

    def detect(self, maps: ScoreMaps, proposals: list[Tensor], image_sizes: list[tuple[int, int]],
               original_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        rois, probs, scores = self.score_candidates(maps, proposals, image_sizes)
        mask_probs = scores.lazy_mask_probs()      # only the voting candidates' classes are computed
        results = []
        for i, (size, original) in enumerate(zip(image_sizes, original_sizes)):
            sel = torch.nonzero(rois[:, 0] == i).flatten()
            boxes = resize_boxes(rois[sel, 1:], size, original)
            # MaskProbs indexes like the (M, C+1, P, P) tensor the annotation names
            results.append(select_detections(boxes, probs[sel], mask_probs.select(sel),  # type: ignore[arg-type]
                                             original, self.config))
        return results
