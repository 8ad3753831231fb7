"""FCIS with the official test-time arithmetic (``FCISConfig(variant="official")``): the model that
weights converted from the official MXNet code (msracver/FCIS ``fcis_coco-0000.params``, or
ChainerCV's npz of it) run in, step for step as ``fcis/core/tester.py`` runs the COCO test
(``experiments/fcis/cfgs/resnet_v1_101_coco_fcis_end2end_ohem.yaml``: TEST.ITER 2, mask merge).

Per image (one at a time: the official batch is one image, and padding a batch would change the
convolutions at the right and bottom borders):

1. input: ``lib/utils/image.py`` resize + transform (:func:`fcis.inference.official_ops.official_input`:
   short side ``min_size``, long side ``max_size`` with the official ``np.round`` check, OpenCV's
   8-bit bilinear resize reproduced bit for bit, RGB minus ``image_mean`` on 0-255);
2. backbone: Caffe-style ResNet v1 (:mod:`fcis.models.caffe_resnet`), conv4 (stride 16) and res5
   dilated (stride 16);
3. RPN and proposals: :mod:`fcis.models.fcis.official_rpn` (2-way softmax, py-faster-rcnn anchors,
   the Python proposal op: 6000 → NMS → 300);
4. ``conv_new_1`` + ReLU, ``fcis_cls_seg`` and the foreground half of ``fcis_bbox``
   (:class:`~fcis.models.fcis.head.FCISHead`'s ``reduce``, ``inside_outside``, ``boxes``);
5. first pass on the 300 proposals: PS-RoI average pooling of the box maps at P×P (21×21: the
   official pools the box maps at the mask size, then averages) → class-agnostic deltas;
   **BoxParser**: deltas × stds (``1 / box_coder_weights`` = 0.2, 0.2, 0.5, 0.5; the official
   ``BoxParser`` applies ``TRAIN.BBOX_STDS`` itself, see fcis/weights/official_layout.py for the
   ``fcis_bbox_*_test`` arrays), decoded with the +1 convention in float64, clipped, float32;
6. both passes' 600 RoIs: PS-RoI average pooling of the inside/outside maps with MXNet's float32
   bin geometry (:func:`fcis.ops.ps_roi_pool_avg.ps_roi_pool_avg`), ChannelOperator ``Group_Max``
   + global mean → class logits → softmax; ``Group_Softmax`` of the top foreground class's
   (inside, outside) pair → its mask (``Score_Pick``: only the top class's mask is kept, and that
   mask votes whatever class the RoI votes for);
7. post-processing (NumPy, :func:`fcis.inference.official_ops.official_detections`): boxes (+1)
   under ``rpn_min_size`` dropped (TEST.MIN_DROP_SIZE equals RPN_MIN_SIZE in both released
   configs), scaled back by ``1 / scale``, per-class NMS ``nms_iou`` on all candidates,
   ``detections_per_img`` kept above ``max(100th score, score_thresh)``, ``cpu_mask_voting`` at
   ``voting_iou`` with masks binarised at ``mask_threshold``, the voted mask's tight box; each
   output mask is the voted P×P mask ``cv2.resize``-d into its rounded box (``mask_voc2coco``).

Outputs keep the library's contract: boxes are pixel-edge xyxy (the official inclusive box
``(x1, y1, x2, y2)`` is ``(x1, y1, x2 + 1, y2 + 1)`` here, so a COCO ``bbox`` width is the
official ``x2 - x1 + 1``); masks are the pasted values, the instance is ``mask >= 0.4``.

Where it is not exact: the ties of a sort (equal scores are ordered by decreasing index where
the official code's NumPy quicksort orders them as it happens to), floating-point rounding
(convolutions, exp and sums in another order: ~1e-6 relative), OpenCV's float mask resize (within
a few ulps), and the proposal op's random padding (module :mod:`.official_rpn`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from ...inference.official_ops import (
    OfficialDetection,
    box_parser,
    official_detections,
    official_input,
    paste_official_mask,
)
from ...ops.ps_roi_pool_avg import ps_roi_pool_avg, summed_area_table
from ..backbone import ResNetC4C5
from ..mask_paste import MaskWindow
from .config import FCISConfig
from .head import ScoreMaps
from .model import FCIS
from .official_rpn import OfficialRPN, clip_inclusive, decode_boxes

__all__ = ["OfficialFCIS", "OfficialCandidates", "official_config"]

#: RoIs pooled at a time (bounds the (R, 2(C+1), P, P) pooled maps and the float64 gathers).
_CHUNK = 50


def official_config(num_classes: int, *, anchor_scales: tuple[float, ...] = (4, 8, 16, 32),
                    min_size: float = 2.0) -> dict:
    """FCISConfig fields of the official test setting (COCO: anchor scales 4-32, RPN and drop
    minimum size 2; VOC: scales 8-32, 16): the ``model_config`` a converted checkpoint records."""
    from ...inference.official_ops import OFFICIAL_PIXEL_MEANS

    return {
        "num_classes": int(num_classes), "variant": "official", "depth": 101, "dilate_conv5": True,
        "frozen_bn": True, "backbone_pretrained": True, "trainable_layers": 3,
        "min_size": 600, "max_size": 1000, "image_mean": OFFICIAL_PIXEL_MEANS, "image_std": (1.0, 1.0, 1.0),
        "anchor_sizes": tuple(int(16 * s) for s in anchor_scales), "aspect_ratios": (0.5, 1.0, 2.0),
        "rpn_channels": 512, "rpn_nms_iou": 0.7, "rpn_pre_nms_top_n_test": 6000, "rpn_post_nms_top_n_test": 300,
        "rpn_min_size": float(min_size), "head_channels": 1024, "group_size": 7, "mask_size": 21,
        "assemble_mode": "average", "box_coder_weights": (5.0, 5.0, 2.0, 2.0), "two_pass": True,
        "score_thresh": 0.001, "nms_iou": 0.3, "detections_per_img": 100, "mask_voting": True,
        "voting_iou": 0.5, "voting_binarize": True, "mask_threshold": 0.4,
    }


@dataclass
class OfficialCandidates:
    """The network's outputs for one image, as the official ``im_detect`` receives them.

    rois (M, 4) float32: both passes' boxes (M = 2R) in the network input's pixels (inclusive);
    class_probs (M, C+1) float32; masks (M, P, P) float32: the foreground probability of each
    RoI's top class; scale: the input scale; input_size: the network input's (h, w)."""

    rois: Tensor
    class_probs: Tensor
    masks: Tensor
    scale: float
    input_size: tuple[int, int]

    def detections(self, cfg: FCISConfig) -> tuple[list[OfficialDetection], tuple[int, int]]:
        """:func:`~fcis.inference.official_ops.official_detections` with ``cfg``'s values."""
        return official_detections(self.rois.float().cpu().numpy(), self.class_probs.float().cpu().numpy(),
                                   self.masks.float().cpu().numpy(), self.scale, self.input_size,
                                   min_drop_size=cfg.rpn_min_size, nms_iou=cfg.nms_iou,
                                   max_per_image=cfg.detections_per_img, voting_iou=cfg.voting_iou,
                                   binary_thresh=cfg.mask_threshold, min_score=cfg.score_thresh)


