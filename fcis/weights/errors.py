"""The error of a weights file that cannot be used (importable without torch)."""

from __future__ import annotations

from fcis.runtime.errors import InputError

__all__ = ["WeightsFileError"]


class WeightsFileError(InputError):
    """A weights file (MXNet ``.params``, ChainerCV ``.npz``, a torchvision state dict) that is
    not of the expected format, is truncated, or holds something that does not fit; the message
    names the file and, where known, the parameter. A ``ValueError``: the CLI prints it as one
    ``fcis: error:`` line."""
