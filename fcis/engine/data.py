"""Reproducible, resumable training data order.

The order of epoch ``e`` is ``randperm(n)`` drawn from a generator seeded with ``seed + e``, cut
into batches of ``batch_size`` (the last incomplete batch is dropped when ``n >= batch_size``). A
position ``(epoch, batch)`` therefore fully names what comes next, and resuming from it needs no
skipping through images.

Distributed training (``world_size`` processes of ``batch_size`` images each) cuts the same
permutation into *global* batches of ``batch_size x world_size`` images; process ``rank`` takes
the ``rank``-th run of ``batch_size`` of them (:func:`shard_batch`), so the processes see
disjoint parts of every global batch and one distributed step sees exactly the images of one
single-process step with ``batch_size x world_size``. The position ``(epoch, batch)`` counts
global batches: it is the same on every process, so one checkpoint resumes all of them. A
dataset smaller than a global batch is cycled to fill it (as ``DistributedSampler`` pads). Random augmentations are reproducible too: each sample is loaded under
RNGs seeded from ``(seed, epoch, index)``, independently of DataLoader workers and of the main
process's RNG (which the model's own sampling uses).

Aspect-ratio groups (``groups``, see :func:`aspect_groups`; used when a process's batch holds more
than one image, where the images of a batch are padded to a common size): the same permutation
is walked and each index put in its group's bin; a bin that reaches a (global) batch is emitted
as one, so every batch holds images of one group, in the order the bins fill (the idea of
torchvision's detection references' ``GroupedBatchSampler``). The images left in the bins at the
end of the epoch, ordered group by group, make the last batches (the only mixed ones). An epoch
has the same number of batches as without groups and leaves out the same number of images, so
the position ``(epoch, batch)`` means the same, and everything above holds.
"""

from __future__ import annotations

import random
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate


