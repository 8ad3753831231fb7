"""Training engine: configuration, LR schedule, checkpoints, the training loop and evaluation.

Typical use::

    from fcis.engine import TrainConfig, train
    summary = train("fcis_resnet50", "train.json", "val.json", "runs/exp", TrainConfig(iterations=20000))
"""

from . import distributed
from .amp import check_amp
from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .config import BASE_LR_PER_IMAGE, TrainConfig
from .errors import CheckpointError, InputError, TrainingError
from .evaluator import evaluate_model, predict_dataset
from .schedule import build_scheduler, lr_factor_fn
from .trainer import train

__all__ = [
    "TrainConfig", "BASE_LR_PER_IMAGE", "train", "build_scheduler", "lr_factor_fn",
    "save_checkpoint", "load_checkpoint", "load_model", "predict_dataset", "evaluate_model",
    "CheckpointError", "InputError", "TrainingError", "distributed", "check_amp",
]
