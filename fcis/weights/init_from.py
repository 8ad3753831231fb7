"""``fcis train --init-from CHECKPOINT``: start a model for the user's classes from a trained one.

The source is any fcis checkpoint (a run's ``last.pt``/``best.pt``, a model written by ``fcis
convert weights``) or torchvision's COCO Mask R-CNN file (``maskrcnn_resnet50_fpn_coco-*.pth``, a
plain state dict with 91 COCO category slots). The new model is built for the user's classes as a
fresh run builds it, with

- the source's architecture: :func:`carried_fields` of its config (the input size and
  normalisation, anchors, head sizes, ... and every config field declared with
  ``metadata={"architecture": True}``); a value given with ``--set`` / ``--min-size`` wins, and
  one that changes a parameter's shape is an error naming the parameter;
- every parameter and buffer copied from the source (backbone, RPN, FCIS's shared head conv
  ``head.reduce`` and the class-agnostic box conv; Mask R-CNN's FPN, box and mask head trunks),
  except the class-dependent rows (:func:`class_rows`): FCIS's inside/outside score-map conv
  (``head.inside_outside``, channel (2c + s)·k² + p) and, with ``score_maps="separate"``, its
  detection conv (c·k² + p); Mask R-CNN's ``cls_score`` (c), ``bbox_pred`` (4c..4c+3) and
  ``mask_fcn_logits`` (c). There, each user class whose name matches a source class keeps that
  class's rows; the other classes and the background keep the fresh initialisation the builder
  gave them.

Names match after :func:`normalise_class_name` (case, surrounding spaces, and runs of spaces,
``_`` and ``-`` are ignored: "Traffic_Light" is "traffic light"); nothing else is guessed
("motorbike" is not "motorcycle"): ``--init-class-map pedestrian=person,motorbike=motorcycle``
(or a JSON file ``{"pedestrian": "person"}``) maps user classes to source classes by hand.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from .errors import WeightsFileError

__all__ = ["InitSource", "InitReport", "load_init_source", "inherited_config", "carried_fields", "class_rows",
           "trainable_official", "official_rpn_as_torchvision",
           "match_classes", "init_model", "normalise_class_name", "parse_class_map", "TORCHVISION_MASKRCNN"]

#: The model fcis builds for torchvision's ``maskrcnn_resnet50_fpn`` COCO file (same modules,
#: same names; torchvision's defaults are MaskRCNNConfig's).
TORCHVISION_MASKRCNN = "maskrcnn_resnet50_fpn"

#: Config fields a fine-tuned model takes from its source, by config class: what the source's
#: weights were trained with or whose shapes they have. Fields marked
#: ``metadata={"architecture": True}`` in a config class are carried too (:func:`carried_fields`).
CARRIED = {
    "FCISConfig": ("dilate_conv5", "image_mean", "image_std", "min_size", "max_size", "anchor_sizes",
                   "aspect_ratios", "rpn_channels", "head_channels", "group_size", "mask_size", "sampling_ratio",
                   "assemble_mode", "score_maps", "box_coder_weights"),
    "MaskRCNNConfig": ("image_mean", "image_std", "min_size", "max_size", "anchor_sizes", "aspect_ratios",
                       "box_coder_weights"),
}


@dataclass
class InitSource:
    """A trained model to start from: ``model_name`` (a key of ``fcis.models.BUILDERS``), its
    config dict, ``class_names`` (label 1 first; torchvision's "N/A" slots included, never
    matched), its ``state_dict`` and what the file was (``kind``)."""

    path: str
    kind: str
    model_name: str
    model_config: dict[str, Any]
    class_names: list[str]
    state_dict: dict[str, Tensor]


@dataclass
class InitReport:
    """What :func:`init_model` did: ``kept`` (user label, name, source label, source name) per
    matched class, ``new`` (user classes initialised afresh), the class-dependent parameters
    (``class_parameters``), the counts of copied tensors, and the inherited config."""

    source: str
    kind: str
    model_name: str
    num_source_classes: int
    kept: list[tuple[int, str, int, str]]
    new: list[str]
    class_parameters: list[str]
    copied_tensors: int
    inherited: dict[str, Any] = field(default_factory=dict)
    overridden: dict[str, Any] = field(default_factory=dict)
    #: the inherited fields whose values are not the model family's defaults (what describe() shows)
    non_default: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Lines for the start of a run."""
        total = len(self.kept) + len(self.new)
        kept = ", ".join(name if name == src else f"{name} (from {src})" for _, name, _, src in self.kept) or "none"
        lines = [f"init from {self.source} ({self.kind}, {self.model_name}, {self.num_source_classes} classes): "
                 f"{self.copied_tensors} tensors copied (backbone, RPN, shared head layers)",
                 f"  kept {len(self.kept)} of {total} classes from the source: {kept}; "
                 f"new: {', '.join(self.new) or 'none'} (and the background: initialised afresh)",
                 f"  class-dependent layers: {', '.join(sorted({p.rsplit('.', 1)[0] for p in self.class_parameters}))}"]
        shown = [f"{k}={self.inherited[k]}" for k in self.non_default if k in self.inherited]
        lines.append(f"  kept the source's {', '.join(self.inherited) or 'configuration'}"
                     + (f"; not the defaults: {', '.join(shown)}" if shown else " (all the defaults)"))
        lines += [f"  {note}" for note in self.notes]
        for k, (mine, theirs) in self.overridden.items():
            lines.append(f"  note: {k}={mine} given, the source was trained with {theirs}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["kept"] = [{"label": a, "name": b, "source_label": c, "source_name": d} for a, b, c, d in self.kept]
        out["overridden"] = {k: {"given": mine, "source": theirs} for k, (mine, theirs) in self.overridden.items()}
        return out


def normalise_class_name(name: str) -> str:
    """``" Traffic_Light "`` -> ``"traffic light"``: lower case, runs of spaces, ``_`` and ``-``
    as one space, none at the ends."""
    return " ".join(w for w in re.split(r"[\s_\-]+", name.strip().lower()) if w)


def parse_class_map(value: str | None) -> dict[str, str]:
    """``--init-class-map``: a JSON file ``{"user class": "source class"}`` or inline
    ``user=source,user2=source2``; names normalised. Raises ``ValueError`` for a malformed one."""
    if not value:
        return {}
    if os.path.isfile(value):
        try:
            data = json.loads(Path(value).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--init-class-map {value}: not a readable JSON file ({e})") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ValueError(f"--init-class-map {value}: expected a JSON object of user class -> source class names")
        pairs = list(data.items())
    else:
        pairs = []
        for item in value.split(","):
            user, sep, src = item.partition("=")
            if not sep or not user.strip() or not src.strip():
                raise ValueError(f"--init-class-map expects USER=SOURCE pairs separated by commas (or a JSON file), "
                                 f"got {item!r}")
            pairs.append((user, src))
    return {normalise_class_name(u): normalise_class_name(s) for u, s in pairs}


def match_classes(target: list[str], source: list[str], class_map: Mapping[str, str] | None = None
                  ) -> list[int | None]:
    """For each user class (label i + 1), the source label whose name matches (``class_map``
    first: user name -> source name), or None. A source name is matched at most by its first
    label; torchvision's placeholder "N/A" never matches."""
    by_name: dict[str, int] = {}
    for label, name in enumerate(source, start=1):
        key = normalise_class_name(name)
        if key and key != "n/a":
            by_name.setdefault(key, label)
    class_map = dict(class_map or {})
    targets = {normalise_class_name(t) for t in target}
    unknown_users = sorted(set(class_map) - targets)
    unknown_sources = sorted({s for s in class_map.values() if s not in by_name})
    if unknown_users or unknown_sources:
        raise ValueError("--init-class-map: "
                         + "; ".join(([f"not classes of the training data: {unknown_users}"] if unknown_users else [])
                                     + ([f"not classes of the source: {unknown_sources}"] if unknown_sources else [])))
    out: list[int | None] = []
    for name in target:
        key = normalise_class_name(name)
        out.append(by_name.get(class_map.get(key, key)))
    return out


# --- the source -----------------------------------------------------------------------------------

def load_init_source(path: str | os.PathLike) -> InitSource:
    """Read ``path``: an fcis checkpoint, or torchvision's Mask R-CNN ResNet-50-FPN state dict
    (COCO, 91 category slots). Raises ``ValueError`` (:class:`~fcis.engine.errors.CheckpointError`
    or :class:`WeightsFileError`) naming the file otherwise."""
    from fcis.engine.checkpoint import FORMAT, load_checkpoint

    path_s = os.fspath(path)
    if not Path(path_s).is_file():
        raise WeightsFileError(f"--init-from: file not found: {path_s}")
    try:   # memory-mapped where it can be (an fcis checkpoint is then read again, checked, by
        # load_checkpoint); torchvision's COCO file is of torch's legacy (non-zip) format: read whole
        with open(path_s, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
        raw = torch.load(path_s, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a wrong or damaged file
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise WeightsFileError(f"--init-from {path_s}: not a PyTorch checkpoint or state dict ({reason})") from None
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        ckpt = load_checkpoint(path_s)              # digest and NaN/inf checks
        names = list((ckpt.get("dataset") or {}).get("class_names") or [])
        config = dict(ckpt["model_config"])
        if len(names) != int(config.get("num_classes", len(names))):
            raise WeightsFileError(f"--init-from {path_s}: it records {len(names)} class names for "
                                   f"{config.get('num_classes')} classes: the names cannot be matched")
        return InitSource(path_s, "fcis checkpoint", str(ckpt["model_name"]), config, names, dict(ckpt["model"]))
    return _torchvision_maskrcnn(raw, path_s)


def _torchvision_maskrcnn(raw: Any, path: str) -> InitSource:
    """torchvision's ``maskrcnn_resnet50_fpn`` COCO state dict, loaded into torchvision's model so
    that its own conversions of older key layouts apply (files saved by torchvision < 0.13)."""
    import torchvision
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    state = raw
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not (isinstance(state, dict) and any(str(k).startswith("roi_heads.mask_predictor.") for k in state)
            and any(str(k).startswith("backbone.body.") for k in state)):
        raise WeightsFileError(f"--init-from {path}: neither an fcis checkpoint nor a state dict of torchvision's "
                               "Mask R-CNN (maskrcnn_resnet50_fpn_coco-*.pth)")
    categories = list(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    rows = state.get("roi_heads.box_predictor.cls_score.weight")
    slots = int(rows.shape[0]) if isinstance(rows, Tensor) else len(categories)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=slots)
    try:
        result = tv.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise WeightsFileError(f"--init-from {path}: not a state dict of torchvision's maskrcnn_resnet50_fpn "
                               f"({str(e).strip().splitlines()[0][:300]})") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise WeightsFileError(f"--init-from {path}: not a state dict of torchvision's maskrcnn_resnet50_fpn "
                               f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]}; "
                               "the _v2 model is not supported)")
    if slots == len(categories):
        names = categories[1:]
    else:   # another number of classes: no names known
        names = [f"class {i}" for i in range(1, slots)]
    sd = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    return InitSource(path, "torchvision Mask R-CNN state dict", TORCHVISION_MASKRCNN,
                      {"depth": 50, "num_classes": slots - 1}, names, sd)


# --- the configuration ------------------------------------------------------------------------------

def carried_fields(config_cls: type) -> tuple[str, ...]:
    """The fields of ``config_cls`` that a fine-tuned model takes from its source: ``CARRIED``'s
    for its class (or a base class) and every field declared with ``metadata={"architecture": True}``."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    out = [n for c in config_cls.__mro__ for n in CARRIED.get(c.__name__, ()) if n in names]
    out += [f.name for f in dataclasses.fields(config_cls) if f.metadata.get("architecture") and f.name not in out]
    return tuple(dict.fromkeys(out))


def source_config(source: InitSource, builders: Mapping[str, Callable[..., nn.Module]]) -> Any:
    """The source's config object, rebuilt by its builder (former field names translated)."""
    if source.model_name not in builders:
        raise WeightsFileError(f"--init-from {source.path}: model {source.model_name!r} unknown to this fcis")
    config = dict(source.model_config)
    config.pop("num_classes", None)
    try:
        with torch.device("meta"):
            return builders[source.model_name](num_classes=max(1, len(source.class_names)), **config).config
    except (TypeError, ValueError) as e:
        raise WeightsFileError(f"--init-from {source.path}: its model configuration does not fit "
                               f"{source.model_name!r} ({e})") from None


def inherited_config(source: InitSource, model_name: str, builders: Mapping[str, Callable[..., nn.Module]]
                     ) -> dict[str, Any]:
    """The config fields the new ``model_name`` takes from ``source`` (:func:`carried_fields`).
    Raises ``ValueError`` when ``model_name`` is not the source's model or the family has no
    class-dependent layout known here (InstanceFCN)."""
    if model_name != source.model_name:
        raise ValueError(f"--init-from {source.path} holds a {source.model_name} model: train --model "
                         f"{source.model_name} to start from it (the network keeps the source's architecture)")
    config = source_config(source, builders)
    if type(config).__name__ not in CARRIED:
        raise ValueError(f"--init-from supports FCIS and Mask R-CNN models, not {model_name}")
    out = {name: getattr(config, name) for name in carried_fields(type(config))}
    if getattr(config, "variant", None) == "official":
        out.update(trainable_official(config))
    return out


def trainable_official(config: Any) -> dict[str, Any]:
    """The fields that make a trainable FCIS (``variant="torchvision"``) compute what an
    official-variant ``config`` (inference only; weights converted from the official code) does
    where it matters for the weights: the official Caffe-style ResNet (``resnet_style="caffe"``),
    and its input, RGB on 0-255 minus the pixel means, written as torchvision's normalisation
    ``(x - mean) / std`` of x in [0, 1]: mean = pixel means / 255, std = 1 / 255. Its RPN's
    weights are translated by :func:`official_rpn_as_torchvision` (:func:`init_model` does it)."""
    return {"resnet_style": "caffe", "image_mean": tuple(float(m) / 255.0 for m in config.image_mean),
            "image_std": tuple(float(s) / 255.0 for s in config.image_std)}


def official_rpn_as_torchvision(state: Mapping[str, Tensor], source_config: Mapping[str, Any], model: nn.Module
                                ) -> dict[str, Tensor]:
    """``state`` (an official-variant FCIS's) with its RPN re-expressed for the trainable FCIS
    ``model`` (torchvision's RPN and anchors), giving the same proposals before NMS:

    - scores: the official 2-way softmax (A background then A foreground channels) becomes one
      logit per anchor, foreground minus background: its sigmoid is the softmax's foreground
      probability, exactly;
    - deltas: per anchor, the official (py-faster-rcnn) anchor of width w_o and centre c_o (base
      16, rounded sides, centre 7.5 + the shift in inclusive pixels) against torchvision's of w_t
      and c_t (centred on the shift): dx' = dx · w_o / w_t + (c_o - c_t) / w_t, dw' = dw +
      log(w_o / w_t) (likewise y, h), so that torchvision's decoding gives the official boxes
      (as continuous boxes: the official inclusive x2 is x2 + 1 here).

    Other tensors are returned as they are."""
    from fcis.inference.official_ops import generate_anchors

    sizes, ratios = tuple(source_config["anchor_sizes"]), tuple(source_config["aspect_ratios"])
    official = torch.as_tensor(generate_anchors(16, ratios, tuple(s / 16 for s in sizes)), dtype=torch.float64)
    cell: Any = model.rpn.anchor_generator.cell_anchors[0]       # type: ignore[union-attr, index]
    tv = cell.to(torch.float64)
    num = len(official)
    if tuple(tv.shape) != (num, 4):
        raise ValueError(f"the official RPN has {num} anchors, this model {tv.shape[0]}: anchors differ")
    w_o, h_o = official[:, 2] - official[:, 0] + 1, official[:, 3] - official[:, 1] + 1
    cx_o, cy_o = (official[:, 0] + official[:, 2]) / 2 + 0.5, (official[:, 1] + official[:, 3]) / 2 + 0.5
    w_t, h_t = tv[:, 2] - tv[:, 0], tv[:, 3] - tv[:, 1]
    cx_t, cy_t = (tv[:, 0] + tv[:, 2]) / 2, (tv[:, 1] + tv[:, 3]) / 2
    out = dict(state)
    for kind in ("weight", "bias"):
        scores = state[f"rpn.head.cls_logits.{kind}"]
        if scores.shape[0] != 2 * num:
            raise ValueError(f"rpn.head.cls_logits.{kind} has {scores.shape[0]} channels, not 2 x {num} anchors: "
                             "not the official variant's RPN")
        out[f"rpn.head.cls_logits.{kind}"] = scores[num:] - scores[:num]
        deltas = state[f"rpn.head.bbox_pred.{kind}"].to(torch.float64).reshape(num, 4, -1).clone()
        sx, sy = (w_o / w_t)[:, None], (h_o / h_t)[:, None]
        deltas[:, 0] *= sx
        deltas[:, 1] *= sy
        if kind == "bias":
            deltas[:, 0] += ((cx_o - cx_t) / w_t)[:, None]
            deltas[:, 1] += ((cy_o - cy_t) / h_t)[:, None]
            deltas[:, 2] += sx.log()
            deltas[:, 3] += sy.log()
        original = state[f"rpn.head.bbox_pred.{kind}"]
        out[f"rpn.head.bbox_pred.{kind}"] = deltas.reshape(original.shape).to(original.dtype)
    return out


# --- the weights ---------------------------------------------------------------------------------

def class_rows(model: nn.Module) -> dict[str, Callable[[int], list[int]]]:
    """Parameter name -> (class index c, 0 = background) -> its rows along dim 0, for the
    class-dependent parameters of ``model`` (see the module docstring)."""
    config: Any = getattr(model, "config", None)
    kind = type(config).__name__
    if kind == "FCISConfig":
        k2 = config.group_size ** 2

        def inside_outside(c: int) -> list[int]:
            return [(2 * c + s) * k2 + p for s in (0, 1) for p in range(k2)]

        def detection(c: int) -> list[int]:
            return [c * k2 + p for p in range(k2)]

        rows: dict[str, Callable[[int], list[int]]] = {"head.inside_outside.weight": inside_outside,
                                                       "head.inside_outside.bias": inside_outside}
        if config.score_maps == "separate":
            rows.update({"head.detection.weight": detection, "head.detection.bias": detection})
        return rows
    if kind == "MaskRCNNConfig":
        def one(c: int) -> list[int]:
            return [c]

        def four(c: int) -> list[int]:
            return [4 * c + i for i in range(4)]

        return {"roi_heads.box_predictor.cls_score.weight": one, "roi_heads.box_predictor.cls_score.bias": one,
                "roi_heads.box_predictor.bbox_pred.weight": four, "roi_heads.box_predictor.bbox_pred.bias": four,
                "roi_heads.mask_predictor.mask_fcn_logits.weight": one,
                "roi_heads.mask_predictor.mask_fcn_logits.bias": one}
    raise ValueError(f"--init-from supports FCIS and Mask R-CNN models, not {type(model).__name__}")


@torch.no_grad()
def init_model(model: nn.Module, source: InitSource, class_names: list[str], *,
               class_map: Mapping[str, str] | None = None, inherited: Mapping[str, Any] | None = None
               ) -> InitReport:
    """Copy ``source``'s weights into ``model`` (built for ``class_names``, freshly initialised)
    in place: every tensor but the class-dependent rows of unmatched classes and the background.

    Raises ``ValueError`` naming the source file and the parameter when a tensor's shape differs
    (another architecture), or a parameter of ``model`` is missing from the source."""
    rows = class_rows(model)
    target = model.state_dict()
    src = source.state_dict
    config: Any = getattr(model, "config", None)
    translated = (source.model_config.get("variant") == "official"
                  and getattr(config, "variant", "torchvision") != "official")
    if translated:   # official-variant weights into a trainable FCIS: its RPN re-expressed
        src = official_rpn_as_torchvision(src, source.model_config, model)
    params = {name for name, _ in model.named_parameters()}
    missing, wrong = [], []
    copied = 0
    for name, tensor in target.items():
        if name in rows or name.endswith("num_batches_tracked"):
            continue
        value = src.get(name)
        if value is None:
            if name in params:
                missing.append(name)
            continue
        if tuple(value.shape) != tuple(tensor.shape):
            wrong.append(f"{name} {tuple(value.shape)} in the source, {tuple(tensor.shape)} here")
            continue
        tensor.copy_(value)
        copied += 1
    unused = [k for k in src if k not in target and not k.endswith("num_batches_tracked")]
    if missing or wrong or unused:
        raise ValueError(f"--init-from {source.path}: the source does not fit this {source.model_name}: "
                         + "; ".join(([f"shapes differ: {'; '.join(wrong[:3])}"] if wrong else [])
                                     + ([f"missing from the source: {missing[:3]}"] if missing else [])
                                     + ([f"not in this model: {unused[:3]}"] if unused else []))
                         + " (another architecture: a --set that changes it?)")
    matches = match_classes(class_names, source.class_names, class_map)
    num_src = len(source.class_names)
    for name, rows_of in rows.items():
        tensor, value = target[name], src.get(name)
        if value is None:
            raise ValueError(f"--init-from {source.path}: the source lacks {name}")
        expected = len(rows_of(0)) * (num_src + 1)
        if value.shape[0] != expected or tuple(value.shape[1:]) != tuple(tensor.shape[1:]):
            raise ValueError(f"--init-from {source.path}: {name} has shape {tuple(value.shape)} in the source, which "
                             f"does not fit {num_src} classes and this model's {tuple(tensor.shape[1:])} per row")
        for label, src_label in enumerate(matches, start=1):
            if src_label is not None:
                tensor[rows_of(label)] = value[rows_of(src_label)].to(tensor.dtype)
    kept = [(label, name, s, source.class_names[s - 1])
            for label, (name, s) in enumerate(zip(class_names, matches), start=1) if s is not None]
    new = [name for name, s in zip(class_names, matches) if s is None]
    inherited = dict(inherited or {})
    overridden = {k: (getattr(config, k), v) for k, v in inherited.items()
                  if config is not None and _plain(getattr(config, k, v)) != _plain(v)}
    defaults = {f.name: f.default for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else {}
    non_default = [k for k, v in inherited.items() if k not in defaults or _plain(defaults[k]) != _plain(v)]
    notes = (["the official variant (inference only) as a trainable FCIS: resnet_style='caffe', input "
              "normalised as (x - mean) / std with mean = pixel means / 255 and std = 1/255, the RPN's "
              "2-way softmax as one logit per anchor and its deltas re-expressed for torchvision's anchors "
              "(the same proposals before NMS)"] if translated else [])
    return InitReport(source.path, source.kind, source.model_name, num_src, kept, new, sorted(rows), copied,
                      {k: _plain(v) for k, v in inherited.items()}, overridden, non_default, notes)


def _plain(v: Any) -> Any:
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v
