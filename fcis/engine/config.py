"""Typed configuration of a training run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config_io import dataclass_from_dict

#: Learning rate per image of a step (the paper: 5e-4). The default ``lr`` of a run is this times
#: the number of images per step (``batch_size`` x processes), i.e. the linear scaling rule.
BASE_LR_PER_IMAGE = 5e-4
#: The augmentation fields the recipe fills in (issue 22), with the values that turn each off
#: (what a run before them did: flip only).
AUGMENTATION_FIELDS = ("scale_jitter", "photometric", "copy_paste")
AUGMENTATION_OFF = {"scale_jitter": (1.0, 1.0), "photometric": False, "copy_paste": 0.0}


def _field(default: Any, help: str, **flag: Any) -> Any:
    """A :class:`TrainConfig` field with its documentation, ``help``, in its metadata; ``fcis
    train`` generates one flag per field from them (:mod:`fcis.cli.config_flags`), with the
    ``flag`` options (``choices``, ``metavar``; ``cli=False`` keeps a field off the command line)."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`fcis.engine.train`.

    Fields left ``None`` (``iterations``, ``optimizer``, ``lr``, ``weight_decay``, the warm-up,
    ``lr_steps`` and the augmentation: ``scale_jitter``, ``photometric``, ``copy_paste``) are filled
    in by :func:`fcis.engine.recipe.resolve_recipe` when training starts (``recipe``: "auto",
    "paper-coco" or "paper-voc"); given values always win.

    Learning-rate rule for SGD: ``lr=None`` means ``BASE_LR_PER_IMAGE * images_per_step`` (5e-4 per
    image, scaled linearly with the images of one optimizer step; see :meth:`resolved_lr`).
    ``lr_steps`` are fractions of ``iterations`` at which the rate is multiplied by ``gamma``
    (the paper's 20k + 10k schedule is about (0.67,)); a linear warm-up from
    ``warmup_factor * lr`` to ``lr`` spans the first ``warmup_iters`` iterations.

    Distributed runs (``torchrun``): ``batch_size`` is per process, so one step sees
    ``batch_size x WORLD_SIZE`` images and the default rate is 5e-4 times that. Trainable
    BatchNorm layers are synchronised over the processes (``sync_bn``), and the model is wrapped
    in ``DistributedDataParallel`` with ``find_unused_parameters`` (False: every trainable
    parameter of the models here gets a gradient in every step, even from an image without
    objects; set it for a model where some do not).

    Mixed precision: ``amp`` runs the forward under ``torch.autocast`` with ``amp_dtype``
    (``"bf16"``, or ``"fp16"`` with a ``GradScaler`` whose state is checkpointed); fp16 needs
    CUDA, bf16 also runs on the CPU (see :mod:`fcis.engine.amp`).
    """

    # Fields left None are chosen by the recipe (fcis.engine.recipe) when training starts: "auto"
    # picks by how the network starts (ImageNet weights: the paper's SGD; random: AdamW), the
    # named recipes ("paper-coco", "paper-voc") resolve the official experiments. A value given
    # here always wins over the recipe's. Each field's help is also its `fcis train` flag's.
    recipe: str = _field("auto", "auto: the paper's SGD with --weights-backbone, AdamW from random weights; "
                         "paper-coco / paper-voc: the official experiment (needs ImageNet weights)",
                         choices=("auto", "paper-coco", "paper-voc"))
    anchors: str = _field("fit", "fit: anchor sizes, their count (FCIS) and ratios fitted to the training boxes, "
                          "each class weighing the same (as in COCO AP); fit-boxes: fitted by box count, the "
                          "model's count of sizes (the fit before issue 22); paper: the model's defaults "
                          "(--set anchor_sizes=... overrides any)", choices=("fit", "fit-boxes", "paper"))
    allow_random_init: bool = _field(False, "let a paper-* recipe run without ImageNet weights (it will not "
                                     "reproduce the paper)")
    init_from: str | None = _field(None, "start from a trained model: an fcis checkpoint (e.g. written by fcis convert "
                                   "weights) or torchvision's maskrcnn_resnet50_fpn_coco-*.pth; the backbone, RPN and "
                                   "shared head layers are kept, classes whose names match the source's keep their "
                                   "channels, the others start afresh; the recipe is then the paper's fine-tuning SGD "
                                   "and the source's anchors are kept", metavar="CHECKPOINT")
    init_class_map: str | None = _field(None, "with --init-from: user classes taken from source classes of another "
                                        "name, 'pedestrian=person,motorbike=motorcycle' or a JSON file "
                                        "{\"pedestrian\": \"person\"}", metavar="MAP")
    iterations: int | None = _field(None, "training iterations (optimizer steps; default: the recipe's)")
    batch_size: int = _field(1, "images per step and process")
    lr: float | None = _field(None, "learning rate (default: sgd 5e-4 x images per step across processes; "
                              "adamw 1e-3)")
    optimizer: str | None = _field(None, "default: the recipe's (sgd with ImageNet weights, adamw from random "
                                   "weights)", choices=("sgd", "adamw"))
    momentum: float = _field(0.9, "SGD's momentum")
    weight_decay: float | None = _field(None, "weight decay (default: the recipe's, the paper's 5e-4)")
    bias_weight_decay: bool = _field(False, "weight decay on biases too (the official MXNet code has none)")
    warmup_iters: int | None = _field(None, "iterations of the linear warm-up (default: the recipe's)")
    warmup_factor: float | None = _field(None, "warm-up starts at lr x this (default: the recipe's, 0.1)")
    lr_steps: tuple[float, ...] | None = _field(None, "fractions of the run at which the rate is multiplied by "
                                                "--gamma (default: the recipe's)", metavar="FRACTION")
    gamma: float = _field(0.1, "factor of the rate at each of --lr-steps")
    clip_grad_norm: float | None = _field(None, "clip the L2 norm of all gradients to this (default: no "
                                          "clipping)")
    max_nonfinite: int = _field(10, "stop after this many consecutive NaN/inf losses")

    device: str = _field("auto", "cpu, cuda, cuda:N or auto")
    workers: int = _field(2, "DataLoader worker processes (0: the main process)")
    seed: int = _field(0, "seed of the initialisation, the data order and the augmentation")

    eval_every: int = _field(0, "validate every N iterations (0: only at the end)")
    checkpoint_every: int = _field(1000, "write last.pt every N iterations (and at the end)")
    log_every: int = _field(20, "a log.jsonl line every N iterations")

    on_bad_sample: str = _field("skip", "skip unreadable images (named in summary.json), or raise",
                                choices=("skip", "raise"))
    hflip_prob: float = _field(0.5, "probability of the horizontal flip augmentation")
    # Augmentation for few images (issue 22; fcis/data/transforms.py, fcis/data/copy_paste.py). None:
    # the recipe's (random weights: copy-paste 1.0; ImageNet weights and the paper-* recipes: flip only).
    scale_jitter: tuple[float, ...] | None = _field(
        None, "scale jitter: the content of each training image scaled by a random factor in LOW HIGH "
        "(0.1 <= LOW <= HIGH <= 2), cropped or padded back to the input size; 1 1: off (default: the recipe's)",
        metavar="SCALE")
    photometric: bool | None = _field(None, "colour jitter of the training images: brightness, contrast and "
                                      "saturation x0.8-1.2 (default: the recipe's)")
    copy_paste: float | None = _field(None, "probability of pasting a random subset of another training "
                                      "image's instances onto an image (Ghiasi et al. 2021); 0: off "
                                      "(default: the recipe's)", metavar="P")
    # Input size: None keeps the model's own default; set, it goes to the model and transforms.
    min_size: int | None = _field(None, "short side of the network input (default: chosen from the data, "
                                  "see --input-size)")
    max_size: int | None = _field(None, "long side limit of the network input (default: chosen from the data)")
    # Input size chosen from the data (issue 22; fcis.engine.input_size) when neither size is given.
    input_size: str = _field("auto", "auto: without --min-size/--max-size, the input size is chosen from the "
                             "training data (photos smaller than the model's input are not upsampled; small "
                             "objects enlarge it, at most 2x the photos' size and 1.5x the model's default "
                             "pixels); model: the model's default (FCIS 600/1000)", choices=("auto", "model"))

    amp: bool = _field(False, "mixed precision (torch.autocast); CUDA: bf16 or fp16, CPU: bf16 only")
    amp_dtype: str = _field("bf16", "autocast dtype with --amp (fp16 trains with loss scaling; CUDA only)",
                            choices=("bf16", "fp16"))
    sync_bn: bool = _field(True, "distributed: trainable BatchNorm -> synchronised BatchNorm")
    find_unused_parameters: bool = _field(False, "distributed: DDP's find_unused_parameters (for models where "
                                          "some parameters get no gradient in a step; not needed by the "
                                          "models here)")
    # Aspect-ratio grouped batches (issue 23; fcis.engine.data.aspect_groups)
    group_aspect: bool = _field(True, "with --batch-size > 1: the images of each batch from one aspect-ratio "
                                "group (landscape with landscape...), so less padding")

    def __post_init__(self) -> None:
        if self.lr_steps is not None:
            self.lr_steps = tuple(float(s) for s in self.lr_steps)
        problems = []
        if self.iterations is not None and self.iterations < 1:
            problems.append(f"iterations must be >= 1, got {self.iterations}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number, got {self.lr}")
        if self.lr_steps is not None and (any(not 0 < s <= 1 for s in self.lr_steps)
                                          or list(self.lr_steps) != sorted(self.lr_steps)):
            problems.append(f"lr_steps must be increasing fractions in (0, 1], got {self.lr_steps}")
        if (self.warmup_iters is not None and self.warmup_iters < 0) or (
                self.warmup_factor is not None and not 0 < self.warmup_factor <= 1):
            problems.append("warmup_iters must be >= 0 and warmup_factor in (0, 1]")
        if self.weight_decay is not None and self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.init_class_map and not self.init_from:
            problems.append("init_class_map needs init_from (the checkpoint whose classes it maps)")
        if self.anchors not in ("fit", "fit-boxes", "paper"):
            problems.append(f"anchors must be 'fit', 'fit-boxes' or 'paper', got {self.anchors!r}")
        if self.input_size not in ("auto", "model"):
            problems.append(f"input_size must be 'auto' or 'model', got {self.input_size!r}")
        if self.optimizer not in (None, "sgd", "adamw"):
            problems.append(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.on_bad_sample not in ("skip", "raise"):
            problems.append(f"on_bad_sample must be 'skip' or 'raise', got {self.on_bad_sample!r}")
        if self.workers < 0:
            problems.append(f"workers must be >= 0, got {self.workers}")
        if self.max_nonfinite < 1:
            problems.append(f"max_nonfinite must be >= 1, got {self.max_nonfinite}")
        if self.amp_dtype not in ("bf16", "fp16"):
            problems.append(f"amp_dtype must be 'bf16' or 'fp16', got {self.amp_dtype!r}")
        if not 0 <= self.hflip_prob <= 1:
            problems.append(f"hflip_prob must be in [0, 1], got {self.hflip_prob}")
        problems += self._augmentation_problems()
        for name in ("eval_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if problems:
            raise ValueError("; ".join(problems))

    def _augmentation_problems(self) -> list[str]:
        """Check (and normalise) the augmentation fields; returns the problems found."""
        from ..data.transforms import SCALE_JITTER_LIMITS

        problems = []
        if self.scale_jitter is not None:
            self.scale_jitter = tuple(float(v) for v in self.scale_jitter)
            lo, hi = SCALE_JITTER_LIMITS
            if len(self.scale_jitter) != 2 or not lo <= self.scale_jitter[0] <= self.scale_jitter[1] <= hi:
                problems.append(f"scale_jitter must be two factors LOW HIGH with {lo} <= LOW <= HIGH <= {hi} "
                                f"(1 1: off), got {self.scale_jitter}")
        if self.copy_paste is not None and not 0 <= self.copy_paste <= 1:
            problems.append(f"copy_paste must be a probability in [0, 1], got {self.copy_paste}")
        return problems

    def resolved_lr(self, world_size: int = 1) -> float:
        """The learning rate used: ``lr``, or 5e-4 x (batch_size x world_size) when it is None.

        ``world_size`` is the number of training processes (torchrun's ``WORLD_SIZE``), so the
        default follows the images of one optimizer step (linear scaling rule)."""
        if self.lr is not None:
            return float(self.lr)
        return BASE_LR_PER_IMAGE * self.batch_size * world_size

    def unresolved(self) -> list[str]:
        """Names of the fields still None that a run needs (the recipe fills them in)."""
        return [k for k in ("iterations", "optimizer", "weight_decay", "warmup_iters", "warmup_factor", "lr_steps",
                            *AUGMENTATION_FIELDS)
                if getattr(self, k) is None]

    def require_resolved(self, *names: str) -> None:
        """Raise ``ValueError`` when a field the run needs (``names``, default: all of
        ``unresolved``'s) is still None."""
        missing = [k for k in self.unresolved() if not names or k in names]
        if missing:
            raise ValueError(f"TrainConfig fields {', '.join(missing)} are None: resolve the recipe "
                             "first (fcis.engine.recipe.resolve_recipe; fcis.engine.train does it)")

    def model_overrides(self) -> dict[str, Any]:
        """Config fields this run imposes on the model (the input size, when set)."""
        out = {}
        if self.min_size is not None:
            out["min_size"] = self.min_size
        if self.max_size is not None:
            out["max_size"] = self.max_size
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return dataclass_from_dict(cls, data)
