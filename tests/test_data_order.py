"""Aspect-ratio grouped batches (fcis/engine/data.py): one group per batch, the same count and
the same guarantees as the plain order (seeded, resumable at (epoch, batch), disjoint shards of
one global order)."""

import numpy as np
import pytest

from fcis.engine.data import ResumableBatchSampler, aspect_groups, batches_per_epoch, epoch_batches, shard_batch


def _groups(n, seed=0, k=4):
    return np.random.default_rng(seed).integers(0, k, n).tolist()


def test_aspect_groups_bins():
    heights = [100, 100, 100, 100, 100, 100, 100, 100]
    widths = [30, 55, 70, 90, 110, 140, 180, 250]    # w/h across torchvision's edges 0.5 .. 2
    assert aspect_groups(heights, widths) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert aspect_groups([480, 640], [640, 480]) == [5, 2]   # landscape 4:3, portrait 3:4
    assert aspect_groups([], []) == []


@pytest.mark.parametrize("n, bs", [(50, 4), (37, 3), (8, 8), (5, 2), (3, 4)])
def test_grouped_epoch_has_the_plain_count_and_one_group_per_batch_but_the_last(n, bs):
    groups = _groups(n)
    for epoch in range(3):
        plain = epoch_batches(n, bs, seed=1, epoch=epoch)
        grouped = epoch_batches(n, bs, seed=1, epoch=epoch, groups=groups)
        assert len(grouped) == len(plain) == batches_per_epoch(n, bs)
        flat = [i for b in grouped for i in b]
        assert len(flat) == len(set(flat)) == sum(len(b) for b in plain)   # no repeats, as many left out
        assert all(len(b) == min(bs, n) for b in grouped)
        mixed = [b for b in grouped if len({groups[i] for i in b}) > 1]
        assert len(mixed) <= len(set(groups)) - 1                           # only from the leftovers
        if mixed and n >= bs:
            assert grouped[-len(mixed):] == mixed                           # ... at the end of the epoch
        assert grouped == epoch_batches(n, bs, seed=1, epoch=epoch, groups=groups)   # seeded
    assert epoch_batches(n, bs, 1, 0, groups) != epoch_batches(n, bs, 1, 1, groups) or n <= bs


def test_one_image_per_batch_or_no_groups_is_the_plain_order():
    groups = _groups(20)
    assert epoch_batches(20, 1, 3, 0, groups) == epoch_batches(20, 1, 3, 0)
    sampler = ResumableBatchSampler(20, 1, 3, groups=groups)
    it = iter(sampler)
    assert [next(it) for _ in range(25)][:20] == [[(0, b[0])] for b in epoch_batches(20, 1, 3, 0)]


def test_groups_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match="3 aspect-ratio groups for 10 images"):
        epoch_batches(10, 2, 0, 0, groups=[0, 1, 0])


def test_grouped_sampler_resumes_and_shards_disjointly():
    n, bs, ws, seed = 41, 2, 3, 7
    groups = _groups(n, seed=3, k=3)
    per_rank = []
    for r in range(ws):
        it = iter(ResumableBatchSampler(n, bs, seed, rank=r, world_size=ws, groups=groups))
        per_rank.append([next(it) for _ in range(15)])   # 6 global batches per epoch: crosses epochs
    per_epoch = batches_per_epoch(n, bs * ws)
    for step in range(15):
        union = [i for r in range(ws) for _, i in per_rank[r][step]]
        epoch = step // per_epoch
        assert len(set(union)) == len(union) == bs * ws
        assert {e for r in range(ws) for e, _ in per_rank[r][step]} == {epoch}
        global_batch = epoch_batches(n, bs * ws, seed, epoch, groups)[step % per_epoch]
        assert union == global_batch                                            # one global order
        assert [[i for _, i in per_rank[r][step]] for r in range(ws)] == [
            shard_batch(global_batch, r, ws, bs) for r in range(ws)]
    for r in range(ws):   # resuming at (epoch 1, batch 2) continues identically on every rank
        it = iter(ResumableBatchSampler(n, bs, seed, epoch=1, batch=2, rank=r, world_size=ws, groups=groups))
        assert [next(it) for _ in range(7)] == per_rank[r][per_epoch + 2:per_epoch + 9]
