"""What training and inference share, apart from the training engine (:mod:`fcis.engine`):

- :mod:`fcis.runtime.errors`: the exceptions (``CheckpointError``, ``InputError``,
  ``TrainingError``); no torch needed, so the CLI and the ONNX runner use them without it;
- :mod:`fcis.runtime.device`: ``resolve_device`` (``--device auto``, ...);
- :mod:`fcis.runtime.amp`: mixed precision (``check_amp``, ``autocast``, ``make_grad_scaler``).

Only the errors are imported here: ``device`` and ``amp`` import torch, so import them by name.
"""

from .errors import CheckpointError, InputError, TrainingError

__all__ = ["CheckpointError", "InputError", "TrainingError"]
