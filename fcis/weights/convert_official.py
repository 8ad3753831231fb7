"""``fcis convert weights``: an official FCIS (MXNet ``.params``) or ChainerCV FCIS (``.npz``) file ->
a normal fcis checkpoint (or, for a backbone-only ImageNet ResNet, a ``--weights-backbone`` file).

A full FCIS file becomes a checkpoint of ``fcis_resnet{depth}`` with ``variant="official"`` (the
official test arithmetic, fcis/models/fcis/official.py), its class names and category ids
(``dataset.class_names``, ``dataset.label_to_cat_id``: the original COCO ids for COCO), written
by :func:`fcis.engine.checkpoint.save_checkpoint`, so ``fcis predict/evaluate/export/serve
--weights OUT.pt`` take it as they take a trained one. A backbone-only file (``conv1`` ..
``res5c`` and ``fc1000``, no FCIS head: the official ``resnet_v1_101-0000.params``) becomes a
torchvision-named ResNet state dict (``torch.save``), for ``--weights-backbone``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import WeightsFileError

__all__ = ["ConversionResult", "convert_weights", "read_official_weights", "detect_format"]

_MXNET_MAGIC = (0x112).to_bytes(8, "little")     # an NDArray list (mx.nd.save), kMXAPINDArrayListMagic
_ZIP_MAGIC = b"PK\x03\x04"                       # an npz


@dataclass
class ConversionResult:
    """What :func:`convert_weights` wrote: ``kind`` "checkpoint" (a full FCIS) or "backbone" (a
    ``--weights-backbone`` state dict), ``path``, ``source_format`` ("mxnet" or "chainercv-npz"),
    ``model_name``, ``num_classes`` (0 for a backbone), ``class_source`` and ``parameters``."""

    kind: str
    path: Path
    source_format: str
    model_name: str
    num_classes: int
    class_source: str
    parameters: int

    def describe(self) -> str:
        if self.kind == "backbone":
            return (f"wrote {self.path}: a backbone-only ImageNet ResNet ({self.source_format} file, "
                    f"{self.parameters} tensors) as a torchvision-named state dict for --weights-backbone "
                    f"(the Caffe-style ResNet v1 of the official code; not a detection checkpoint)")
        return (f"wrote {self.path}: an fcis checkpoint of {self.model_name} with variant='official' (the official "
                f"test arithmetic), {self.num_classes} classes ({self.class_source}), {self.parameters} tensors, "
                f"from a {self.source_format} file; run it with fcis predict/evaluate/export/serve --weights "
                f"{self.path}")


def detect_format(path: str | os.PathLike) -> str:
    """"mxnet" (an NDArray list: ``.params``) or "chainercv-npz" (a zip/npz), by the file's first
    bytes; a WeightsFileError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise WeightsFileError(f"weights file not found: {p}")
    with open(p, "rb") as f:
        head = f.read(8)
    if head == _MXNET_MAGIC:
        return "mxnet"
    if head[:4] == _ZIP_MAGIC:
        return "chainercv-npz"
    raise WeightsFileError(f"{p}: neither an MXNet .params file (NDArray list magic 0x112) nor an npz "
                           f"(zip) file; first bytes {head.hex()}")


def read_official_weights(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """``(format, official name -> array)`` of an MXNet ``.params`` or ChainerCV FCIS npz file."""
    fmt = detect_format(path)
    if fmt == "mxnet":
        from .mxnet_params import read_mxnet_params

        return fmt, read_mxnet_params(path)
    from .chainercv_npz import read_chainercv_fcis_npz

    return fmt, read_chainercv_fcis_npz(path)


def _class_table(classes: str | None, num_classes: int) -> tuple[list[str], dict[int, int], str]:
    """(names, label -> category id, description) for ``--classes`` (coco, voc, a file with one
    name per line, or None: COCO for 80 classes, VOC for 20)."""
    from .class_names import class_names_of

    if classes is None:
        if num_classes == 80:
            classes = "coco"
        elif num_classes == 20:
            classes = "voc"
        else:
            raise WeightsFileError(f"the weights have {num_classes} classes, which is neither COCO (80) nor VOC (20): "
                                   "give their names with --classes FILE (one per line)")
    if classes.strip().lower() in ("coco", "voc"):
        names, ids = class_names_of(classes)
        source = f"{classes.strip().lower().upper()} names" + (", original COCO category ids"
                                                                if classes.strip().lower() == "coco" else "")
    else:
        p = Path(classes)
        if not p.is_file():
            raise WeightsFileError(f"--classes {classes!r}: neither coco, voc nor an existing file of class names")
        names = tuple(line.strip() for line in p.read_text().splitlines() if line.strip())
        ids = tuple(range(1, len(names) + 1))
        source = f"names from {p}"
    if len(names) != num_classes:
        raise WeightsFileError(f"--classes {classes!r} gives {len(names)} class names, but the weights have "
                               f"{num_classes} classes")
    return list(names), {i + 1: int(c) for i, c in enumerate(ids)}, source


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert_weights(src: str | os.PathLike, out: str | os.PathLike, *, classes: str | None = None,
                    model: str | None = None, overrides: dict[str, Any] | None = None) -> ConversionResult:
    """Convert ``src`` (official MXNet ``.params`` or ChainerCV npz) into ``out`` (module docstring).

    ``classes``: "coco", "voc" or a names file (default by class count); ``model``: the fcis model
    name to write (default ``fcis_resnet{depth}`` of the file; another depth is refused);
    ``overrides``: FCISConfig fields recorded in the checkpoint (e.g. ``min_size`` for a faster,
    non-official input size). Raises WeightsFileError (a ValueError) naming the file and the
    parameter for a file that is not of these formats, truncated, or whose shapes do not fit."""
    import torch

    from fcis.engine.checkpoint import save_checkpoint
    from fcis.models import BUILDERS
    from fcis.models.fcis import FCISConfig

    from .official_layout import is_backbone_only, official_backbone_state_dict, official_to_fcis

    src_p, out_p = Path(src), Path(out)
    fmt, params = read_official_weights(src_p)
    try:
        if is_backbone_only(params):
            state = official_backbone_state_dict(params)
            out_p.parent.mkdir(parents=True, exist_ok=True)
            tmp = out_p.with_name(f".{out_p.name}.tmp")
            torch.save(state, tmp)
            os.replace(tmp, out_p)
            return ConversionResult("backbone", out_p, fmt, "", 0, "", len(state))
        name, setting, state = official_to_fcis(params)
    except ValueError as e:
        raise WeightsFileError(f"{src_p}: {e}") from None
    if model is not None and model != name:
        if model not in BUILDERS or not model.startswith("fcis_resnet"):
            raise WeightsFileError(f"--model {model!r}: the weights are an official FCIS {name}; give that name "
                                   "(or leave --model out)")
        raise WeightsFileError(f"{src_p}: the weights are a {name} (ResNet-{setting['depth']}), not {model}")
    setting.update(overrides or {})
    try:
        config = FCISConfig(**setting)
        net = BUILDERS[name](**setting)
        net.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as e:
        raise WeightsFileError(f"{src_p}: the converted model does not build: {e}") from None
    names, cat_ids, source = _class_table(classes, config.num_classes)
    save_checkpoint(out_p, model=net.state_dict(), model_name=name, model_config=config.to_dict(),
                    dataset={"class_names": names, "label_to_cat_id": cat_ids},
                    converted_from={"path": str(src_p), "format": fmt, "sha256": _sha256(src_p),
                                    "parameters": len(params)})
    return ConversionResult("checkpoint", out_p, fmt, name, config.num_classes, source, len(state))
