"""Typed configuration of FCIS. Every default is the paper's value (docs/ARCHITECTURE.md §5.1) unless noted."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model_config import TwoStageConfig


@dataclass
class FCISConfig(TwoStageConfig):
    """Configuration of the FCIS network (the shared fields: :class:`~fcis.models.model_config.ModelConfig`).

    ``num_classes`` counts foreground classes only; label 0 is background internally, and the
    model predicts labels in 1..num_classes.
    """

    num_classes: int = 80

    # Backbone: ResNet with conv5 dilated (stride 16 instead of 32).
    depth: int = 101
    dilate_conv5: bool = True
    # The ResNet's arrangement: "torchvision" (v1.5: a stage's stride in its first block's 3×3, the
    # stem's max pool padded) or "caffe" (v1 as the official MXNet/Caffe ResNet: the stride in the
    # first 1×1, MXNet's 3×3/2 max pool without padding in ceil mode; fcis/models/caffe_resnet.py).
    # Same parameters. "caffe" is what weights converted from the official code were trained in,
    # and what a model fine-tuned from them keeps (fcis train --init-from carries it over); the
    # official variant always runs it. Needs a Bottleneck ResNet (depth >= 50).
    resnet_style: str = field(default="torchvision", metadata={"architecture": True})
    # Stages of the ResNet that train, counted from the top (5 = all). The original freezes
    # conv1 and res2 (3 trainable); with a random backbone every stage trains.
    trainable_layers: int = 3
    # Frozen BatchNorm (statistics and affine) as the original; ignored (plain BatchNorm) for a
    # randomly initialised backbone, whose statistics are meaningless when frozen.
    frozen_bn: bool = True
    # Set by the builders when ImageNet weights are loaded; decides frozen BN and frozen stages,
    # so that a checkpoint rebuilds the same layers without the weights file.
    backbone_pretrained: bool = False
    # "bn": BatchNorm in the ResNet (above), none in the head (the paper's). "gn": GroupNorm (32
    # groups) in the ResNet and after the head's 1×1 reduce conv, random weights only
    # (fcis/models/norm.py). The random-init recipe chooses it (fcis/engine/recipe.py).
    norm: str = "bn"

    # Input resizing (short side, long side limit) and normalisation (ImageNet statistics).
    min_size: int = 600
    max_size: int = 1000
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    # RPN on conv4. COCO anchors: base 16 × scales (4, 8, 16, 32); VOC uses (128, 256, 512).
    anchor_sizes: tuple[int, ...] = (64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_channels: int = 512
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_nms_iou: float = 0.7
    rpn_pre_nms_top_n_train: int = 6000
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 6000
    rpn_post_nms_top_n_test: int = 300
    # As the official code: in training, anchors crossing the image border by more than this many
    # pixels are ignored (neither foreground nor background; None keeps them all, torchvision's
    # behaviour), and proposals with a side under ``rpn_min_size`` input pixels are dropped
    # (official: 2 for COCO, 16 for VOC).
    rpn_allowed_border: int | None = 0
    rpn_min_size: float = 2.0

    # Stride of the head's score maps: 16, the paper's (conv5, dilated); 8, conv5 upsampled 2× plus
    # a 1×1 projection of conv3 (fcis/models/fcis/fine_features.py), finer maps for small objects
    # and mask detail at about 4× the head's cost. Needs dilate_conv5.
    head_stride: int = field(default=16, metadata={"architecture": True})

    # Head: 1×1 conv to 1024, then 2·k²·(C+1) inside/outside maps and 4·k² box maps.
    head_channels: int = 1024
    group_size: int = 7            # k: k×k relative positions
    mask_size: int = 21            # P: side of the assembled mask
    # Samples per cell and axis in the assembling (RoIAlign's sampling ratio); <= 0 is adaptive.
    # Not a paper number: 2, as torchvision's RoI heads, keeps the cost fixed and export simple.
    sampling_ratio: int = 2
    # "bilinear": RoIAlign-style samples per cell (above). "average": the official PS-RoI pooling,
    # the mean over the integer feature cells each bin touches (RoI corners rounded to pixels).
    # Bilinear by default: measured in docs/REPRODUCING.md (better mask AP from scratch, cheaper).
    assemble_mode: str = "bilinear"
    # Learning-rate multiplier of the 1×1 conv to ``head_channels`` (official ``conv_new_1``: 3×).
    head_lr_mult: float = 3.0
    # "joint": detection scores from max(inside, outside), as the paper. "separate": an extra set
    # of k²·(C+1) position-sensitive detection maps (the paper's "separate score maps" ablation).
    score_maps: str = "joint"

    # RoI training.
    roi_fg_iou: float = 0.5
    # RoIs whose best IoU with a GT box is below this are not used (background is IoU in
    # [roi_bg_iou_low, roi_fg_iou)); official: 0 for COCO, 0.1 for VOC (the paper-voc recipe).
    roi_bg_iou_low: float = 0.0
    add_gt_to_proposals: bool = True
    ohem: bool = True
    ohem_rois: int = 128           # RoIs kept (highest loss) of all proposals + GT per image
    random_fg_fraction: float = 0.25   # foreground share when OHEM is off (random sampling)
    box_coder_weights: tuple[float, float, float, float] = (5.0, 5.0, 2.0, 2.0)  # 1 / (0.2, 0.2, 0.5, 0.5)
    mask_target_threshold: float = 0.4
    cls_loss_weight: float = 1.0
    # Official weights [1, 10, 1]: the per-pixel-mean mask loss × 10, summed over the selected
    # foreground RoIs and divided by all selected RoIs ("rois": grad_scale 10/128 with OHEM); OHEM
    # ranks RoIs by cls + 10·mask + box. "foreground" divides by the foreground RoIs instead.
    mask_loss_weight: float = 10.0
    mask_loss_normalization: str = "rois"
    # Not the paper's: the classification loss as the mean over foreground RoIs and the mean over
    # background RoIs, half each (the paper: the mean over all). The random-init recipe sets it:
    # from scratch the plain mean leaves every foreground RoI classified as background for
    # hundreds of iterations (benchmarks/DEFAULTS.md).
    cls_loss_balance: bool = False
    box_loss_weight: float = 1.0
    smooth_l1_beta: float = 1.0

    # Inference.
    two_pass: bool = True          # re-run the head on the refined boxes (600 candidates)
    score_thresh: float = 0.001
    nms_iou: float = 0.3
    detections_per_img: int = 100
    mask_voting: bool = True
    voting_iou: float = 0.5
    # Voting averages each candidate's mask binarised at ``mask_threshold`` (official mv_kernel.cu)
    # when True, or its probabilities when False.
    voting_binarize: bool = True
    # Binarisation threshold of the output masks (probabilities): mask >= 0.4 is the instance.
    # The tight box of the voted mask is taken at this threshold too.
    mask_threshold: float = 0.4

    # Whose arithmetic runs inference. "torchvision": this library's (torchvision's ResNet v1.5,
    # RPN and anchors, the assembling of ``assemble_mode``, ``select_detections``); it trains.
    # "official": the test-time arithmetic of the official MXNet code (msracver/FCIS), for weights
    # converted by ``fcis convert weights``: Caffe-style ResNet v1, the official input transform
    # (``image_mean`` are then RGB pixel means on 0-255, ``image_std`` ones), py-faster-rcnn
    # anchors, a 2-way softmax RPN and its proposal op, PS-RoI average pooling, two passes, the
    # official per-class NMS, mask voting and mask pasting. Inference only; every step is listed in
    # fcis/models/fcis/official.py. Recorded in checkpoints and ONNX files like every field.
    variant: str = "torchvision"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.roi_bg_iou_low < self.roi_fg_iou:
            raise ValueError(f"roi_bg_iou_low must be in [0, roi_fg_iou), got {self.roi_bg_iou_low}")
        if self.mask_size < self.group_size:
            raise ValueError(f"mask_size ({self.mask_size}) must be >= group_size ({self.group_size})")
        if self.assemble_mode not in ("bilinear", "average"):
            raise ValueError(f"assemble_mode must be 'bilinear' or 'average', got {self.assemble_mode!r}")
        if self.mask_loss_normalization not in ("rois", "foreground"):
            raise ValueError("mask_loss_normalization must be 'rois' or 'foreground', "
                             f"got {self.mask_loss_normalization!r}")
        if self.score_maps not in ("joint", "separate"):
            raise ValueError(f"score_maps must be 'joint' or 'separate', got {self.score_maps!r}")
        if self.head_stride not in (8, 16):
            raise ValueError(f"head_stride must be 8 or 16, got {self.head_stride}")
        if self.head_stride == 8 and not self.dilate_conv5:
            raise ValueError("head_stride=8 needs dilate_conv5=True (conv5 at stride 16, upsampled 2×)")
        if self.resnet_style not in ("torchvision", "caffe"):
            raise ValueError(f"resnet_style must be 'torchvision' or 'caffe', got {self.resnet_style!r}")
        if self.resnet_style == "caffe" and self.depth < 50:
            raise ValueError(f"resnet_style='caffe' needs a Bottleneck ResNet (depth >= 50), got depth {self.depth}")
        if self.variant not in ("torchvision", "official"):
            raise ValueError(f"variant must be 'torchvision' or 'official', got {self.variant!r}")
        if self.variant == "official":
            wrong = {name: getattr(self, name) for name, want in OFFICIAL_FIXED.items() if getattr(self, name) != want}
            if self.depth < 50:
                wrong["depth"] = self.depth
            if wrong:
                raise ValueError(f"variant='official' runs the official arithmetic, which needs "
                                 f"{ {k: OFFICIAL_FIXED.get(k, '>= 50') for k in wrong} }; got {wrong}")


#: Fields whose value the official variant fixes (the official test arithmetic has no other).
OFFICIAL_FIXED: dict[str, object] = {
    "dilate_conv5": True, "head_stride": 16, "assemble_mode": "average", "score_maps": "joint", "two_pass": True,
    "mask_voting": True, "voting_binarize": True, "image_std": (1.0, 1.0, 1.0), "frozen_bn": True,
}
