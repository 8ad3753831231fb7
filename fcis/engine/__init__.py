"""Training engine: configuration, LR schedule, checkpoints, the training loop and evaluation.

Typical use::

    from fcis.engine import TrainConfig, train
    summary = train("fcis_resnet50", "train.json", "val.json", "runs/exp", TrainConfig(iterations=20000))

Importing this package does not import torch: :class:`TrainConfig` and the errors load at once
(the command line builds ``fcis train``'s flags from ``TrainConfig`` also where torch is not
installed, for ``fcis predict --onnx``); the other names load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import BASE_LR_PER_IMAGE, TrainConfig
from .errors import CheckpointError, InputError, TrainingError

if TYPE_CHECKING:
    from . import distributed
    from .amp import check_amp
    from .checkpoint import load_checkpoint, load_model, save_checkpoint
    from .evaluator import evaluate_model, predict_dataset
    from .schedule import build_scheduler, lr_factor_fn
    from .trainer import train

#: name -> the submodule that defines it (imported on first use; they need torch)
_LAZY = {"distributed": "distributed", "check_amp": "amp", "load_checkpoint": "checkpoint",
         "load_model": "checkpoint", "save_checkpoint": "checkpoint", "evaluate_model": "evaluator",
         "predict_dataset": "evaluator", "build_scheduler": "schedule", "lr_factor_fn": "schedule",
         "train": "trainer"}

__all__ = [
    "TrainConfig", "BASE_LR_PER_IMAGE", "train", "build_scheduler", "lr_factor_fn",
    "save_checkpoint", "load_checkpoint", "load_model", "predict_dataset", "evaluate_model",
    "CheckpointError", "InputError", "TrainingError", "distributed", "check_amp",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{module_name}", __name__)
    value = module if name == module_name else getattr(module, name)
    globals()[name] = value
    return value
