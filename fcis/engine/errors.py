"""The exceptions live in :mod:`fcis.runtime.errors` (shared by training, inference and the CLI,
importable without torch); this name stays for existing imports."""

from fcis.runtime.errors import CheckpointError, InputError, TrainingError

__all__ = ["CheckpointError", "InputError", "TrainingError"]
