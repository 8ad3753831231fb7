"""The server's limits and settings."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ServeConfig", "cpu_count", "split_threads"]


@dataclass(frozen=True)
class ServeConfig:
    """Limits of one ``fcis serve`` process.

    ``workers`` inferences run at once (each in its own thread, sharing the one loaded model);
    up to ``max_queue`` more requests wait for a worker, and a request beyond that is answered
    503 at once. Uploads over ``max_upload_mb`` and images over ``max_image_pixels`` (width x
    height, read from the header before decoding) are answered 413. With ``api_key`` set, every
    request but ``/healthz``, ``/readyz`` and the page's static files needs it
    (``X-API-Key: KEY`` or ``Authorization: Bearer KEY``).
    """

    workers: int = 1
    max_queue: int = 16
    max_upload_mb: float = 20.0
    max_image_pixels: int = 40_000_000
    api_key: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.max_upload_mb <= 0 or self.max_image_pixels <= 0:
            raise ValueError("max_upload_mb and max_image_pixels must be positive")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty (leave it unset for no key)")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def split_threads(workers: int, threads: int | None = None) -> int:
    """Intra-op threads per inference: ``threads`` if given, else the CPUs shared out evenly
    between the ``workers`` concurrent inferences (at least 1)."""
    return int(threads) if threads else max(1, cpu_count() // max(1, workers))
