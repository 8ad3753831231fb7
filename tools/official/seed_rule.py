"""The seed rule: deterministic weights for the official FCIS ResNet-101 COCO test symbol, NumPy only.

The official-code comparison (tests/fixtures/official/) runs the official MXNet inference on these weights;
the test side rebuilds exactly the same arrays with

    shapes = load_param_shapes("tests/fixtures/official/param_shapes.json")
    params = full_params(shapes, seed, "tests/fixtures/official/bn_stats.npz")

Every array is drawn from its own `np.random.RandomState([seed, crc32(name)])` (MT19937 seeded by array:
NumPy's legacy generator, whose streams NumPy keeps frozen across versions), so neither the order of the
names nor the NumPy version changes a value; values are computed in float64 and cast to float32 once.

Per parameter (fan_in = in_channels * kh * kw of a convolution weight):

| parameters                                        | rule                                                   |
|---------------------------------------------------|--------------------------------------------------------|
| backbone conv weights (conv1, res*)               | He normal: N(0, 1) * sqrt(2 / fan_in)                  |
| bn*_gamma of the last BN of a residual branch     | U(0.2, 0.5) (bn*_branch2c: keeps the residual sum moderate) |
| other bn*_gamma                                   | U(0.7, 1.3)                                            |
| bn*_beta                                          | N(0, 1) * 0.1                                          |
| bn*_moving_mean / bn*_moving_var                  | 0 / 1 before calibration; the committed bn_stats.npz after |
| rpn_conv_3x3_weight, conv_new_1_weight            | He normal                                              |
| rpn_conv_3x3_bias, conv_new_1_bias                | N(0, 1) * 0.1                                          |
| rpn_cls_score_weight / _bias                      | He normal * RPN_CLS_SCALE / N(0, 1) * RPN_CLS_BIAS     |
| rpn_bbox_pred_weight / _bias                      | N(0, 1) * sqrt(1 / fan_in) * RPN_BBOX_SCALE / N(0, 1) * 0.02 |
| fcis_cls_seg_weight / _bias                       | N(0, 1) * sqrt(1 / fan_in) * CLS_SEG_SCALE / N(0, 1) * CLS_SEG_BIAS |
| fcis_bbox_weight / _bias                          | N(0, 1) * sqrt(1 / fan_in) * BBOX_SCALE / N(0, 1) * 0.05 |

The scale factors spread the scores (else the 81 class probabilities of a random head are all about 1/81
and no detection passes the official 1e-3 floor meaningfully): they were chosen by running the official
code on the calibrated backbone (tools/official/README.md records the resulting statistics).

BatchNorm calibration (tools/official/run_official.py --calibrate) replaces each moving_mean / moving_var
by the batch statistics (per channel, over N, H, W; variance divided by N*H*W) of that BN's input on one
photo, rounded to float16 and cast back to float32; they are stored in bn_stats.npz under the aux names.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

SEED_RULE_VERSION = 1

RPN_CLS_SCALE = 0.3
RPN_CLS_BIAS = 0.5
RPN_BBOX_SCALE = 0.2
CLS_SEG_SCALE = 24.0
CLS_SEG_BIAS = 2.0
BBOX_SCALE = 5.0

# The official trainer's checkpoint (fcis/core/callback.py do_checkpoint) also stores
# fcis_bbox_weight_test = fcis_bbox_weight * std and fcis_bbox_bias_test = fcis_bbox_bias * std + mean, the
# std/mean of channel k being BBOX_STDS/BBOX_MEANS (tiled over the 2 agnostic classes) at index k // 49; the
# official loader (load_param(process=True)) then replaces fcis_bbox_weight/bias by the _test arrays.
BBOX_MEANS = (0.0, 0.0, 0.0, 0.0)
BBOX_STDS = (0.2, 0.2, 0.5, 0.5)

_BRANCH_END_GAMMA = re.compile(r"^bn\d[a-z0-9]*_branch2c_gamma$")


def _rng(name: str, seed: int) -> np.random.RandomState:
    return np.random.RandomState([seed & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8")) & 0xFFFFFFFF])


def _fan_in(shape: tuple[int, ...]) -> int:
    if len(shape) != 4:
        raise ValueError(f"expected a 4-d convolution weight, got shape {shape}")
    return int(shape[1] * shape[2] * shape[3])


def seeded_param(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The seeded value of one official parameter (float32, `shape`)."""
    shape = tuple(int(s) for s in shape)
    rs = _rng(name, seed)
    if name.endswith("_moving_mean"):
        out = np.zeros(shape)
    elif name.endswith("_moving_var"):
        out = np.ones(shape)
    elif name.endswith("_gamma"):
        lo, hi = (0.2, 0.5) if _BRANCH_END_GAMMA.match(name) else (0.7, 1.3)
        out = rs.uniform(lo, hi, shape)
    elif name.endswith("_beta"):
        out = rs.standard_normal(shape) * 0.1
    elif name == "rpn_cls_score_weight":
        out = rs.standard_normal(shape) * np.sqrt(2.0 / _fan_in(shape)) * RPN_CLS_SCALE
    elif name == "rpn_cls_score_bias":
        out = rs.standard_normal(shape) * RPN_CLS_BIAS
    elif name == "rpn_bbox_pred_weight":
        out = rs.standard_normal(shape) * np.sqrt(1.0 / _fan_in(shape)) * RPN_BBOX_SCALE
    elif name == "rpn_bbox_pred_bias":
        out = rs.standard_normal(shape) * 0.02
    elif name == "fcis_cls_seg_weight":
        out = rs.standard_normal(shape) * np.sqrt(1.0 / _fan_in(shape)) * CLS_SEG_SCALE
    elif name == "fcis_cls_seg_bias":
        out = rs.standard_normal(shape) * CLS_SEG_BIAS
    elif name == "fcis_bbox_weight":
        out = rs.standard_normal(shape) * np.sqrt(1.0 / _fan_in(shape)) * BBOX_SCALE
    elif name == "fcis_bbox_bias":
        out = rs.standard_normal(shape) * 0.05
    elif name.endswith("_weight"):
        out = rs.standard_normal(shape) * np.sqrt(2.0 / _fan_in(shape))
    elif name.endswith("_bias"):
        out = rs.standard_normal(shape) * 0.1
    else:
        raise ValueError(f"seed rule: no rule for parameter {name!r}")
    return np.asarray(out, dtype=np.float32).reshape(shape)