class OfficialFCIS(FCIS):
    """FCIS whose inference is the official code's (module docstring); same parameters and
    state-dict names as :class:`FCIS` except ``rpn.head.cls_logits``, which has 2A channels
    (background then foreground) instead of A. ``model(images)`` and ``detect_windows`` follow the
    library's contract; training is refused (fine-tune a ``variant="torchvision"`` model)."""

    def __init__(self, config: FCISConfig, backbone: ResNetC4C5) -> None:
        super().__init__(config, backbone)
        if config.variant != "official":
            raise ValueError(f"OfficialFCIS needs variant='official', got {config.variant!r}")
        self.rpn = OfficialRPN(  # type: ignore[assignment]
            backbone.c4_channels, scales=tuple(s / 16 for s in config.anchor_sizes),
            ratios=tuple(config.aspect_ratios), mid_channels=config.rpn_channels,
            pre_nms_top_n=config.rpn_pre_nms_top_n_test, post_nms_top_n=config.rpn_post_nms_top_n_test,
            nms_iou=config.rpn_nms_iou, min_size=config.rpn_min_size)

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training:
            raise ValueError("the official-inference variant of FCIS (variant='official') runs inference only; "
                             "to fine-tune converted weights, train a variant='torchvision' model initialised "
                             "from them (fcis train --init-from)")
        outs = []
        for image in images:
            windows = list(self._windows(image, 0.0))
            height, width = image.shape[-2:]
            masks = image.new_zeros(len(windows), 1, height, width)
            for n, det in enumerate(windows):
                h, w = det.window.shape
                masks[n, 0, det.y0:det.y0 + h, det.x0:det.x0 + w] = det.window
            outs.append({
                "boxes": torch.stack([d.box for d in windows]).to(image.device) if windows
                else image.new_zeros(0, 4),
                "labels": torch.tensor([d.label for d in windows], dtype=torch.int64, device=image.device),
                "scores": torch.tensor([d.score for d in windows], dtype=torch.float32, device=image.device),
                "masks": masks,
            })
        return outs

    @torch.no_grad()
    def detect_windows(self, images: list[Tensor], *, score_threshold: float = 0.0) -> list[Iterator[MaskWindow]]:
        return [self._windows(image, score_threshold) for image in images]

    def _windows(self, image: Tensor, score_threshold: float) -> Iterator[MaskWindow]:
        """The detections of one image with ``score >= score_threshold``, by decreasing score."""
        height, width = int(image.shape[-2]), int(image.shape[-1])
        dets, _ = self.candidates(image).detections(self.config)
        order = sorted(range(len(dets)), key=lambda i: -dets[i].score)    # stable: class order on ties
        device = image.device

        def generate() -> Iterator[MaskWindow]:
            for i in order:
                det = dets[i]
                if det.score < score_threshold:
                    break
                window, x0, y0 = paste_official_mask(det.mask, det.box, height, width)
                h, w = window.shape
                box = torch.tensor([x0, y0, x0 + w, y0 + h], dtype=torch.float32, device=device)
                yield MaskWindow(box, det.label, det.score, torch.from_numpy(window).to(device), x0, y0,
                                 (height, width))
        return generate()

    @torch.no_grad()
    def candidates(self, image: Tensor) -> OfficialCandidates:
        """Steps 1-6 of the module docstring for one (3, H, W) image in [0, 1]."""
        cfg = self.config
        param = next(self.parameters())
        data, scale = official_input(image.detach().float().cpu().numpy(), cfg.min_size, cfg.max_size,
                                     tuple(cfg.image_mean))  # type: ignore[arg-type]
        x = torch.from_numpy(data)[None].to(device=param.device, dtype=param.dtype)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        c4, c5 = self.backbone(x)
        rois = self.rpn(c4.float(), size)                                             # (R, 4) float32
        maps = self.head(c5)
        refined = self.box_parser(rois, self.box_deltas(maps, rois), size)
        both = torch.cat([rois, refined])
        probs, masks = self.score(maps, both)
        return OfficialCandidates(both, probs, masks, scale, size)

    def _pool(self, maps: Tensor, rois: Tensor, table: Tensor | None = None) -> Tensor:
        k, p = self.config.group_size, self.config.mask_size
        rois5 = torch.cat([rois.new_zeros(len(rois), 1), rois], dim=1)
        return ps_roi_pool_avg(maps, rois5, k, (p, p), 1.0 / self.feature_stride, geometry_dtype=torch.float32,
                               table=table)

    def box_deltas(self, maps: ScoreMaps, rois: Tensor) -> Tensor:
        """(R, 4) float32: ``psroipool_bbox`` (P×P bins of the foreground box maps) averaged over the
        P×P grid (``bbox_pred``, channels 4-7 of the official 8)."""
        return self._pool(maps.boxes.float(), rois).mean(dim=(2, 3))

    def box_parser(self, rois: Tensor, deltas: Tensor, size, exportable: bool = False) -> Tensor:
        """``fcis/operator_py/box_parser.py`` (class-agnostic, clipping): deltas × stds (``1 /
        box_coder_weights``; zero means) in float32, the +1 decode, clipped to the input, float32.
        NumPy (:func:`~fcis.inference.official_ops.box_parser`), or PyTorch with ``exportable``."""
        stds = tuple(1.0 / w for w in self.config.box_coder_weights)
        if not exportable:
            out = box_parser(rois.detach().cpu().numpy(), deltas.detach().float().cpu().numpy(), stds,
                             (0.0, 0.0, 0.0, 0.0), int(size[0]), int(size[1]))
            return torch.from_numpy(out).to(rois.device)
        std = torch.tensor(stds, dtype=torch.float32, device=deltas.device)
        return clip_inclusive(decode_boxes(rois, deltas.float() * std), size[0], size[1]).float()

    def score(self, maps: ScoreMaps, rois: Tensor) -> tuple[Tensor, Tensor]:
        """(M, C+1) class probabilities and (M, P, P) top-class foreground probabilities of ``rois``
        (step 6 of the module docstring), ``_CHUNK`` RoIs at a time over one summed-area table."""
        io = maps.inside_outside.float()
        table = summed_area_table(io, self.config.group_size)
        classes, p = self.config.num_classes + 1, self.config.mask_size
        probs, masks = [], []
        for start in range(0, len(rois), _CHUNK):
            pooled = self._pool(io, rois[start:start + _CHUNK], table).view(-1, classes, 2, p, p)
            inside, outside = pooled[:, :, 0], pooled[:, :, 1]      # official channels 2c + 1, 2c
            prob = torch.maximum(inside, outside).mean(dim=(2, 3)).softmax(dim=1)
            top = prob[:, 1:].argmax(dim=1) + 1
            rows = torch.arange(len(top), device=top.device)
            fg, bg = inside[rows, top], outside[rows, top]
            peak = torch.maximum(fg, bg)
            e_fg, e_bg = (fg - peak).exp(), (bg - peak).exp()
            probs.append(prob)
            masks.append(e_fg / (e_bg + e_fg))
        if not probs:
            return io.new_zeros(0, classes), io.new_zeros(0, p, p)
        return torch.cat(probs), torch.cat(masks)


def detections_as_arrays(dets: list[OfficialDetection]) -> dict[str, np.ndarray]:
    """(labels, scores, inclusive boxes, P×P masks) of a detection list, as arrays (tests, tools)."""
    return {"labels": np.array([d.label for d in dets], dtype=np.int64),
            "scores": np.array([d.score for d in dets], dtype=np.float32),
            "boxes": np.array([d.box for d in dets], dtype=np.float32).reshape(-1, 4),
            "masks": np.array([d.mask for d in dets], dtype=np.float32).reshape(len(dets), *(
                dets[0].mask.shape if dets else (0, 0)))}
