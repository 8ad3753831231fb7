"""The official FCIS test symbol, config and photo preprocessing, used by run_official.py (MXNet side).

Everything here calls the official code (imported by official_runtime.install); the only things built
here are the BatchNorm calibration graph and the list of internal outputs dumped for debugging.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COCO_YAML = "experiments/fcis/cfgs/resnet_v1_101_coco_fcis_end2end_ohem.yaml"


@dataclass
class Official:
    """The imported official pieces."""

    root: Path
    mx: object
    cfg: object
    sym: object  # the official test symbol (is_train=False)

    @property
    def arg_names(self) -> list[str]:
        return [n for n in self.sym.list_arguments() if n not in ("data", "im_info")]

    @property
    def aux_names(self) -> list[str]:
        return list(self.sym.list_auxiliary_states())


def load_official(root: Path) -> Official:
    from tools.official.official_runtime import install

    mx = install(root)
    from config.config import config, update_config  # the checkout's fcis/config/config.py

    update_config(str(Path(root) / COCO_YAML))
    import symbols  # fcis/symbols/__init__.py: from resnet_v1_101_fcis import *

    sym = getattr(symbols, config.symbol)().get_symbol(config, is_train=False)
    return Official(Path(root), mx, config, sym)


def param_shapes(off: Official) -> dict[str, dict[str, list[int]]]:
    """{"arg": {name: shape}, "aux": {name: shape}} of the official test symbol (shapes do not depend on
    the image size)."""
    arg_shapes, _, aux_shapes = off.sym.infer_shape(data=(1, 3, 608, 800), im_info=(1, 3))
    args = dict(zip(off.sym.list_arguments(), arg_shapes))
    return {
        "arg": {n: list(args[n]) for n in off.arg_names},
        "aux": {n: list(s) for n, s in zip(off.aux_names, aux_shapes)},
    }


def write_param_shapes(off: Official, path: Path) -> None:
    path.write_text(json.dumps(param_shapes(off), indent=0) + "\n")


@dataclass
class Photo:
    path: Path
    original_bgr: np.ndarray  # (H, W, 3) uint8 as cv2.imread decodes it
    resized_bgr: np.ndarray  # (h, w, 3) uint8 after the official resize
    tensor: np.ndarray  # (1, 3, h, w) float64: the official transform (RGB minus PIXEL_MEANS)
    im_info: np.ndarray  # (1, 3) float32: h, w, scale
    scale: float


def load_photo(off: Official, path: Path) -> Photo:
    """The official test preprocessing (fcis/demo.py, lib/utils/image.py): cv2.imread with
    IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION, resize(SCALES[0], stride=IMAGE_STRIDE), transform."""
    import cv2
    from utils.image import resize, transform

    im = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if im is None:
        raise FileNotFoundError(f"{path}: cv2 cannot read it")
    target_size, max_size = off.cfg.SCALES[0]
    resized, scale = resize(im, target_size, max_size, stride=off.cfg.network.IMAGE_STRIDE)
    tensor = transform(resized, off.cfg.network.PIXEL_MEANS)
    im_info = np.array([[tensor.shape[2], tensor.shape[3], scale]], dtype=np.float32)
    return Photo(Path(path), im, resized, tensor, im_info, float(scale))


# ----------------------------------------------------------------------------------------------------------
# BatchNorm calibration
# ----------------------------------------------------------------------------------------------------------
def _bn_nodes(sym) -> list[dict]:
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    out = []
    for node in nodes:
        if node["op"] == "BatchNorm":
            src = nodes[node["inputs"][0][0]]
            out.append({"bn": node["name"], "input": src["name"]})
    return out


def calibrate_bn(off: Official, params: dict[str, np.ndarray], photo: Photo
                 ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per BatchNorm of the backbone: mean and biased variance (over N, H, W) of its input on `photo`, every
    BN normalising with the batch statistics of its own input (MXNet BatchNorm in training mode, which is the
    calibrated network: moving statistics = batch statistics). Returns (aux name -> float32 statistics, not
    rounded; BN name -> number of positions N*H*W its input has on this photo)."""
    mx = off.mx
    internals = off.sym.get_internals()
    top = internals["res5c_relu_output"]
    graph = json.loads(top.tojson())
    for node in graph["nodes"]:
        if node["op"] == "BatchNorm":
            node["attrs"]["use_global_stats"] = "False"
    train_sym = mx.sym.load_json(json.dumps(graph))
    train_int = train_sym.get_internals()
    stats_syms = []
    bns = _bn_nodes(train_sym)
    inputs = [train_int[item["input"] + "_output"] for item in bns]
    _, in_shapes, _ = mx.sym.Group(inputs).infer_shape(data=photo.tensor.shape)
    for x in inputs:
        mean = mx.sym.mean(x, axis=(0, 2, 3), keepdims=True)
        var = mx.sym.mean(mx.sym.square(mx.sym.broadcast_sub(x, mean)), axis=(0, 2, 3))
        stats_syms += [mx.sym.reshape(mean, shape=(-1,)), var]
    group = mx.sym.Group(stats_syms + [train_sym])
    arg = {n: mx.nd.array(params[n]) for n in group.list_arguments() if n != "data"}
    arg["data"] = mx.nd.array(photo.tensor, dtype="float32")
    aux = {n: mx.nd.array(params[n]) for n in group.list_auxiliary_states()}
    exe = group.bind(mx.cpu(), arg, args_grad=None, grad_req="null", aux_states=aux)
    outs = exe.forward(is_train=True)
    stats: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for k, item in enumerate(bns):
        stats[item["bn"] + "_moving_mean"] = outs[2 * k].asnumpy().astype(np.float32)
        stats[item["bn"] + "_moving_var"] = outs[2 * k + 1].asnumpy().astype(np.float32)
        n, _, h, w = in_shapes[k]
        counts[item["bn"]] = int(n * h * w)
    return stats, counts


def pool_stats(per_photo: list[tuple[dict[str, np.ndarray], dict[str, int]]]) -> dict[str, np.ndarray]:
    """Combine per-photo BN statistics into those of their union (mixture mean and variance, each photo
    weighted by the number of positions of that BN's input), in float64, returned as float32."""
    out: dict[str, np.ndarray] = {}
    first = per_photo[0][0]
    for key in first:
        if not key.endswith("_moving_mean"):
            continue
        bn = key[: -len("_moving_mean")]
        w = np.array([c[bn] for _, c in per_photo], dtype=np.float64)
        w /= w.sum()
        means = [s[key].astype(np.float64) for s, _ in per_photo]
        second = [s[bn + "_moving_var"].astype(np.float64) + m * m for (s, _), m in zip(per_photo, means)]
        m = sum(wi * mi for wi, mi in zip(w, means))
        v = sum(wi * si for wi, si in zip(w, second)) - m * m
        out[key] = m.astype(np.float32)
        out[bn + "_moving_var"] = np.maximum(v, 0.0).astype(np.float32)
    return out


def round_stats(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float16 rounding (the committed precision), back to float32."""
    out = {}
    for k, v in stats.items():
        h = v.astype(np.float16)
        if not np.all(np.isfinite(h)):
            raise ValueError(f"BN statistic {k} overflows float16 (max {np.abs(v).max():.4g})")
        out[k] = h.astype(np.float32)
    return out
