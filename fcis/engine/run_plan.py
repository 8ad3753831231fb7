"""What a fresh training run decides before its first step, in one place: the recipe (every
``None`` field of the config), the input size chosen from the data (:mod:`fcis.engine.input_size`),
the anchors fitted to the training boxes at that size, and the data summary.

:func:`plan_fresh_run` is called once by the trainer for a new run; :func:`plan_resumed_run`
takes the decided values back from a checkpoint, so a resumed run continues with exactly them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .anchor_fit import box_table, fit_for_model
from .config import AUGMENTATION_OFF, TrainConfig
from .head_stride import HeadStrideChoice, choose_head_stride
from .input_size import InputSizeChoice, choose_input_size, given_input_size
from .recipe import resolve_recipe

__all__ = ["RunPlan", "plan_fresh_run", "plan_resumed_run", "ANCHOR_FIELDS"]

#: Model fields the anchor fit may choose.
ANCHOR_FIELDS = ("anchor_sizes", "aspect_ratios", "window_sizes")


@dataclass
class RunPlan:
    """The resolved training config, the model overrides to build with, and the record that
    goes to ``config.json`` and the checkpoints (``recipe``, ``input_size``, ``anchors``, ``data``)."""

    cfg: TrainConfig
    model_overrides: dict[str, Any]
    record: dict[str, Any]


def plan_fresh_run(builder: Callable[..., torch.nn.Module], train_ds, cfg: TrainConfig,
                   model_overrides: dict[str, Any], pretrained: bool, world_size: int,
                   log: Callable[[str], None] | None = print, *, inherited: dict[str, Any] | None = None
                   ) -> RunPlan:
    """Resolve ``cfg``'s recipe, choose the input size (``cfg.input_size == "auto"`` and no size
    given), fit the anchors at that size (``cfg.anchors`` "fit" or "fit-boxes", recipe ``auto``)
    and summarise the data. ``builder`` is the model's builder; ``model_overrides`` the user's
    ``--set`` fields (they win over the recipe, the input size and the fit); ``log`` prints
    (None: silent). ``inherited``: the config fields of the model a run starts from
    (``cfg.init_from``, :func:`fcis.weights.init_from.inherited_config`): kept like given ones (its
    input size and anchors are not chosen again: its RPN is kept), unless ``--set`` gives another
    value."""
    from .inspect_data import inspect_dataset

    inherited = dict(inherited or {})
    given = {**inherited, **model_overrides, **cfg.model_overrides()}
    defaults = _default_config(builder, train_ds.num_classes, pretrained, given)
    names = {f.name for f in dataclasses.fields(defaults)}
    cfg, recipe = resolve_recipe(cfg, pretrained=pretrained, num_train_images=len(train_ds),
                                 world_size=world_size, model_fields=names, given_model=given,
                                 num_train_instances=_count_instances(train_ds))
    overrides = {**recipe.model, **inherited, **model_overrides}
    table = box_table(train_ds)
    size = plan_input_size(builder, train_ds.num_classes, pretrained, given, recipe.model, cfg, table)
    if size is not None and size.source == "data":
        overrides.update(min_size=size.min_size, max_size=size.max_size)
    run_defaults = dataclasses.replace(defaults, **{k: v for k, v in {**recipe.model, **given}.items()
                                                    if k in names and k not in ANCHOR_FIELDS})
    if size is not None:
        run_defaults = dataclasses.replace(run_defaults, min_size=size.min_size, max_size=size.max_size)
    stride = plan_head_stride(run_defaults, names, pretrained, given, cfg)
    if stride is not None and stride.source == "data":
        overrides["head_stride"] = stride.stride
    fixed = {k: v for k, v in {**recipe.model, **given}.items() if k in ANCHOR_FIELDS}
    fit = fit_for_model("", run_defaults, train_ds, given=fixed, table=table,
                        paper=cfg.anchors == "paper" or cfg.recipe != "auto", balanced=cfg.anchors != "fit-boxes")
    if fit is not None:
        if cfg.recipe != "auto" and not any(k in given for k in ANCHOR_FIELDS):
            fit.source = f"recipe {cfg.recipe}"
        user_anchors = {**model_overrides, **cfg.model_overrides()}
        if any(k in inherited for k in ANCHOR_FIELDS) and not any(k in user_anchors for k in ANCHOR_FIELDS):
            fit.source = f"the source model's (--init-from {cfg.init_from})"
        for k, v in fit.fields.items():
            if k not in given:
                overrides[k] = v
    anchors_now = {k: overrides.get(k, getattr(run_defaults, k)) for k in ANCHOR_FIELDS if k in names}
    report = inspect_dataset(train_ds, dataclasses.replace(run_defaults, **anchors_now))
    if log is not None:
        if size is not None:   # first: the summary below measures the boxes at this size
            log(size.describe())
        if stride is not None:
            log(stride.describe())
        log(report.describe(short=True))
        log(recipe.describe())
        if fit is not None:
            log(fit.describe())
    record = {"recipe": recipe.to_dict(), "input_size": size.to_dict() if size is not None else None,
              "head_stride": stride.to_dict() if stride is not None else None,
              "anchors": fit.to_dict() if fit is not None else None, "data": report.summary()}
    return RunPlan(cfg, overrides, record)


def plan_input_size(builder, num_classes: int, pretrained: bool, given: dict[str, Any], recipe_model: dict[str, Any],
                    cfg: TrainConfig, table) -> InputSizeChoice | None:
    """The run's input size: given (``--min-size``/``--max-size``/``--set``; a missing one is the
    model's default), the recipe's, the model's default (``cfg.input_size == "model"``), or chosen
    from the data (:func:`fcis.engine.input_size.choose_input_size`; with ImageNet weights,
    ``pretrained``, photos smaller than the model's input are upsampled to it, as in the paper).
    None for a model without ``min_size``/``max_size``."""
    bare = _default_config(builder, num_classes, pretrained, {})
    if not (hasattr(bare, "min_size") and hasattr(bare, "max_size")):
        return None
    default = (int(bare.min_size), int(bare.max_size))
    fixed = {k: v for k, v in {**recipe_model, **given}.items() if k in ("min_size", "max_size")}
    if fixed:
        mn, mx = int(fixed.get("min_size", default[0])), int(fixed.get("max_size", default[1]))
        by_user = any(k in given for k in ("min_size", "max_size"))
        source = "given" if by_user else f"recipe {cfg.recipe}"
        return given_input_size(mn, mx, source, "--min-size/--max-size given" if by_user
                                else f"the official experiment's ({cfg.recipe})", default, table)
    if cfg.input_size == "model":
        return given_input_size(*default, "model", "--input-size model", default, table)
    return choose_input_size(table, *default, native_cap=not pretrained)


def plan_head_stride(run_defaults, names: set[str], pretrained: bool, given: dict[str, Any],
                     cfg: TrainConfig) -> HeadStrideChoice | None:
    """FCIS's score-map stride (:func:`fcis.engine.head_stride.choose_head_stride`) for recipe
    ``auto``; None for a model without ``head_stride`` or another recipe (the paper's 16)."""
    if "head_stride" not in names or cfg.recipe != "auto":
        return None
    return choose_head_stride(run_defaults, pretrained=pretrained, given="head_stride" in given)


def _count_instances(train_ds) -> int:
    """Object instances of the training set (crowd regions left out, as in its targets), counted on
    its flat index."""
    return int((~train_ds.index.ann_crowd).sum())


def _default_config(builder, num_classes: int, pretrained: bool, given: dict[str, Any]):
    """The config ``builder`` makes with ``given`` (built on the meta device: no memory, no RNG
    draws). ``backbone_pretrained`` tells it about ImageNet weights without loading them."""
    extra = {"backbone_pretrained": True} if pretrained else {}
    try:
        with torch.device("meta"):
            return builder(num_classes=num_classes, **extra, **given).config
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        if "backbone_pretrained" in str(e) and extra:   # a builder whose config lacks the field
            return _default_config(builder, num_classes, False, given)
        raise ValueError(f"unknown model option ({e}); options are the fields of the model's config") from None


def plan_resumed_run(cfg: TrainConfig, ckpt: dict[str, Any]) -> RunPlan:
    """The values a checkpoint's run decided, for every field ``cfg`` leaves ``None`` (a field
    given now still wins, and ``check_resumable`` warns about it)."""
    old = ckpt.get("train_config", {})
    filled = {k: old[k] for k in cfg.unresolved() if old.get(k) is not None}
    # a checkpoint from before the augmentation fields trained with the flip only
    filled.update({k: v for k, v in AUGMENTATION_OFF.items() if k in cfg.unresolved() and k not in old})
    if "lr" in old and cfg.lr is None and old["lr"] is not None:
        filled["lr"] = old["lr"]
    cfg = dataclasses.replace(cfg, **filled)
    if cfg.unresolved():   # a checkpoint from before recipes: resolve the rest as a fresh run would
        cfg, _ = resolve_recipe(cfg, pretrained=bool(ckpt.get("model_config", {}).get("backbone_pretrained")),
                                num_train_images=1)
    record: dict[str, Any] = {k: ckpt[k] for k in ("recipe", "input_size", "head_stride", "anchors", "data",
                                                   "init_from")
                              if k in ckpt}
    return RunPlan(cfg, {}, record)
