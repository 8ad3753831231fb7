"""The settings every model family shares, under one name each (FCIS's names are the vocabulary).

:class:`ModelConfig` is the base of ``FCISConfig``, ``MaskRCNNConfig`` and ``InstanceFCNConfig``;
:class:`TwoStageConfig` adds what the two families with an RPN and RoI heads share (FCIS and
Mask R-CNN). So ``--set nms_iou=0.4`` means the same for every model, and a setting a family does
not have (``rpn_nms_iou`` for InstanceFCN) is refused as an unknown option.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from operator import attrgetter
from typing import Any, ClassVar, Mapping, TypeVar

from ..config_io import dataclass_from_dict
from .norm import check_norm

__all__ = ["ModelConfig", "TwoStageConfig"]

C = TypeVar("C", bound="ModelConfig")


@dataclass
class ModelConfig:
    """Fields every family has, with one meaning. Each family restates every field with its own
    default (so its file lists all of its defaults); the defaults here are only placeholders.

    - ``num_classes``: foreground classes (label 0 is background internally; labels 1..C out).
    - ``depth``, ``trainable_layers``, ``backbone_pretrained``: the ResNet, its training stages
      counted from the top (5 = all) and whether ImageNet weights were loaded (set by builders).
    - ``norm``: the normalisation layers (:mod:`fcis.models.norm`). ``"bn"``: BatchNorm in the
      ResNet (frozen with ImageNet weights, batch statistics from random weights), none in the
      heads; ``"gn"``: GroupNorm (32 groups) in the ResNet and the heads, as the from-scratch
      detectors of "Rethinking ImageNet Pre-training"; random initialisation only. Configs saved
      before the field existed load as ``"bn"``.
    - ``min_size``, ``max_size``: input resizing (short side, long-side limit), in pixels;
      ``image_mean``, ``image_std``: input normalisation.
    - ``score_thresh``: candidates scoring at most this are dropped before NMS.
    - ``nms_iou``: IoU above which NMS suppresses a lower-scoring detection. FCIS and Mask R-CNN:
      box NMS per class; InstanceFCN: class-agnostic NMS on the masks (its ``nms_resolution``).
    - ``detections_per_img``: detections kept per image after NMS.
    - ``mask_threshold``: output mask probabilities ``>=`` this are the instance.
    - ``class_agnostic``: the model predicts one class "object" (InstanceFCN's segment
      proposals) and is evaluated as such. Fixed by the family: recorded in every config, and a
      value other than the family's is refused.

    ``renamed`` maps a family's former field names to the current ones: :meth:`current_names`
    translates them wherever a config is built from a dict (builders, hence checkpoints and
    ``--set``; :meth:`from_dict`), and each former name stays readable as a read-only attribute.
    """

    num_classes: int = 1
    depth: int = 50
    trainable_layers: int = 3
    backbone_pretrained: bool = False
    norm: str = "bn"
    min_size: int = 800
    max_size: int = 1333
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    score_thresh: float = 0.05
    nms_iou: float = 0.5
    detections_per_img: int = 100
    mask_threshold: float = 0.5
    class_agnostic: bool = False

    #: Former field name -> current name (a family's configs saved before the rename).
    renamed: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for old, new in cls.renamed.items():   # old names stay readable (not settable)
            setattr(cls, old, property(attrgetter(new), doc=f"Former name of ``{new}`` (read-only)."))

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 foreground class, got {self.num_classes}")
        fixed = next(f.default for f in dataclasses.fields(self) if f.name == "class_agnostic")
        if self.class_agnostic != fixed:
            raise ValueError(f"class_agnostic is fixed by the model family: {type(self).__name__} has "
                             f"class_agnostic={fixed}, got {self.class_agnostic}")
        self.image_mean = (*self.image_mean,)
        self.image_std = (*self.image_std,)
        check_norm(self.norm, self.backbone_pretrained, type(self).__name__)

    @classmethod
    def current_names(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with every former field name (``renamed``) replaced by the current one; giving
        both names of one field is an error."""
        out = dict(data)
        for old, new in cls.renamed.items():
            if old in out:
                if new in out:
                    raise ValueError(f"{cls.__name__}: {old!r} is the former name of {new!r}; give only {new!r}")
                out[new] = out.pop(old)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """The config of a plain dict (a checkpoint's, ``config.json``'s), former names accepted;
        keys that are no field are refused, naming them."""
        return dataclass_from_dict(cls, cls.current_names(data))


@dataclass
class TwoStageConfig(ModelConfig):
    """Fields of the families with a region proposal network and RoI heads (FCIS, Mask R-CNN);
    InstanceFCN scores sliding windows and has none of them.

    - ``anchor_sizes``, ``aspect_ratios``: RPN anchors (Mask R-CNN: one size per FPN level).
    - ``rpn_fg_iou``, ``rpn_bg_iou``: anchors at IoU >= fg are positive, < bg negative.
    - ``rpn_batch_size_per_image``, ``rpn_positive_fraction``: anchors sampled for the RPN loss.
    - ``rpn_nms_iou``: NMS IoU among proposals; ``rpn_pre_nms_top_n_{train,test}`` and
      ``rpn_post_nms_top_n_{train,test}``: proposals kept before and after it.
    - ``roi_fg_iou``: RoIs at IoU >= this with a ground-truth box are foreground.
    - ``box_coder_weights``: (wx, wy, ww, wh) of the box regression targets.
    """

    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_nms_iou: float = 0.7
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    roi_fg_iou: float = 0.5
    box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.anchor_sizes = (*self.anchor_sizes,)   # lists (JSON, --set) back to tuples
        self.aspect_ratios = (*self.aspect_ratios,)
        self.box_coder_weights = (*self.box_coder_weights,)  # type: ignore[assignment]
