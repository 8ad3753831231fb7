"""build_transforms: resize rule, flip consistency of boxes/masks, sanitize, eval identity."""

import pytest
import torch

from fcis.data import build_transforms
from fcis.data.transforms import resized_size


def _sample(h=100, w=200):
    image = torch.rand(3, h, w)
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, 20:60, 10:50] = 1
    masks[1, 70:90, 150:195] = 1
    boxes = torch.tensor([[10, 20, 50, 60], [150, 70, 195, 90]], dtype=torch.float32)
    return image, {"boxes": boxes, "labels": torch.tensor([1, 3]), "masks": masks, "image_id": 9}


def _tight(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


@pytest.mark.parametrize("h, w, mn, mx, expected", [
    (100, 200, 60, 1000, (60, 120)),
    (200, 100, 60, 1000, (120, 60)),
    (100, 200, 60, 100, (50, 100)),  # long side capped
    (300, 301, 600, 1000, (600, 602)),
    (480, 640, 600, 600, (450, 600)),  # min_size == max_size allowed
])
def test_resized_size(h, w, mn, mx, expected):
    assert resized_size(h, w, mn, mx) == expected


def test_train_resize_short_side_and_cap():
    image, target = _sample()
    img, t = build_transforms(True, min_size=60, max_size=1000, hflip_prob=0.0)(image, target)
    assert img.shape == (3, 60, 120)
    assert t["masks"].shape == (2, 60, 120)
    assert torch.allclose(t["boxes"], target["boxes"] * 0.6)
    img, t = build_transforms(True, min_size=600, max_size=300, hflip_prob=0.0)(image, target)
    assert img.shape == (3, 150, 300) and max(img.shape[1:]) <= 300
    for k in range(2):  # nearest-neighbour masks stay close to the scaled boxes
        assert torch.allclose(torch.tensor(_tight(t["masks"][k]), dtype=torch.float32), t["boxes"][k], atol=1.0)


def test_flip_flips_boxes_and_masks_consistently():
    image, target = _sample()
    img, t = build_transforms(True, min_size=100, max_size=1000, hflip_prob=1.0)(image, target)
    assert torch.equal(img, image.flip(-1))
    assert torch.equal(t["masks"], target["masks"].flip(-1))
    for k in range(2):
        assert t["boxes"][k].tolist() == _tight(t["masks"][k])
    assert t["boxes"].tolist() == [[150, 20, 190, 60], [5, 70, 50, 90]]
    assert t["labels"].tolist() == [1, 3] and t["image_id"] == 9


def test_flip_is_random_and_outputs_are_plain_tensors():
    image, target = _sample()
    tf = build_transforms(True, min_size=100, max_size=1000)
    flipped = []
    for _ in range(20):
        img, t = tf(image, target)
        assert type(img) is torch.Tensor and img.dtype == torch.float32
        assert all(type(t[k]) is torch.Tensor for k in ("boxes", "labels", "masks"))
        assert (t["boxes"].dtype, t["labels"].dtype, t["masks"].dtype) == (torch.float32, torch.int64, torch.uint8)
        flipped.append(torch.equal(img, image.flip(-1)))
        assert t["boxes"][0].tolist() == _tight(t["masks"][0])
    assert 0 < sum(flipped) < 20


def test_sanitize_drops_degenerate_boxes_with_labels_and_masks():
    image, target = _sample()
    target["boxes"][0] = torch.tensor([10, 20, 10, 60])
    img, t = build_transforms(True, min_size=100, max_size=1000, hflip_prob=0.0)(image, target)
    assert t["boxes"].tolist() == [[150, 70, 195, 90]]
    assert t["labels"].tolist() == [3] and t["masks"].shape == (1, 100, 200)
    assert torch.equal(t["masks"][0], target["masks"][1])


def test_empty_target_and_eval_identity():
    image = torch.rand(3, 50, 80)
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
              "masks": torch.zeros(0, 50, 80, dtype=torch.uint8), "image_id": 1}
    img, t = build_transforms(True, min_size=100, max_size=1000)(image, target)
    assert img.shape == (3, 100, 160) and t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 100, 160)
    img, t = build_transforms(False, min_size=100)(image, target)
    assert img is image and t is target
