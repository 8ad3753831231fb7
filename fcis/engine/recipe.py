"""Training recipes: every setting a run leaves unset (``None`` in :class:`TrainConfig`), chosen
once when training starts.

``auto`` (the default) chooses by how the network starts:

- **ImageNet weights** (``--weights-backbone``) or a trained model (``--init-from``): the paper's
  recipe as the official code runs it:
  SGD, momentum 0.9, lr 5e-4 per image of a step (linear scaling), weight decay 5e-4, warm-up
  from lr/10 over 250 iterations (at most 5% of the run), one step (x0.1) at 2/3 of the run.
- **random weights**: AdamW at lr 1e-3, weight decay 5e-4, warm-up from lr/10 over 5% of the
  run (at most 500 iterations), steps x0.1 at 75% and 92% of the run; FCIS's classification
  loss balanced between foreground and background RoIs (``cls_loss_balance=True``). Measured on synthetic
  shapes with the same anchors: segm AP after 200 iterations 30% with AdamW (lr 1e-3) and 0.3%
  with SGD (lr 0.02, momentum 0.9); see benchmarks/DEFAULTS.md. Augmentation for few images:
  ``SCRATCH_AUGMENTATION`` (copy-paste on every image) besides the flip. The normalisation
  layers (``norm``, every family): :data:`SCRATCH_NORM` = "bn", BatchNorm with batch statistics,
  rather than GroupNorm in the backbone and heads ("gn"). Measured: ``fcis_resnet18`` from random
  weights, 300 iterations of 2 images, the bare command with ``--set norm=...``: segm AP 27.3 (BN)
  against 1.7 (GN) on synthetic shapes at 256 px, 27.7 against 9.9 on PennFudanPed at 320/512;
  GN's training step 1.04x the CPU time (benchmarks/NORM.md).

Without ``iterations``, ``auto`` trains for a length from the data: COCO's schedules in epochs
over the training set (6x from random weights, 1x from ImageNet weights), dense images counted
by their instances, with a minimum; see :mod:`fcis.engine.run_length`.

``paper-coco`` and ``paper-voc`` resolve the official experiments (msracver/FCIS, see
docs/REPRODUCING.md, "What the recipes set"): iterations from epochs x the flip-doubled dataset / images per step
(batch size x processes), LR steps, warm-up, OHEM or not, anchors, input size and flip. They
need ImageNet weights; without them the run stops and says so, unless ``allow_random_init``.

A value the user gives (a ``TrainConfig`` field that is not ``None``, a model field given with
``--set``) always wins; :attr:`ResolvedRecipe.sources` says where each value came from.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .config import AUGMENTATION_FIELDS, AUGMENTATION_OFF, BASE_LR_PER_IMAGE, TrainConfig
from .run_length import iterations_for_data

__all__ = ["RECIPES", "ResolvedRecipe", "resolve_recipe", "scratch_warmup", "ADAMW_LR", "SCRATCH_AUGMENTATION",
           "SCRATCH_NORM"]

RECIPES = ("auto", "paper-coco", "paper-voc")

#: The ``norm`` of a model trained from random weights (fcis/models/norm.py): "bn", BatchNorm with
#: batch statistics in the ResNet, or "gn", GroupNorm in the ResNet and the heads (He, Girshick &
#: Dollár, "Rethinking ImageNet Pre-training"; detectron2's scratch GN configs). The one that
#: learned more at equal iterations here (SCRATCH_NORM_MEASURED); the lead confirms on real photos.
SCRATCH_NORM = "bn"
#: What chose :data:`SCRATCH_NORM` (benchmarks/NORM.md has the commands and the losses).
#: fcis_resnet18 from random weights, 300 iterations of 2 images, ``fcis train`` as a user runs it.
SCRATCH_NORM_MEASURED = ("fcis_resnet18, 300 iterations: segm AP 27.3 against 1.7 with GroupNorm on synthetic "
                         "shapes, 27.7 against 9.9 on PennFudanPed; benchmarks/NORM.md")
#: AdamW's rate for a random initialisation (measured at 2 images per step; not scaled).
ADAMW_LR = 1e-3
#: The augmentation of the random-init recipe (issue 22): copy-paste on every image (Ghiasi et al.
#: 2021: most useful with little data) besides the flip. Measured on PennFudanPed, 300 iterations
#: of 2 images from random weights (benchmarks/AUGMENT.md): mask AP 27.7 flip only, 29.5 with
#: copy-paste on half of the images, 16.7 with scale jitter 0.5-1.5, 20.3 with scale jitter +
#: colour jitter + copy-paste: so scale and colour jitter stay off (``--scale-jitter``,
#: ``--photometric`` turn them on). Copy-paste on every image rather than half, at stride 8
#: (benchmarks/ABLATION.md): 38.2 / 39.3 / 38.7 against 35.5 / 38.0 / 35.0 at seeds 0-2. With
#: ImageNet weights and in the paper-* recipes: flip only (``AUGMENTATION_OFF``), as the paper.
SCRATCH_AUGMENTATION = {"scale_jitter": (1.0, 1.0), "photometric": False, "copy_paste": 1.0}

#: The official experiments (docs/REPRODUCING.md, "What the recipes set"). ``model`` fields are applied
#: when the model's config has them; the others are recorded in the notes.
PAPER = {
    "paper-coco": {
        "epochs": 8, "lr_steps": (5.33 / 8,), "warmup_iters": 250, "warmup_factor": 0.1,
        "model": {"ohem": True, "anchor_sizes": (64, 128, 256, 512), "aspect_ratios": (0.5, 1.0, 2.0),
                  "min_size": 600, "max_size": 1000, "rpn_min_size": 2, "roi_bg_iou_low": 0.0},
        "processes": "8 GPUs x 1 image",
    },
    "paper-voc": {
        "epochs": 22, "lr_steps": (14 / 22,), "warmup_iters": 0, "warmup_factor": 0.1,
        "model": {"ohem": False, "anchor_sizes": (128, 256, 512), "aspect_ratios": (0.5, 1.0, 2.0),
                  "min_size": 600, "max_size": 1000, "rpn_min_size": 16, "roi_bg_iou_low": 0.1},
        "processes": "4 GPUs x 1 image",
    },
}


_NORM_NAMES = {"bn": "BatchNorm with batch statistics (norm='bn'",
               "gn": "GroupNorm in the backbone and heads (norm='gn'"}


def scratch_warmup(iterations: int) -> int:
    """Warm-up of the random-init recipe: 5% of the run, at most 500 iterations."""
    return min(500, int(round(0.05 * iterations)))


@dataclass
class ResolvedRecipe:
    """What a recipe chose: ``train`` (TrainConfig values), ``model`` (model config values to
    set unless given with ``--set``), ``sources`` (field -> "recipe" or "given"), ``reason`` and
    ``notes`` (official values that this model has no field for, warnings)."""

    name: str
    reason: str
    train: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    length: str = ""   # why the run has its number of iterations, when the recipe chose it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """Several lines for the start of a run."""
        keys = ("optimizer", "lr", "weight_decay", "iterations", "warmup_iters", "warmup_factor", "lr_steps")
        vals = ", ".join(f"{k}={self.train[k]}" + ("" if self.sources.get(k) == "recipe" else " (given)")
                         for k in keys if k in self.train)
        lines = [f"recipe {self.name}: {self.reason}", f"  {vals}"]
        if self.length:
            lines.append(f"  iterations {self.train['iterations']} from the data: {self.length}")
        aug = ", ".join(f"{k}={_show(self.train[k])}" + ("" if self.sources.get(k) == "recipe" else " (given)")
                        for k in AUGMENTATION_FIELDS if k in self.train)
        if aug:
            lines.append(f"  augmentation: hflip_prob={_show(self.train.get('hflip_prob'))}, {aug}")
        if self.model:
            lines.append("  model: " + ", ".join(f"{k}={v}" for k, v in self.model.items()))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _show(v: Any) -> str:
    return " ".join(str(x) for x in v) if isinstance(v, (tuple, list)) else str(v)


def resolve_recipe(cfg: TrainConfig, *, pretrained: bool, num_train_images: int, world_size: int = 1,
                   model_fields: set[str] | None = None, given_model: dict[str, Any] | None = None,
                   num_train_instances: int | None = None) -> tuple[TrainConfig, ResolvedRecipe]:
    """Fill the ``None`` fields of ``cfg`` from its recipe.

    Args:
        cfg: the run's configuration (``cfg.recipe`` names the recipe).
        pretrained: the backbone starts from ImageNet weights, or the whole network from a trained
            model (``cfg.init_from``).
        num_train_images: images of the training set (the recipes count epochs).
        num_train_instances: object instances of the training set (``auto``'s length from the
            data, :func:`fcis.engine.run_length.iterations_for_data`); None: as many as images.
        world_size: training processes (images per step = ``batch_size x world_size``).
        model_fields: field names of the model's config (recipe values for other names are
            only recorded in the notes); None: apply all.
        given_model: model fields the user set (``--set``); the recipe does not change them.

    Returns the resolved config (no ``None`` left among :meth:`TrainConfig.unresolved`) and the
    record of the choice. Raises ``ValueError`` for an unknown recipe, or a paper recipe without
    ImageNet weights unless ``cfg.allow_random_init``.
    """
    if cfg.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {cfg.recipe!r}; choose one of {', '.join(RECIPES)}")
    images_per_step = cfg.batch_size * world_size
    notes: list[str] = []
    model: dict[str, Any] = {}
    length = ""
    augmentation = dict(AUGMENTATION_OFF)
    if cfg.recipe == "auto":
        if cfg.iterations is None:
            instances = num_train_images if num_train_instances is None else num_train_instances
            iterations, length = iterations_for_data(num_train_images, instances, images_per_step, pretrained)
        else:
            iterations = cfg.iterations
        if pretrained:
            start = ("the network starts from a trained model (--init-from): the paper's fine-tuning recipe"
                     if cfg.init_from else "the backbone starts from ImageNet weights: the paper's recipe")
            reason = f"{start} (SGD, 5e-4 per image, warm-up 250 iterations at 1/10, one step at 2/3, flip only)"
            chosen = {"optimizer": "sgd", "weight_decay": 5e-4, "warmup_factor": 0.1, "lr_steps": (2 / 3,),
                      "warmup_iters": min(250, int(round(0.05 * iterations)))}
        else:
            balanced = model_fields is None or "cls_loss_balance" in model_fields
            given_model = given_model or {}
            norm = "norm" not in given_model and (model_fields is None or "norm" in model_fields)
            reason = ("the backbone starts from random weights: AdamW (lr 1e-3), warm-up 5% of the run, "
                      "steps at 75% and 92%"
                      + (", FCIS's class loss balanced between foreground and background RoIs" if balanced else "")
                      + " -- measured to learn far sooner from scratch than the paper's SGD"
                      + (" and plain mean" if balanced else "")
                      + (f"; {_NORM_NAMES[SCRATCH_NORM]}: {SCRATCH_NORM_MEASURED})" if norm else "")
                      + "; copy-paste of instances between images for few images; pass --weights-backbone for "
                      "the paper's recipe")
            augmentation = dict(SCRATCH_AUGMENTATION)
            # Balanced class loss from scratch: segm AP 29.1 against 19.3 with the plain mean at 300
            # iterations (OHEM off instead: 26.4; benchmarks/DEFAULTS.md): the plain mean keeps
            # every foreground RoI classified as background for hundreds of iterations.
            if "cls_loss_balance" in given_model:
                notes.append(f"cls_loss_balance={given_model['cls_loss_balance']!r} given (the recipe's is True)")
            elif model_fields is None or "cls_loss_balance" in model_fields:
                model["cls_loss_balance"] = True
            if "norm" in given_model:
                notes.append(f"norm={given_model['norm']!r} given (the recipe's is {SCRATCH_NORM!r})")
            elif norm:
                model["norm"] = SCRATCH_NORM
            chosen = {"optimizer": "adamw", "weight_decay": 5e-4, "warmup_factor": 0.1, "lr_steps": (0.75, 0.92),
                      "warmup_iters": scratch_warmup(iterations)}
    else:
        spec: dict[str, Any] = PAPER[cfg.recipe]
        if model_fields is not None and "ohem" not in model_fields:
            raise ValueError(f"recipe {cfg.recipe} is the FCIS paper's experiment: train an fcis_* model with it "
                             "(fcis_resnet101 for the paper's numbers)")
        if not pretrained:
            need = (f"recipe {cfg.recipe} reproduces the paper's experiment, which starts from an ImageNet-trained "
                    "ResNet-101: pass --weights-backbone ResNet101_Weights.IMAGENET1K_V1 (or a weights file) with "
                    "--model fcis_resnet101")
            if not cfg.allow_random_init:
                raise ValueError(need + ", or --allow-random-init to run it from random weights anyway "
                                 "(it will not reproduce the paper's numbers)")
            notes.append("running WITHOUT ImageNet weights (--allow-random-init): the paper's numbers are "
                         "out of reach this way")
        steps_per_epoch = math.ceil(2 * num_train_images / images_per_step)   # the flip-doubled set
        iterations = cfg.iterations or max(1, spec["epochs"] * steps_per_epoch)
        reason = (f"the official {cfg.recipe[6:].upper()} experiment: {spec['epochs']} epochs over the "
                  f"flip-doubled set ({num_train_images} images x 2 / {images_per_step} per step = "
                  f"{steps_per_epoch} iterations per epoch; official: {spec['processes']})")
        chosen = {"optimizer": "sgd", "weight_decay": 5e-4, "warmup_factor": spec["warmup_factor"],
                  "lr_steps": spec["lr_steps"], "warmup_iters": min(spec["warmup_iters"], iterations)}
        given_model = given_model or {}
        for k, v in spec["model"].items():
            if k in given_model:
                notes.append(f"{k}: {given_model[k]!r} given (the official value is {v!r})")
            elif model_fields is None or k in model_fields:
                model[k] = v
            else:
                notes.append(f"{k}={v!r} is official but this model has no such field: not applied")
        if cfg.hflip_prob != 0.5:
            notes.append(f"hflip_prob {cfg.hflip_prob} given (the official runs flip every image once per epoch)")
        extra = [k for k in AUGMENTATION_FIELDS if getattr(cfg, k) is not None and
                 _show(getattr(cfg, k)) != _show(AUGMENTATION_OFF[k])]
        if extra:
            notes.append(f"{', '.join(extra)} given (the official runs flip only)")

    sources: dict[str, str] = {}
    values: dict[str, Any] = {"iterations": iterations}
    sources["iterations"] = "given" if cfg.iterations is not None else "recipe"
    for k, v in chosen.items():
        given = getattr(cfg, k)
        values[k] = given if given is not None else v
        sources[k] = "given" if given is not None else "recipe"
    for k, v in augmentation.items():
        given = getattr(cfg, k)
        values[k] = given if given is not None else v
        sources[k] = "given" if given is not None else "recipe"
    if cfg.lr is not None:
        values["lr"], sources["lr"] = float(cfg.lr), "given"
    else:   # the rate follows the optimizer finally used (a given --optimizer changes it)
        values["lr"] = ADAMW_LR if values["optimizer"] == "adamw" else BASE_LR_PER_IMAGE * images_per_step
        sources["lr"] = "recipe"
    if values["optimizer"] != chosen["optimizer"]:
        notes.append(f"optimizer {values['optimizer']} given; the recipe's is {chosen['optimizer']}")
    resolved = dataclasses.replace(cfg, **values)
    assert resolved.lr_steps is not None  # resolved above (given or from the recipe)
    values["lr_steps"] = tuple(resolved.lr_steps)
    values["scale_jitter"] = resolved.scale_jitter
    values["hflip_prob"] = cfg.hflip_prob   # not the recipe's: recorded to describe the augmentation
    sources["hflip_prob"] = "config"
    return resolved, ResolvedRecipe(cfg.recipe, reason, values, model, sources, notes, length)
