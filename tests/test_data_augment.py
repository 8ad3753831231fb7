"""Augmentation for few images (issue 22): scale jitter that keeps the input size (and so reaches
the network), colour jitter, boxes recomputed from transformed masks, and their reproducibility."""

from __future__ import annotations

import pytest
import torch

from fcis.data import build_transforms
from fcis.data.transforms import ScaleJitterKeepSize, boxes_from_masks, tight_boxes
from fcis.models.rcnn_transform import RCNNTransform

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _sample(h=100, w=200):
    """Three instances; channel 0 of the image holds label / 10 inside each, so that an output
    instance can be matched to its pixels (labels aligned with masks)."""
    image = torch.rand(3, h, w) * 0.05
    masks = torch.zeros(3, h, w, dtype=torch.uint8)
    masks[0, 20:60, 10:50] = 1
    masks[1, 70:90, 150:195] = 1
    masks[2, 30:50, 100:140] = 1
    labels = torch.tensor([3, 5, 8])
    for m, lab in zip(masks, labels):
        image[0][m.bool()] = lab / 10
    boxes = torch.tensor([[10, 20, 50, 60], [150, 70, 195, 90], [100, 30, 140, 50]], dtype=torch.float32)
    return image, {"boxes": boxes, "labels": labels, "masks": masks, "image_id": 4}


def _tight(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def _check_consistent(img, t, size):
    assert img.shape == (3, *size) and img.dtype == torch.float32
    assert t["masks"].shape == (len(t["labels"]), *size) and t["boxes"].shape == (len(t["labels"]), 4)
    assert (t["boxes"].dtype, t["labels"].dtype, t["masks"].dtype) == (torch.float32, torch.int64, torch.uint8)
    for box, mask, label in zip(t["boxes"], t["masks"], t["labels"]):
        assert mask.any()
        assert box.tolist() == _tight(mask)   # boxes are the tight boxes of the masks
        assert torch.median(img[0][mask.bool()]).item() == pytest.approx(label.item() / 10, abs=0.03)


def test_scale_jitter_keeps_size_and_boxes_tight():
    image, target = _sample()
    tf = build_transforms(True, min_size=100, max_size=1000, hflip_prob=0.5, scale_jitter=(0.5, 2.0))
    counts = set()
    torch.manual_seed(0)
    for _ in range(40):
        img, t = tf(image, target)
        _check_consistent(img, t, (100, 200))
        counts.add(len(t["labels"]))
    assert len(counts) > 1   # crops above 1x remove instances cut to nothing, sometimes
    assert ("image_id", 4) in t.items()


def test_scale_jitter_pads_with_fill_and_crops_within_the_image():
    image, target = _sample()
    fill = (0.25, 0.5, 0.75)
    small = ScaleJitterKeepSize((0.5, 0.5), fill=fill)
    from fcis.data.transforms import InstanceTransform

    img, t = InstanceTransform(small, recompute_boxes=True)(image, target)
    assert img.shape == image.shape
    border = img[:, (img[1] == 0.5) & (img[2] == 0.75)]   # the padded pixels
    assert border.shape[1] == 100 * 200 - 50 * 100        # 3/4 of the image is padding
    assert torch.all(border[0] == 0.25)
    assert t["masks"].sum().item() == pytest.approx(target["masks"].sum().item() / 4, rel=0.1)
    big = InstanceTransform(ScaleJitterKeepSize((2.0, 2.0)), recompute_boxes=True)
    torch.manual_seed(1)
    img, t = big(image, target)
    for box in t["boxes"]:   # each kept instance is twice as large, or cut by the window
        assert (box[2:] - box[:2] <= torch.tensor([80.0, 80.0]) + 1).all()


def test_scale_jitter_range_is_bounded():
    for bad in ((0.05, 1.0), (1.0, 2.5), (1.5, 1.0)):
        with pytest.raises(ValueError, match="scale_range"):
            ScaleJitterKeepSize(bad)


def test_jitter_reaches_the_network():
    """The model's own resize (RCNNTransform in training) leaves the jittered samples as they are,
    so the object scale the network sees varies over the whole range; a plain data-level resize
    would instead be undone by the model (it resizes every image to min_size again)."""
    image, target = _sample()
    target["masks"][2] = 0
    target["masks"][2, 42:58, 92:108] = 1          # a 16 px square in the middle: rarely cut
    target["boxes"][2] = torch.tensor([92.0, 42.0, 108.0, 58.0])
    model_tf = RCNNTransform(100, 1000, MEAN, STD).train()
    low, high = 0.6, 1.6
    tf = build_transforms(True, min_size=100, max_size=1000, hflip_prob=0.0, scale_jitter=(low, high))
    torch.manual_seed(3)
    ratios = []
    for _ in range(60):
        img, t = tf(image, target)
        batch, net_targets = model_tf([img], [dict(t)])
        assert batch.image_sizes == [(100, 200)]
        norm = (img - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        assert torch.allclose(batch.tensors[0, :, :100, :200], norm, atol=1e-5)   # not resampled
        assert torch.equal(net_targets[0]["masks"], t["masks"]) and torch.equal(net_targets[0]["boxes"], t["boxes"])
        for box, label in zip(net_targets[0]["boxes"], t["labels"]):
            inside = box[0] > 0 and box[1] > 0 and box[2] < 200 and box[3] < 100   # not cut by the window
            if label == 8 and inside:
                ratios.append(((box[2] - box[0]) / 16).item())
    assert min(ratios) < low + 0.1 and max(ratios) > high - 0.15
    assert all(low - 0.05 <= r <= high + 0.05 for r in ratios)
    # the alternative: resizing the sample at the data level; the model scales it back
    half = torch.nn.functional.interpolate(image[None], scale_factor=0.5)[0]
    batch, _ = model_tf([half], [dict(target, boxes=target["boxes"] / 2, masks=target["masks"][:, ::2, ::2])])
    assert batch.image_sizes == [(100, 200)]


def test_photometric_changes_only_the_image():
    image, target = _sample()
    tf = build_transforms(True, min_size=100, max_size=1000, hflip_prob=0.0, photometric=True)
    torch.manual_seed(0)
    img, t = tf(image, target)
    assert not torch.equal(img, image) and 0 <= img.min() and img.max() <= 1
    for k in ("boxes", "labels", "masks"):
        assert torch.equal(t[k], target[k])


def test_empty_target_with_every_augmentation():
    image = torch.rand(3, 50, 80)
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
              "masks": torch.zeros(0, 50, 80, dtype=torch.uint8), "image_id": 1}
    tf = build_transforms(True, min_size=100, max_size=1000, scale_jitter=(0.5, 2.0), photometric=True)
    for seed in range(6):
        torch.manual_seed(seed)
        img, t = tf(image, target)
        assert img.shape == (3, 100, 160) and t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 100, 160)
        assert t["labels"].shape == (0,)


