"""A bounded queue in front of the worker threads: at most ``workers`` inferences run at once,
at most ``max_queue`` more wait, and the next one is refused at once (the server answers 503)
instead of piling up without bound."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

__all__ = ["InferenceQueue", "QueueFull"]


class QueueFull(Exception):
    """All workers are busy and ``max_queue`` requests already wait."""


class InferenceQueue:
    """Runs blocking jobs on ``workers`` threads with at most ``workers + max_queue`` admitted at
    once. Use from one event loop only (the counters are not locked; the loop serialises them)."""

    def __init__(self, workers: int, max_queue: int) -> None:
        self.workers = int(workers)
        self.capacity = int(workers) + int(max_queue)
        self.admitted = 0                  # running + waiting
        self.served = 0
        self.refused = 0
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fcis-infer")

    @property
    def waiting(self) -> int:
        return max(0, self.admitted - self.workers)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a worker thread; raises :class:`QueueFull` without waiting when the
        queue is full."""
        if self.admitted >= self.capacity:
            self.refused += 1
            raise QueueFull(f"the server is busy: {self.workers} inference(s) running and "
                            f"{self.capacity - self.workers} waiting; try again shortly")
        self.admitted += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self.admitted -= 1
            self.served += 1

    def stats(self) -> dict[str, int]:
        return {"workers": self.workers, "capacity": self.capacity, "admitted": self.admitted,
                "waiting": self.waiting, "served": self.served, "refused": self.refused}

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
