"""Exceptions of training and inference, importable without torch. The CLI turns the
``ValueError`` ones into one ``fcis: error:`` line."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or not written by :func:`save_checkpoint`."""


class InputError(ValueError):
    """Bad user input other than a dataset: an image that cannot be read, an empty glob, ..."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed NaN/inf for too many iterations)."""
