"""The official FCIS parameters (msracver/FCIS MXNet names and layouts) as an fcis state dict.

One mapping serves both sources: :func:`fcis.weights.mxnet_params.read_mxnet_params` returns the
official names of a ``.params`` file, :func:`fcis.weights.chainercv_npz.read_chainercv_fcis_npz`
turns ChainerCV's npz back into them.

==========================================  ==========================================  ==========
official (``resnet_v1_101_fcis.py``)         fcis (``FCISConfig(variant="official")``)    layout
==========================================  ==========================================  ==========
``conv1_weight``                             ``backbone.body.conv1.weight``               same
``bn_conv1_{gamma,beta}``                    ``backbone.body.bn1.{weight,bias}``          same
``bn_conv1_moving_{mean,var}``               ``backbone.body.bn1.running_{mean,var}``     same
``res{S}{B}_branch2{a,b,c}_weight``          ``...layer{S-1}.{i}.conv{1,2,3}.weight``     same
``bn{S}{B}_branch2{a,b,c}_*``                ``...layer{S-1}.{i}.bn{1,2,3}.*``            same
``res{S}a_branch1_weight``, ``bn{S}a_branch1_*``  ``...layer{S-1}.0.downsample.{0,1}.*``  same
``rpn_conv_3x3_{weight,bias}``               ``rpn.head.conv.*``                          same
``rpn_cls_score_{weight,bias}``              ``rpn.head.cls_logits.*``                    same (2A: background, then foreground)
``rpn_bbox_pred_{weight,bias}``              ``rpn.head.bbox_pred.*``                     same (4A: per anchor dx, dy, dw, dh)
``conv_new_1_{weight,bias}``                 ``head.reduce.*``                            same
``fcis_cls_seg_{weight,bias}``               ``head.inside_outside.*``                    inside/outside swapped
``fcis_bbox_{weight,bias}``                  ``head.boxes.*``                             foreground half
==========================================  ==========================================  ==========

``S`` is the stage 2..5 (``layer1``..``layer3`` under ``backbone.body``, ``layer4`` under
``backbone``), ``B`` the block: ``a, b, c, ...`` (ResNet-50; stages 2 and 5 of ResNet-101/152)
or ``a, b1, b2, ...`` (stages 3 and 4 of ResNet-101/152), block ``i`` in that order.

Permutations, with k = 7 (k² = 49 positions) and C+1 classes (81 for COCO):

- ``fcis_cls_seg``: (2·k²·(C+1), 1024, 1, 1), channel ``(2c + s)·k² + p`` (PSROIPooling's
  ``(ctop·k + gh)·k + gw`` with ``ctop = 2c + s``; ChannelOperator groups the ``C+1`` classes as
  consecutive channel pairs). The official ``seg_pred[:, 1]`` is the foreground: ``s = 1`` is the
  inside score, ``s = 0`` the outside. fcis's ``head.inside_outside`` has the same layout with
  ``s = 0`` inside: viewed as (C+1, 2, k², 1024) its axis 1 is reversed (weight and bias alike).
- ``fcis_bbox``: (2·4·k², 1024, 1, 1), channel ``(4j + d)·k² + p`` for the class-agnostic
  "classes" j = 0 (background, never read) and j = 1 (the ``BoxParser`` reads deltas 4..7), delta
  d = dx, dy, dw, dh. fcis keeps j = 1: channels ``[4k², 8k²)`` become ``head.boxes`` (4·k²,
  layout ``d·k² + p``), unchanged.

``fcis_bbox_weight_test`` / ``fcis_bbox_bias_test``, which the official trainer's checkpoint
callback also stores (``fcis_bbox_*`` times ``TRAIN.BBOX_STDS``, plus the means), are not needed
and are skipped: the official evaluation (``fcis/test.py``, ``load_param(process=False)``) uses
``fcis_bbox_*`` and its ``BoxParser`` applies the stds, as fcis does (``box_coder_weights``).
(The official ``demo.py`` loads with ``process=True``, which puts the ``_test`` arrays in place of
``fcis_bbox_*`` while its ``BoxParser`` still applies the stds; to reproduce that, rename them
before calling :func:`official_to_fcis`.) ``fc1000_*`` (ImageNet classifier) is skipped by
:func:`official_to_fcis` and kept as ``fc.*`` by :func:`official_backbone_state_dict`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["official_to_fcis", "official_backbone_state_dict", "official_backbone_names",
           "fcis_to_official", "is_backbone_only"]

_BN_LEAVES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
_BRANCH = {"branch2a": ("conv1", "bn1"), "branch2b": ("conv2", "bn2"), "branch2c": ("conv3", "bn3"),
           "branch1": ("downsample.0", "downsample.1")}
_BLOCKS_BY_DEPTH = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_SKIPPED = ("fcis_bbox_weight_test", "fcis_bbox_bias_test")
_HEAD = ("rpn_conv_3x3", "rpn_cls_score", "rpn_bbox_pred", "conv_new_1", "fcis_cls_seg", "fcis_bbox")


def _block_names(depth: int, stage: int, count: int) -> list[str]:
    """Official block names of a stage: letters, or ``a, b1, b2, ...`` for the long stages of
    ResNet-101/152 (MSRA's Caffe models' naming, kept by the official MXNet symbol)."""
    if depth >= 101 and stage in (3, 4):
        return ["a"] + [f"b{i}" for i in range(1, count)]
    return [chr(ord("a") + i) for i in range(count)]


def official_backbone_names(depth: int = 101) -> dict[str, str]:
    """Official backbone name -> torchvision ResNet state-dict name (``conv1.weight``,
    ``layer1.0.bn1.running_mean``, ...) of a ResNet-``depth`` v1 (50, 101, 152)."""
    if depth not in _BLOCKS_BY_DEPTH:
        raise ValueError(f"the official ResNet v1 naming is known for depths 50, 101, 152, not {depth}")
    out = {"conv1_weight": "conv1.weight"}
    out.update({f"bn_conv1_{leaf}": f"bn1.{ours}" for leaf, ours in _BN_LEAVES.items()})
    for s, count in enumerate(_BLOCKS_BY_DEPTH[depth], start=2):
        for i, block in enumerate(_block_names(depth, s, count)):
            for branch, (conv, bn) in _BRANCH.items():
                if branch == "branch1" and i > 0:
                    continue
                prefix = f"layer{s - 1}.{i}"
                out[f"res{s}{block}_{branch}_weight"] = f"{prefix}.{conv}.weight"
                for leaf, ours in _BN_LEAVES.items():
                    out[f"bn{s}{block}_{branch}_{leaf}"] = f"{prefix}.{bn}.{ours}"
    return out


def _depth_of(params: Mapping[str, np.ndarray]) -> int:
    """ResNet depth from the number of res4 blocks present (6: 50, 23: 101, 36: 152)."""
    blocks = {m.group(1) for m in (re.match(r"^res4([a-z]\d*)_branch2a_weight$", n) for n in params) if m}
    for depth, counts in _BLOCKS_BY_DEPTH.items():
        if len(blocks) == counts[2]:
            return depth
    raise ValueError(f"cannot tell the ResNet depth: {len(blocks)} res4 blocks (res4*_branch2a_weight) found; "
                     "the official ResNet v1 has 6 (ResNet-50), 23 (101) or 36 (152)")


def is_backbone_only(params: Mapping[str, np.ndarray]) -> bool:
    """Whether ``params`` hold a backbone (an ImageNet ResNet v1, e.g. ``resnet_v1_101-0000.params``)
    without any of the FCIS head's parameters."""
    return "conv1_weight" in params and not any(n.startswith(_HEAD) for n in params)


