"""The one exception type of :mod:`fcis.data`."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Bad input data: a malformed annotation file, an unreadable image, an invalid annotation.

    The message always starts with the file concerned (JSON, image, mask or label path),
    followed by the problem, e.g. ``"annotations.json: annotation 17 refers to unknown category 99"``.
    """


def data_error(path: str | os.PathLike, problem: str) -> DataError:
    """Build a :class:`DataError` whose message is ``"<path>: <problem>"``."""
    return DataError(f"{os.fspath(path)}: {problem}")


class DataWarning(UserWarning):
    """Warned when a bad sample or annotation is skipped (``on_bad_sample="skip"``)."""
