"""Make the official FCIS code (msracver/FCIS, Python 2, MXNet 0.x era, GPU) importable and runnable here:
Python 3.11, MXNet 1.9.1 CPU build. Nothing of the official code is copied: it is imported from its checkout.

What `install(official_root)` does, and nothing else:

1. Python 2 -> 3 at import time. An import hook translates every module loaded from the checkout with the
   standard library's lib2to3 (all default fixers: print statements, xrange, cPickle, dict views, implicit
   relative imports, ...). The translated code is compiled in memory; nothing is written to the checkout.
   lib2to3 keeps `/`, so Python 2 integer division becomes true division; the only int/int division on the
   paths this oracle runs is `np.ceil(im_height / 2)` in `mask_aggregation`'s empty-mask fallback
   (lib/mask/mask_transform.py); run_official.py counts how often that fallback is reached.
2. Compiled pieces that are absent, replaced by the checkout's own pure-Python code where it has some:
   - `gpu_nms` / `cpu_nms` (cython+CUDA): `nms.nms.nms`, the official pure-Python NMS (`py_nms_wrapper`).
     It suppresses at IoU > thresh, as the CUDA kernel does (`devIoU(...) > thresh`; cpu_nms.pyx uses >=),
     with float32 boxes, areas with +1.
   - `bbox.bbox_overlaps_cython` (cython): `bbox.bbox_transform.bbox_overlaps_py`, the official Python loop
     (same formula, float64).
   - `mask.gpu_mv` (CUDA mask voting): not needed; the oracle calls the official `cpu_mask_voting`.
   - `hickle` (only for training-time GT masks) and `skimage.draw` (only for polygons in mask_voc2coco):
     empty placeholder modules; nothing on the inference path calls them.
   - `dataset.pycocotools.mask` (the checkout's cython copy of pycocotools): the PyPI `pycocotools.mask`.
   - PyYAML >= 6 requires a Loader: `yaml.load(f)` in fcis/config/config.py gets `yaml.SafeLoader` (the
     experiment files are plain mappings, lists and scalars).
3. MXNET_SUBGRAPH_BACKEND=NONE: MXNet 1.x CPU builds with oneDNN fuse conv+BN+ReLU(+sum) at bind time by
   default (folding BN into the conv weights, and returning wrong values for internal outputs exposed
   with get_internals). The official code ran on GPU without such fusion; the oracle runs the plain graph.
4. `mx.contrib.sym.ChannelOperator` (the official C++/CUDA operator; its CPU file is a stub, its CUDA file
   is the definition): re-implemented below as a Python `mx.operator.CustomOp` after
   fcis/operator_cxx/channel_operator.cu (forward only; inference needs nothing else).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
import warnings
from pathlib import Path

import numpy as np

_INSTALLED: dict[str, Path] = {}


# ----------------------------------------------------------------------------------------------------------
# 1. Python 2 -> 3 translation of the checkout's modules, in memory
# ----------------------------------------------------------------------------------------------------------
class _Py2Loader(importlib.abc.SourceLoader):
    def __init__(self, fullname: str, path: str, tool) -> None:
        self.fullname = fullname
        self.path = path
        self._tool = tool

    def get_filename(self, fullname: str) -> str:  # noqa: D401 - importlib protocol
        return self.path

    def get_data(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def source_to_code(self, data, path, *, _optimize=-1):  # type: ignore[override]
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        if not text.endswith("\n"):
            text += "\n"
        tree = self._tool.refactor_string(text, path)
        return compile(str(tree), path, "exec", dont_inherit=True)


class _Py2Finder(importlib.abc.MetaPathFinder):
    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lib2to3.refactor import RefactoringTool, get_fixers_from_package
        self.root = str(root.resolve())
        self.tool = RefactoringTool(get_fixers_from_package("lib2to3.fixes"))

    def find_spec(self, fullname, path, target=None):
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        if not str(Path(spec.origin).resolve()).startswith(self.root + "/"):
            return None
        loader = _Py2Loader(fullname, spec.origin, self.tool)
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, loader=loader,
            submodule_search_locations=spec.submodule_search_locations)


# ----------------------------------------------------------------------------------------------------------
# 3. ChannelOperator (fcis/operator_cxx/channel_operator.cu), forward
# ----------------------------------------------------------------------------------------------------------
def group_max(data: np.ndarray, group: int) -> np.ndarray:
    """(N, C, H, W) -> (N, group, H, W): max over the C/group consecutive channels of each group."""
    n, c, h, w = data.shape
    return data.reshape(n, group, c // group, h, w).max(axis=2)


def group_softmax(data: np.ndarray, group: int) -> np.ndarray:
    """(N, C, H, W): softmax over the C/group channels of each group, per pixel (mshadow Softmax on a
    (N*group, C/group, H*W) view: max-subtracted, float32)."""
    n, c, h, w = data.shape
    x = data.reshape(n * group, c // group, h * w).astype(np.float32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).reshape(n, c, h, w).astype(data.dtype)


def score_pick_index(scores: np.ndarray, group: int) -> np.ndarray:
    """GetMaxIdxKernel: per row, argmax over entries 1..group-1 (background 0 skipped; first max wins)."""
    flat = scores.reshape(-1, group)
    return np.argmax(flat[:, 1:], axis=1) + 1


def group_pick(data: np.ndarray, idx: np.ndarray, group: int) -> np.ndarray:
    """(N, C, H, W), idx (N,) -> (N, C/group, H, W): channels [g*C/group, (g+1)*C/group) of group g = idx[n]
    (truncated to int); zeros when g is outside [0, group)."""
    n, c, h, w = data.shape
    cig = c // group
    g = idx.reshape(n).astype(np.int64)  # C++: int g = pick_idx_data[n] (truncation toward zero)
    out = np.zeros((n, cig, h, w), dtype=data.dtype)
    ok = (g >= 0) & (g < group)
    rows = np.nonzero(ok)[0]
    for k in range(cig):
        out[rows, k] = data[rows, g[rows] * cig + k]
    return out


def _register_channel_operator(mx) -> None:
    class ChannelOperator(mx.operator.CustomOp):
        def __init__(self, channel_op: str, group: int, pick_type: str) -> None:
            super().__init__()
            self.channel_op, self.group, self.pick_type = channel_op, group, pick_type

        def forward(self, is_train, req, in_data, out_data, aux):
            data = in_data[0].asnumpy()
            if self.channel_op == "Group_Max":
                out = group_max(data, self.group)
            elif self.channel_op == "Group_Softmax":
                out = group_softmax(data, self.group)
            elif self.channel_op == "Group_Pick":
                pick = in_data[1].asnumpy()
                if self.pick_type == "Score_Pick":
                    idx = score_pick_index(pick, self.group)
                else:
                    idx = pick.reshape(-1)
                out = group_pick(data, idx, self.group)
            else:
                raise ValueError(f"ChannelOperator: unknown op_type {self.channel_op!r}")
            self.assign(out_data[0], req[0], mx.nd.array(out, dtype=data.dtype))

        def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
            raise NotImplementedError("ChannelOperator: inference only")

    @mx.operator.register("FcisChannelOperator")
    class ChannelOperatorProp(mx.operator.CustomOpProp):
        def __init__(self, channel_op, group, pick_type="Label_Pick"):
            super().__init__(need_top_grad=False)
            self.channel_op, self.group, self.pick_type = channel_op, int(group), pick_type

        def list_arguments(self):
            return ["data", "pick_idx"] if self.channel_op == "Group_Pick" else ["data"]

        def list_outputs(self):
            return ["output"]

        def infer_shape(self, in_shape):
            n, c, h, w = in_shape[0]
            if self.channel_op == "Group_Max":
                out = (n, self.group, h, w)
            elif self.channel_op == "Group_Softmax":
                out = (n, c, h, w)
            else:
                out = (n, c // self.group, h, w)
            return in_shape, [out], []

        def create_operator(self, ctx, shapes, dtypes):
            return ChannelOperator(self.channel_op, self.group, self.pick_type)

    def channel_operator_symbol(data, group, op_type, pick_idx=None, pick_type="Label_Pick", name=None):
        kwargs = dict(data=data, group=group, channel_op=op_type, pick_type=pick_type,
                      op_type="FcisChannelOperator", name=name)
        if pick_idx is not None:
            kwargs["pick_idx"] = pick_idx
        return mx.sym.Custom(**kwargs)

    mx.contrib.sym.ChannelOperator = channel_operator_symbol


# ----------------------------------------------------------------------------------------------------------
# 2. placeholders for the compiled modules, then import
# ----------------------------------------------------------------------------------------------------------
def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def _unavailable(what: str):
    def fail(*args, **kwargs):
        raise RuntimeError(f"{what} is not available in this oracle (compiled official code)")
    return fail


def install(official_root: Path):
    """Put the checkout on sys.path, install the translation hook, the placeholders and ChannelOperator.
    Returns the imported `mxnet` module."""
    root = Path(official_root).resolve()
    if "root" in _INSTALLED:
        if _INSTALLED["root"] != root:
            raise RuntimeError(f"official code already installed from {_INSTALLED['root']}")
        import mxnet as mx
        return mx
    for sub in ("fcis/symbols/resnet_v1_101_fcis.py", "lib/mask/mask_transform.py", "fcis/core/tester.py"):
        if not (root / sub).is_file():
            raise FileNotFoundError(f"{root}: not an msracver/FCIS checkout ({sub} missing)")
    if "mxnet" in sys.modules and os.environ.get("MXNET_SUBGRAPH_BACKEND") != "NONE":
        raise RuntimeError("import official_runtime.install before mxnet (MXNET_SUBGRAPH_BACKEND must be NONE)")
    os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(root / "lib"))
    sys.path.insert(0, str(root / "fcis"))
    sys.meta_path.insert(0, _Py2Finder(root))
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    import mxnet as mx

    # NMS: the official pure-Python fallback, with the GPU kernel's signature.
    def gpu_nms(dets, thresh, device_id=0):
        from nms.nms import nms
        return nms(dets, thresh)

    def cpu_nms(dets, thresh):
        from nms.nms import nms
        return nms(dets, thresh)

    _module("gpu_nms", gpu_nms=gpu_nms)
    _module("cpu_nms", cpu_nms=cpu_nms)

    def bbox_overlaps_cython(boxes, query_boxes):
        from bbox.bbox_transform import bbox_overlaps_py
        return bbox_overlaps_py(boxes, query_boxes)

    import bbox  # the checkout's lib/bbox package (empty __init__)
    bbox.bbox_overlaps_cython = bbox_overlaps_cython
    _module("mask.gpu_mv", mv=_unavailable("mask.gpu_mv (CUDA mask voting)"))
    _module("hickle", load=_unavailable("hickle"))
    _module("skimage")
    _module("skimage.draw", polygon=_unavailable("skimage.draw.polygon"))
    import pycocotools.mask as coco_mask
    _module("dataset", __path__=[])
    _module("dataset.pycocotools", __path__=[])
    sys.modules["dataset.pycocotools.mask"] = coco_mask

    import yaml
    if not getattr(yaml.load, "_fcis_oracle", False):
        yaml_load = yaml.load

        def load(stream, Loader=None):  # noqa: N803 - PyYAML's own argument name
            return yaml_load(stream, Loader=Loader or yaml.SafeLoader)

        load._fcis_oracle = True  # type: ignore[attr-defined]
        yaml.load = load

    _register_channel_operator(mx)
    _INSTALLED["root"] = root
    return mx