def seeded_params(shapes: Mapping[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """name -> seeded float32 array, for every name in `shapes` (official names, no arg:/aux: prefix)."""
    return {name: seeded_param(name, tuple(shape), seed) for name, shape in shapes.items()}


def load_param_shapes(path: str | Path) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """(name -> shape for every parameter of the official test symbol, the set of aux names) from
    param_shapes.json ({"arg": {name: shape}, "aux": {name: shape}})."""
    data = json.loads(Path(path).read_text())
    shapes = {k: tuple(v) for k, v in data["arg"].items()}
    shapes.update({k: tuple(v) for k, v in data["aux"].items()})
    return shapes, set(data["aux"])


def load_bn_stats(path: str | Path) -> dict[str, np.ndarray]:
    """The calibrated BatchNorm statistics (float16 in the file) as float32, keyed by aux name."""
    with np.load(path) as z:
        return {k: z[k].astype(np.float32) for k in z.files}


def checkpoint_layout(params: Mapping[str, np.ndarray], aux_names: set[str]) -> dict[str, np.ndarray]:
    """The arrays of an official trainer checkpoint: 'arg:'/'aux:' prefixed names, plus the
    fcis_bbox_weight_test / fcis_bbox_bias_test pair of do_checkpoint (see BBOX_STDS above)."""
    out = {("aux:" if name in aux_names else "arg:") + name: np.asarray(v, np.float32) for name, v in params.items()}
    weight, bias = params["fcis_bbox_weight"], params["fcis_bbox_bias"]
    groups = bias.shape[0] // (2 * 4)
    std = np.repeat(np.tile(np.asarray(BBOX_STDS, np.float32), 2), groups)
    mean = np.repeat(np.tile(np.asarray(BBOX_MEANS, np.float32), 2), groups)
    out["arg:fcis_bbox_weight_test"] = (weight * std.reshape(-1, 1, 1, 1)).astype(np.float32)
    out["arg:fcis_bbox_bias_test"] = (bias * std + mean).astype(np.float32)
    return out


def full_params(shapes: Mapping[str, tuple[int, ...]], seed: int, bn_stats: str | Path | None
                ) -> dict[str, np.ndarray]:
    """The seeded parameters with the calibrated BatchNorm statistics of `bn_stats` (an npz) in place."""
    params = seeded_params(shapes, seed)
    if bn_stats is not None:
        stats = load_bn_stats(bn_stats)
        for name, value in stats.items():
            if name not in params:
                raise ValueError(f"{bn_stats}: {name!r} is not a parameter of the official symbol")
            if value.shape != params[name].shape:
                raise ValueError(f"{bn_stats}: {name!r} has shape {value.shape}, expected {params[name].shape}")
            params[name] = value
        missing = [n for n in params if n.endswith(("_moving_mean", "_moving_var")) and n not in stats]
        if missing:
            raise ValueError(f"{bn_stats}: no statistics for {missing[:3]} (+{max(len(missing) - 3, 0)} more)")
    return params