def _as_tensor(name: str, value: np.ndarray) -> torch.Tensor:
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise ValueError(f"parameter {name!r}: dtype {arr.dtype} is not floating point")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _check_names(params: Mapping[str, np.ndarray], expected: set[str], skipped: set[str], what: str) -> None:
    missing = sorted(expected - set(params))
    unknown = sorted(set(params) - expected - skipped)
    if missing:
        raise ValueError(f"{what}: parameter {missing[0]!r} is missing ({len(missing)} missing in all"
                         + (f", e.g. {', '.join(missing[1:4])}" if len(missing) > 1 else "") + ")")
    if unknown:
        raise ValueError(f"{what}: unknown parameter {unknown[0]!r} (not in the official ResNet v1 FCIS"
                         + (f"; {len(unknown)} unknown, e.g. {', '.join(unknown[1:4])}" if len(unknown) > 1 else "")
                         + ")")


def official_backbone_state_dict(params: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """torchvision-ResNet-named state dict (float32) of an official ResNet v1 backbone: an
    ImageNet ``resnet_v1_101-0000.params`` (``fc1000_*`` becomes ``fc.*``) or the backbone part of
    a full FCIS file (the head's parameters are ignored). Usable as ``--weights-backbone``; it is
    the Caffe-style ResNet v1 (the official variant runs it as such, a torchvision-variant model
    would run these weights with torchvision's stride placement). A missing backbone parameter,
    an unknown one, or a shape that differs from torchvision's ResNet is a ValueError naming it."""
    depth = _depth_of(params)
    names = official_backbone_names(depth)
    head = {n for n in params if n.startswith(_HEAD)}
    fc = {n for n in params if n.startswith("fc1000_")}
    _check_names(params, set(names), head | fc | set(_SKIPPED), f"official ResNet-{depth} backbone")
    from torchvision.models import resnet

    with torch.device("meta"):
        reference = getattr(resnet, f"resnet{depth}")().state_dict()
    out = {}
    for name, ours in names.items():
        out[ours] = _checked(name, params[name], tuple(reference[ours].shape))
    for leaf in ("weight", "bias"):
        if f"fc1000_{leaf}" in params:
            out[f"fc.{leaf}"] = _checked(f"fc1000_{leaf}", params[f"fc1000_{leaf}"], tuple(reference[f"fc.{leaf}"].shape))
    return out


def _checked(name: str, value: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    arr = np.asarray(value)
    if tuple(arr.shape) != shape:
        raise ValueError(f"parameter {name!r} has shape {tuple(arr.shape)}, expected {shape}")
    return _as_tensor(name, arr)


def _swap_inside_outside(value: np.ndarray, classes: int) -> np.ndarray:
    """(2·k²·classes, ...) channels ``(2c + s)·k² + p`` -> the same with s reversed."""
    return value.reshape(classes, 2, -1, *value.shape[1:])[:, ::-1].reshape(value.shape)


def official_to_fcis(params: Mapping[str, np.ndarray], *, num_classes: int | None = None
                     ) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """``(model_name, model config, state_dict)`` of an official FCIS parameter set (official
    names without ``arg:``/``aux:``), for ``BUILDERS[model_name](**config)`` with
    ``variant="official"`` (:func:`fcis.models.fcis.official.official_config`).

    The class count comes from ``fcis_cls_seg`` (``num_classes``, if given, must agree); the
    anchors from ``rpn_cls_score``: 12 per position is the released COCO setting (scales 4-32,
    minimum size 2), 9 the VOC/SBD one (scales 8-32, minimum size 16). A missing parameter, an
    unknown one, or a shape that does not fit is a ValueError naming the parameter; a
    backbone-only file is refused with a pointer to :func:`official_backbone_state_dict`."""
    from fcis.models.fcis.official import official_config

    if is_backbone_only(params):
        raise ValueError("these are the parameters of a backbone only (an ImageNet ResNet, no FCIS head): "
                         "convert them with official_backbone_state_dict (fcis convert weights writes a "
                         "--weights-backbone file for them)")
    for name in ("fcis_cls_seg_weight", "fcis_bbox_weight", "rpn_cls_score_weight"):
        if name not in params:
            raise ValueError(f"parameter {name!r} is missing (not a full official FCIS parameter set)")
    seg = np.asarray(params["fcis_cls_seg_weight"])
    box = np.asarray(params["fcis_bbox_weight"])
    if box.ndim != 4 or box.shape[0] % 8:
        raise ValueError(f"parameter 'fcis_bbox_weight' has shape {box.shape}, expected (8·k², 1024, 1, 1)")
    k2 = box.shape[0] // 8
    k = int(round(k2 ** 0.5))
    if k * k != k2 or seg.ndim != 4 or seg.shape[0] % (2 * k2):
        raise ValueError(f"parameter 'fcis_cls_seg_weight' has shape {seg.shape}, which is not 2·k²·(C+1) "
                         f"channels for the k² = {k2} positions of 'fcis_bbox_weight' {box.shape}")
    classes = seg.shape[0] // (2 * k2)
    if num_classes is not None and num_classes + 1 != classes:
        raise ValueError(f"parameter 'fcis_cls_seg_weight' has {classes} classes (background included), "
                         f"but num_classes={num_classes} was given")
    anchors = np.asarray(params["rpn_cls_score_weight"]).shape[0] // 2
    if anchors == 12:
        setting = official_config(classes - 1)
    elif anchors == 9:
        setting = official_config(classes - 1, anchor_scales=(8, 16, 32), min_size=16.0)
    else:
        raise ValueError(f"parameter 'rpn_cls_score_weight' has {2 * anchors} channels: {anchors} anchors per "
                         "position, but the official settings have 12 (COCO) or 9 (VOC)")
    depth = _depth_of(params)
    setting.update(depth=depth, group_size=k)
    backbone = official_backbone_names(depth)
    head = {f"{n}_{leaf}": n for n in _HEAD for leaf in ("weight", "bias")}
    _check_names(params, set(backbone) | set(head), set(_SKIPPED) | {n for n in params if n.startswith("fc1000_")},
                 "official FCIS")

    from fcis.models import BUILDERS

    model_name = f"fcis_resnet{depth}"
    with torch.device("meta"):
        reference = BUILDERS[model_name](**setting).state_dict()
    ours_of = {name: ("backbone.layer4." + ours[len("layer4."):] if ours.startswith("layer4.") else "backbone.body."
                      + ours) for name, ours in backbone.items()}
    ours_of.update({
        "rpn_conv_3x3_weight": "rpn.head.conv.weight", "rpn_conv_3x3_bias": "rpn.head.conv.bias",
        "rpn_cls_score_weight": "rpn.head.cls_logits.weight", "rpn_cls_score_bias": "rpn.head.cls_logits.bias",
        "rpn_bbox_pred_weight": "rpn.head.bbox_pred.weight", "rpn_bbox_pred_bias": "rpn.head.bbox_pred.bias",
        "conv_new_1_weight": "head.reduce.weight", "conv_new_1_bias": "head.reduce.bias",
        "fcis_cls_seg_weight": "head.inside_outside.weight", "fcis_cls_seg_bias": "head.inside_outside.bias",
        "fcis_bbox_weight": "head.boxes.weight", "fcis_bbox_bias": "head.boxes.bias",
    })
    state = {}
    for name, ours in ours_of.items():
        value = np.asarray(params[name])
        if name.startswith("fcis_cls_seg_"):
            if value.shape[:1] != seg.shape[:1]:
                raise ValueError(f"parameter {name!r} has shape {value.shape}, expected {seg.shape[:1]} channels")
            value = _swap_inside_outside(value, classes)
        elif name.startswith("fcis_bbox_"):
            if value.shape[:1] != box.shape[:1]:
                raise ValueError(f"parameter {name!r} has shape {value.shape}, expected {box.shape[:1]} channels")
            value = value[4 * k2:]
        state[ours] = _checked(name, value, tuple(reference[ours].shape))
    missing = sorted(set(reference) - set(state))
    if missing:   # a parameter of the fcis model that no official name fills (a mapping error, not the file's)
        raise RuntimeError(f"official_to_fcis fills no value for {missing[:3]}")
    return model_name, setting, state


def fcis_to_official(state: Mapping[str, torch.Tensor], *, depth: int = 101) -> dict[str, np.ndarray]:
    """The inverse of :func:`official_to_fcis`'s mapping (tests, and writing an fcis model in the
    official layout): official name -> float32 array. The background half of ``fcis_bbox``, which
    fcis does not keep, is written as zeros."""
    names = official_backbone_names(depth)
    out: dict[str, np.ndarray] = {}
    for name, ours in names.items():
        key = "backbone.layer4." + ours[len("layer4."):] if ours.startswith("layer4.") else "backbone.body." + ours
        out[name] = state[key].detach().cpu().numpy().astype(np.float32)
    pairs = {"rpn_conv_3x3": "rpn.head.conv", "rpn_cls_score": "rpn.head.cls_logits",
             "rpn_bbox_pred": "rpn.head.bbox_pred", "conv_new_1": "head.reduce",
             "fcis_cls_seg": "head.inside_outside", "fcis_bbox": "head.boxes"}
    for official, ours in pairs.items():
        for leaf in ("weight", "bias"):
            value = state[f"{ours}.{leaf}"].detach().cpu().numpy().astype(np.float32)
            if official == "fcis_cls_seg":
                classes = value.shape[0] // (2 * state["head.boxes.weight"].shape[0] // 4)
                value = _swap_inside_outside(value, classes)
            elif official == "fcis_bbox":
                value = np.concatenate([np.zeros_like(value), value])
            out[f"{official}_{leaf}"] = np.ascontiguousarray(value)
    return out
