"""Reproducible, resumable training data order.

The order of epoch ``e`` is ``randperm(n)`` drawn from a generator seeded with ``seed + e``, cut
into batches of ``batch_size`` (the last incomplete batch is dropped when ``n >= batch_size``). A
position ``(epoch, batch)`` therefore fully names what comes next, and resuming from it needs no
skipping through images. Random augmentations are reproducible too: each sample is loaded under
RNGs seeded from ``(seed, epoch, index)``, independently of DataLoader workers and of the main
process's RNG (which the model's own sampling uses).
"""

from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def batches_per_epoch(n: int, batch_size: int) -> int:
    if n == 0:
        return 0
    return n // batch_size if n >= batch_size else 1


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Index batches of ``epoch`` (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=gen).tolist()
    return [perm[i * batch_size:(i + 1) * batch_size] for i in range(batches_per_epoch(n, batch_size))]


class ResumableBatchSampler:
    """Infinite batch sampler starting at ``(epoch, batch)``; yields ``[(epoch, index), ...]``."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int = 0, batch: int = 0) -> None:
        if n == 0:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.batch = epoch, batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = self.epoch, self.batch
        while True:
            for idxs in epoch_batches(self.n, self.batch_size, self.seed, epoch)[start:]:
                yield [(epoch, i) for i in idxs]
            epoch, start = epoch + 1, 0


class SeededSamples(Dataset):
    """Wraps a dataset so that item ``(epoch, index)`` is loaded under RNGs seeded from
    ``(seed, epoch, index)``; the caller's RNG states are left as they were."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        sample_seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            random.seed(sample_seed)
            np.random.seed(sample_seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class TrainStream:
    """Endless ``(images, targets)`` batches with a checkpointable position.

    ``state()`` is ``{"epoch", "batch"}`` of the next batch to be returned; a stream built with
    that state continues exactly where this one stood.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, *, workers: int = 0,
                 collate_fn=None, state: dict[str, int] | None = None, pin_memory: bool = False) -> None:
        state = state or {}
        self.epoch, self.batch = int(state.get("epoch", 0)), int(state.get("batch", 0))
        self.per_epoch = batches_per_epoch(len(dataset), batch_size)
        sampler = ResumableBatchSampler(len(dataset), batch_size, seed, self.epoch, self.batch)
        self.loader = DataLoader(SeededSamples(dataset, seed), batch_sampler=sampler, num_workers=workers,
                                 collate_fn=collate_fn, pin_memory=pin_memory,
                                 # its own generator: creating the iterator must not draw from
                                 # the global RNG, or a resumed run would diverge
                                 generator=torch.Generator().manual_seed(seed))
        self._it = iter(self.loader)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def next(self):
        batch = next(self._it)
        self.batch += 1
        if self.batch >= self.per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        return batch

    def close(self) -> None:
        self._it = None