def test_same_seed_same_sample():
    image, target = _sample()
    tf = build_transforms(True, min_size=120, max_size=1000, scale_jitter=(0.3, 2.0), photometric=True)
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append(tf(image, target))
    (a, ta), (b, tb), (c, _) = outs
    assert torch.equal(a, b) and all(torch.equal(ta[k], tb[k]) for k in ("boxes", "labels", "masks"))
    assert not torch.equal(a, c)


def test_tight_boxes_remove_what_was_cut_and_keep_thin_polygons():
    masks = torch.zeros(3, 10, 12, dtype=torch.uint8)
    masks[0, 2:5, 3:9] = 1
    boxes = torch.tensor([[0.0, 0.0, 12.0, 10.0],     # loose: becomes tight
                          [4.0, 4.0, 8.0, 8.0],       # its mask was cut away: removed
                          [-3.0, 1.0, 2.5, 1.5]])     # empty from the start (a sliver): kept if >= 1 px
    out, keep = tight_boxes(masks, boxes, had_pixels=torch.tensor([True, True, False]))
    assert out[0].tolist() == [3, 2, 9, 5] and keep.tolist() == [True, False, False]   # sliver 0.5 px high
    boxes[2] = torch.tensor([-3.0, 1.0, 2.5, 3.0])
    t = boxes_from_masks({"boxes": boxes, "masks": masks, "labels": torch.tensor([1, 2, 3]), "image_id": 0},
                         torch.tensor([True, True, False]))
    assert t["labels"].tolist() == [1, 3] and t["boxes"][1].tolist() == [0.0, 1.0, 2.5, 3.0]   # clamped
    assert t["masks"].shape == (2, 10, 12) and t["image_id"] == 0
    empty = boxes_from_masks({"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 10, 12, dtype=torch.uint8),
                              "labels": torch.zeros(0, dtype=torch.int64)})
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 10, 12)
