"""Copy-paste (fcis/data/copy_paste.py): occlusion of the target's instances on a hand-made example,
the border, bad and empty samples, and reproducibility under the per-sample seeded RNG."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from fcis.data.copy_paste import CopyPaste, paste_instances
from fcis.engine.data import SeededSamples


def _instances(h, w, rects, labels):
    masks = torch.zeros(len(rects), h, w, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, rects):
        m[y1:y2, x1:x2] = 1
    return {"boxes": torch.tensor(rects, dtype=torch.float32).view(-1, 4), "labels": torch.tensor(labels),
            "masks": masks, "image_id": 0}


def test_paste_occludes_recomputes_boxes_and_drops_covered_instances():
    # target 8x10: A (label 1) x 0-6, y 0-4; B (label 2) x 6-10, y 4-8
    target = (torch.zeros(3, 8, 10), _instances(8, 10, [(0, 0, 6, 4), (6, 4, 10, 8)], [1, 2]))
    # source 8x10: C (label 3) x 3-6, y 0-8 covers A's right part; D (label 4) covers all of B; E not chosen
    source = (torch.ones(3, 8, 10), _instances(8, 10, [(3, 0, 6, 8), (6, 4, 10, 8), (0, 6, 2, 8)], [3, 4, 5]))
    image, t = paste_instances(target, source, torch.tensor([0, 1]))
    assert t["labels"].tolist() == [1, 3, 4]            # B fully covered: removed; E not pasted
    assert t["boxes"].tolist() == [[0, 0, 3, 4], [3, 0, 6, 8], [6, 4, 10, 8]]
    expect_a = torch.zeros(8, 10, dtype=torch.uint8)
    expect_a[0:4, 0:3] = 1
    assert torch.equal(t["masks"][0], expect_a)
    cover = torch.zeros(8, 10, dtype=torch.bool)
    cover[:, 3:6] = True
    cover[4:8, 6:10] = True
    assert torch.equal(image[0] == 1, cover)            # hard paste: source pixels exactly under C and D
    assert t["image_id"] == 0 and t["masks"].dtype == torch.uint8 and t["boxes"].dtype == torch.float32


def test_paste_keeps_unoccluded_boxes_and_crops_the_source_to_the_target():
    # the target's box is not tight (as after a plain resize): left as it is when nothing covers it
    target = (torch.zeros(3, 6, 6), _instances(6, 6, [(0, 0, 2, 2)], [1]))
    target[1]["boxes"][0] = torch.tensor([0.0, 0.0, 2.4, 2.2])
    # the source is larger: F at x 4-8 is cut by the target's border, G at x 7-9 falls outside
    source = (torch.ones(3, 10, 10), _instances(10, 10, [(4, 3, 8, 5), (7, 7, 9, 9)], [2, 3]))
    image, t = paste_instances(target, source, torch.tensor([1, 0]))
    assert t["labels"].tolist() == [1, 2]
    assert torch.allclose(t["boxes"], torch.tensor([[0.0, 0.0, 2.4, 2.2], [4, 3, 6, 5]]))
    assert t["masks"].shape == (2, 6, 6) and image.shape == (3, 6, 6)
    # a smaller source: pasted at the top-left corner
    small = (torch.ones(3, 3, 4), _instances(3, 4, [(1, 1, 4, 3)], [7]))
    image, t = paste_instances(target, small, torch.tensor([0]))
    assert t["labels"].tolist() == [1, 7] and t["boxes"][1].tolist() == [1, 1, 4, 3]
    assert t["boxes"][0].tolist() == [0, 0, 2, 2]       # A lost a pixel under the pasted one: tight again
    assert image[0].sum().item() == 6


class _Toy(Dataset):
    """Image i is filled with i; instance labels 10 + i; image 2 is unreadable; image 3 has no objects."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        if i == 2:
            return None
        rects, labels = ([(i, 0, i + 3, 3)], [10 + i]) if i != 3 else ([], [])
        return torch.full((3, 6, 8), float(i)), _instances(6, 8, rects, labels)


def test_copy_paste_dataset_draws_other_images_and_handles_bad_or_empty_ones():
    ds = _Toy()
    assert CopyPaste(ds, 0.0)[0][0].eq(0).all() and CopyPaste(ds, 0.5)[2] is None
    cp = CopyPaste(ds, 1.0)
    pasted_from = set()
    for seed in range(60):
        torch.manual_seed(seed)
        image, t = cp[1]
        others = set(image.unique().tolist()) - {1.0}
        if not others:   # the source drawn was the unreadable or the empty image: nothing pasted
            assert t["labels"].tolist() == [11] and t["boxes"].tolist() == [[1, 0, 4, 3]]
            pasted_from.add(None)
            continue
        assert len(others) == 1 and others <= {0.0, 4.0}   # never itself
        source = int(others.pop())
        assert t["labels"].tolist() == [11, 10 + source]
        # image 0's instance (x 0-3) covers most of image 1's (x 1-4); image 4's (x 4-7) none of it
        assert t["boxes"].tolist() == [[3, 0, 4, 3] if source == 0 else [1, 0, 4, 3], [source, 0, source + 3, 3]]
        pasted_from.add(source)
        torch.manual_seed(seed)
        again, t2 = cp[1]
        assert torch.equal(image, again) and torch.equal(t["masks"], t2["masks"])   # same seed, same sample
    assert pasted_from == {0, 4, None}
    got = []
    for seed in range(10):                              # an image without objects gets some
        torch.manual_seed(seed)
        _, t = cp[3]
        assert t["labels"].tolist() in ([], [10], [11], [14]) and t["masks"].shape == (len(t["labels"]), 6, 8)
        got += t["labels"].tolist()
    assert got


class _One(Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        flip = bool(torch.rand(()) < 0.5)
        rect = (4, 0, 7, 3) if flip else (0, 0, 3, 3)
        return torch.zeros(3, 6, 8), _instances(6, 8, [rect], [1])


def test_one_image_pastes_a_second_view_of_itself_and_seeded_samples_repeat():
    views = {tuple(map(tuple, CopyPaste(_One(), 1.0)[0][1]["boxes"].tolist())) for _ in range(30)}
    assert any(len(v) == 2 for v in views)
    seeded = SeededSamples(CopyPaste(_Toy(), 0.7), seed=3)
    a, b, c = seeded[(0, 4)], seeded[(0, 4)], seeded[(1, 4)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    draws = {tuple(seeded[(e, 4)][1]["labels"].tolist()) for e in range(12)}
    assert len(draws) > 1 and c is not None