def batches_per_epoch(n: int, batch_size: int) -> int:
    if n == 0:
        return 0
    return n // batch_size if n >= batch_size else 1


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int,
                  groups: Sequence[int] | None = None) -> list[list[int]]:
    """Index batches of ``epoch`` (see the module docstring); ``groups[i]``: image ``i``'s
    aspect-ratio group (None, or ``batch_size == 1``: no grouping)."""
    gen = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=gen).tolist()
    count = batches_per_epoch(n, batch_size)
    if groups is None or batch_size == 1 or n < batch_size:
        return [perm[i * batch_size:(i + 1) * batch_size] for i in range(count)]
    if len(groups) != n:
        raise ValueError(f"{len(groups)} aspect-ratio groups for {n} images")
    bins: dict[int, list[int]] = {}
    out = []
    for i in perm:
        b = bins.setdefault(groups[i], [])
        b.append(i)
        if len(b) == batch_size:
            out.append(b)
            bins[groups[i]] = []
    rest = [i for g in sorted(bins) for i in bins[g]]
    out += [rest[j * batch_size:(j + 1) * batch_size] for j in range(len(rest) // batch_size)]
    assert len(out) == count   # sum of floor(n_g / B) + floor(sum of the rests / B) = floor(n / B)
    return out


def aspect_groups(heights: Sequence[int] | np.ndarray, widths: Sequence[int] | np.ndarray,
                  factor: int = 3) -> list[int]:
    """The aspect-ratio group of each image: ``w / h`` quantised at ``2 ** linspace(-1, 1, 2 *
    factor + 1)`` (torchvision's references' bins: ``2 * factor + 2`` groups, ``factor = 3``: edges
    0.5, 0.63, 0.79, 1, 1.26, 1.59, 2). Returns ``int[n]`` in ``0 .. 2 * factor + 1``."""
    ratios = np.asarray(widths, dtype=np.float64) / np.asarray(heights, dtype=np.float64)
    edges = 2.0 ** np.linspace(-1, 1, 2 * factor + 1)
    return np.digitize(ratios, edges).tolist()


def shard_batch(batch: list[int], rank: int, world_size: int, batch_size: int) -> list[int]:
    """Process ``rank``'s share of a global batch: items ``[rank*batch_size, (rank+1)*batch_size)``
    of ``batch`` (cycled to ``batch_size*world_size`` items when shorter). A single process
    (``world_size == 1``) gets the batch unchanged."""
    if world_size == 1:
        return list(batch)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    need = batch_size * world_size
    full = [batch[i % len(batch)] for i in range(need)]
    return full[rank * batch_size:(rank + 1) * batch_size]


class ResumableBatchSampler:
    """Infinite batch sampler starting at global batch ``(epoch, batch)``; yields
    ``[(epoch, index), ...]``: the whole batch for one process, process ``rank``'s shard of the
    global batch of ``batch_size x world_size`` images in a distributed run."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int = 0, batch: int = 0, *,
                 rank: int = 0, world_size: int = 1, groups: Sequence[int] | None = None) -> None:
        if n == 0:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.batch = epoch, batch
        self.rank, self.world_size = rank, world_size
        self.groups = groups

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = self.epoch, self.batch
        global_size = self.batch_size * self.world_size
        while True:
            # groups only matter when a process pads several images into one batch
            groups = self.groups if self.batch_size > 1 else None
            for idxs in epoch_batches(self.n, global_size, self.seed, epoch, groups)[start:]:
                yield [(epoch, i) for i in shard_batch(idxs, self.rank, self.world_size, self.batch_size)]
            epoch, start = epoch + 1, 0


class SeededSamples(Dataset):
    """Wraps a dataset so that item ``(epoch, index)`` is loaded under RNGs seeded from
    ``(seed, epoch, index)``; the caller's RNG states are left as they were."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # a sized Dataset

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


class _Keyed(Dataset):
    """Item ``key`` of ``samples`` as ``(key, sample)``, so that the batch says which were skipped."""

    def __init__(self, samples: Dataset) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)  # type: ignore[arg-type]  # a sized Dataset

    def __getitem__(self, key):
        return key, self.samples[key]


class _CollateNotingSkips:
    """``collate_fn`` of ``(key, sample)`` items: ``(collate_fn(samples), [index of each None sample])``.

    A sample is None when the dataset skipped it (an unreadable image); counting them here, in
    the main process, also counts those that DataLoader workers skipped in their own copies of
    the dataset."""

    def __init__(self, collate_fn) -> None:
        self.collate_fn = collate_fn or default_collate

    def __call__(self, batch):
        skipped = [key[1] for key, sample in batch if sample is None]
        return self.collate_fn([sample for _, sample in batch]), skipped


class TrainStream:
    """Endless ``(images, targets)`` batches with a checkpointable position.

    ``state()`` is ``{"epoch", "batch"}`` of the next (global) batch to be returned; a stream
    built with that state (and the same ``world_size``) continues exactly where this one stood.
    With ``world_size > 1`` it returns process ``rank``'s shard of each global batch.
    :attr:`skipped` holds the dataset indices of the samples that came back None (skipped by
    the dataset, in this process or a DataLoader worker). ``groups``: each image's aspect-ratio
    group (:func:`aspect_groups`), used when ``batch_size > 1`` (see the module docstring).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, *, workers: int = 0,
                 collate_fn=None, state: dict[str, int] | None = None, pin_memory: bool = False,
                 rank: int = 0, world_size: int = 1, groups: Sequence[int] | None = None) -> None:
        state = state or {}
        self.epoch, self.batch = int(state.get("epoch", 0)), int(state.get("batch", 0))
        self.per_epoch = batches_per_epoch(len(dataset), batch_size * world_size)  # type: ignore[arg-type]
        sampler = ResumableBatchSampler(len(dataset), batch_size,  # type: ignore[arg-type]
                                        seed, self.epoch, self.batch,
                                        rank=rank, world_size=world_size, groups=groups)
        self.skipped: set[int] = set()
        self.loader = DataLoader(_Keyed(SeededSamples(dataset, seed)), batch_sampler=sampler, num_workers=workers,
                                 collate_fn=_CollateNotingSkips(collate_fn), pin_memory=pin_memory,
                                 # its own generator: creating the iterator must not draw from
                                 # the global RNG, or a resumed run would diverge
                                 generator=torch.Generator().manual_seed(seed))
        self._it: Iterator[Any] | None = iter(self.loader)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def next(self):
        batch, skipped = next(self._it)
        self.skipped.update(skipped)
        self.batch += 1
        if self.batch >= self.per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        return batch

    def close(self) -> None:
        self._it = None
