"""ChainerCV's FCIS ``.npz`` files back to the official MXNet names and layouts (NumPy only).

ChainerCV's ``examples/fcis/mxnet2npz.py`` copies each array of the official ``.params`` into its
``FCISResNet101`` (``chainercv.experimental.links``), saved by ``chainer.serializers.save_npz``
as ``link/path/param`` keys. :func:`read_chainercv_fcis_npz` undoes it key by key:

=========================================== =============================== =======================================
ChainerCV key                                official name                   layout change undone
=========================================== =============================== =======================================
``extractor/conv1/conv/W``                   ``conv1_weight``                none (both take RGB input: the official
                                                                             ``transform`` turns OpenCV's BGR to RGB)
``extractor/conv1/bn/{gamma,beta}``          ``bn_conv1_{gamma,beta}``       none
``extractor/conv1/bn/{avg_mean,avg_var}``    ``bn_conv1_moving_{mean,var}``  none
``extractor/resS/B/C/conv/W``                ``resSB'_X_weight``             none
``extractor/resS/B/C/bn/...``                ``bnSB'_X_...``                 none
``rpn/conv1/{W,b}``                          ``rpn_conv_3x3_{weight,bias}``  none
``rpn/score/{W,b}``                          ``rpn_cls_score_{weight,bias}`` ChainerCV: channel 2a + s (anchor a,
                                                                             s = 0 background, 1 object); official:
                                                                             s·A + a (all backgrounds first)
``rpn/loc/{W,b}``                            ``rpn_bbox_pred_{weight,bias}`` per anchor (dy, dx, dh, dw) ->
                                                                             official (dx, dy, dw, dh)
``head/conv1/{W,b}``                         ``conv_new_1_{weight,bias}``    none
``head/cls_seg/{W,b}``                       ``fcis_cls_seg_{weight,bias}``  none: (2c + s)·k² + p in both
``head/ag_loc/{W,b}``                        ``fcis_bbox_{weight,bias}``     channel (r·4 + coord)·k² + p with coords
                                                                             (dy, dx, dh, dw) -> official (dx, dy, dw, dh)
=========================================== =============================== =======================================

Blocks: ChainerCV names the blocks of a stage ``a, b1, b2, ...``; the official ResNet-101 names
res2 and res5 (three blocks) ``a, b, c`` and res3, res4 ``a, b1, ..., bN`` (mxnet2npz maps ``b`` ->
``b1`` and ``c`` -> ``b2``). Convolutions: ``residual_conv`` is ``branch1``, ``conv1..3`` are
``branch2a..c``. Chainer's BatchNorm counter ``N`` has no official counterpart and is dropped.

The box branch: ``mxnet2npz.py`` skips the ``*_test`` arrays of the official file (the box
weights pre-multiplied by the regression stds, written by the official ``do_checkpoint``) unless
run with ``--process``; ChainerCV's model multiplies its deltas by the stds (0.2, 0.2, 0.5, 0.5)
itself, so its files hold the trained ``fcis_bbox_*``, which the official test (``load_param(...,
process=False)``) also uses. They come back under those names.

ChainerCV's own trainings (``fcis_resnet101_{sbd,coco}_trained_*.npz``) and its conversions
(``*_converted_*.npz``) are the same ``FCISResNet101`` (21 or 81 classes), so the same key set:
all read alike. A key set saved from a wrapping chain (``fcis/extractor/...``) is accepted with
its common prefix removed.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np

from .errors import WeightsFileError

__all__ = ["read_chainercv_fcis_npz", "chainercv_key_to_official"]

_CONV = {"residual_conv": "branch1", "conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c"}
_BN = {"gamma": "gamma", "beta": "beta", "avg_mean": "moving_mean", "avg_var": "moving_var"}
_SIMPLE = {
    "extractor/conv1/conv/W": "conv1_weight",
    "rpn/conv1/W": "rpn_conv_3x3_weight", "rpn/conv1/b": "rpn_conv_3x3_bias",
    "rpn/score/W": "rpn_cls_score_weight", "rpn/score/b": "rpn_cls_score_bias",
    "rpn/loc/W": "rpn_bbox_pred_weight", "rpn/loc/b": "rpn_bbox_pred_bias",
    "head/conv1/W": "conv_new_1_weight", "head/conv1/b": "conv_new_1_bias",
    "head/cls_seg/W": "fcis_cls_seg_weight", "head/cls_seg/b": "fcis_cls_seg_bias",
    "head/ag_loc/W": "fcis_bbox_weight", "head/ag_loc/b": "fcis_bbox_bias",
}
_RES = re.compile(r"extractor/res(\d)/(a|b\d+)/(residual_conv|conv[123])/(conv/W|bn/\w+)$")
_YX_TO_XY = [1, 0, 3, 2]          # (dy, dx, dh, dw) <-> (dx, dy, dw, dh): its own inverse


def chainercv_key_to_official(key: str, blocks_in_stage: int) -> str | None:
    """The official name of ChainerCV key ``key`` (``blocks_in_stage``: the blocks of its ResNet
    stage, which decides ``b1`` -> ``b`` (3 blocks) or ``b1``); None for a key with no official
    counterpart (BatchNorm's ``N``). Raises ``KeyError`` for a key that is no FCISResNet101 key."""
    if key in _SIMPLE:
        return _SIMPLE[key]
    if key.startswith("extractor/conv1/bn/"):
        leaf = key.rsplit("/", 1)[1]
        if leaf == "N":
            return None
        if leaf in _BN:
            return f"bn_conv1_{_BN[leaf]}"
        raise KeyError(key)
    m = _RES.match(key)
    if m is None:
        raise KeyError(key)
    stage, block, conv, leaf = m.groups()
    if block != "a" and blocks_in_stage == 3:
        block = {"b1": "b", "b2": "c"}.get(block, block)
    branch = _CONV[conv]
    if leaf == "conv/W":
        return f"res{stage}{block}_{branch}_weight"
    bn_leaf = leaf.split("/", 1)[1]
    if bn_leaf == "N":
        return None
    if bn_leaf not in _BN:
        raise KeyError(key)
    return f"bn{stage}{block}_{branch}_{_BN[bn_leaf]}"


def _to_official_layout(name: str, value: np.ndarray) -> np.ndarray:
    """Undo mxnet2npz.py's channel permutation of ``name`` (see the module table)."""
    if name.startswith("rpn_cls_score_"):          # (A, 2, ...) -> (2, A, ...)
        anchors = value.shape[0] // 2
        return value.reshape(anchors, 2, *value.shape[1:]).swapaxes(0, 1).reshape(value.shape)
    if name.startswith("rpn_bbox_pred_"):          # per anchor (dy, dx, dh, dw) -> (dx, dy, dw, dh)
        return value.reshape(-1, 4, *value.shape[1:])[:, _YX_TO_XY].reshape(value.shape)
    if name.startswith("fcis_bbox_"):              # (2, 4, k², ...) coords -> official order
        return value.reshape(2, 4, -1, *value.shape[1:])[:, _YX_TO_XY].reshape(value.shape)
    return value


def read_chainercv_fcis_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Official MXNet name -> array (official layout) of a ChainerCV ``FCISResNet101`` npz
    (``fcis_resnet101_{coco,sbd}_{converted,trained}_*.npz``), as the official ``.params`` would
    hold them (``arg:``/``aux:`` prefixes stripped, as :func:`~fcis.weights.mxnet_params.read_mxnet_params`).

    Raises :class:`WeightsFileError` naming the file for a file that is not an npz, is
    truncated, is no ChainerCV FCIS (no ``extractor/conv1/conv/W`` / ``head/cls_seg/W``), holds a
    key that FCISResNet101 does not have, or an array whose shape cannot be the layout above."""
    path_s = os.fspath(path)
    if not Path(path_s).is_file():
        raise WeightsFileError(f"ChainerCV npz file not found: {path_s}")
    try:
        with np.load(path_s, allow_pickle=False) as npz:
            raw = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise WeightsFileError(f"{path_s}: not a readable npz file (truncated or another format: {e})") from None
    raw = _strip_prefix(raw, path_s)
    stages: dict[str, set[str]] = {}
    for key in raw:
        m = _RES.match(key)
        if m:
            stages.setdefault(m.group(1), set()).add(m.group(2))
    out: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        m = _RES.match(key)
        try:
            name = chainercv_key_to_official(key, len(stages[m.group(1)]) if m else 0)
        except KeyError:
            raise WeightsFileError(f"{path_s}: key {key!r} is not a parameter of ChainerCV's FCISResNet101") from None
        if name is None:
            continue
        try:
            out[name] = np.ascontiguousarray(_to_official_layout(name, np.asarray(value)))
        except ValueError as e:
            raise WeightsFileError(f"{path_s}: {key!r} (official {name!r}) has shape {value.shape}, which does not "
                                   f"fit its layout ({e})") from None
    return out


def _strip_prefix(raw: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    """The keys of ``raw`` from ``extractor/...`` on (a wrapping chain's prefix removed)."""
    anchor = "extractor/conv1/conv/W"
    hits = [k for k in raw if k == anchor or k.endswith("/" + anchor)]
    if not hits or not any(k.endswith("head/cls_seg/W") for k in raw):
        sample = ", ".join(sorted(raw)[:4]) or "no arrays"
        raise WeightsFileError(f"{path}: not a ChainerCV FCIS npz (no {anchor!r} and 'head/cls_seg/W'; "
                               f"it holds {sample}{', ...' if len(raw) > 4 else ''})")
    prefix = hits[0][: -len(anchor)]
    if not prefix:
        return raw
    stray = [k for k in raw if not k.startswith(prefix)]
    if stray:
        raise WeightsFileError(f"{path}: keys outside {prefix!r}, e.g. {stray[0]!r}: not one ChainerCV FCIS")
    return {k[len(prefix):]: v for k, v in raw.items()}
