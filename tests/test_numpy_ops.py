"""fcis.inference.numpy_ops (the ONNX runner's post-processing, no torch) against the PyTorch ops
the eager model uses: torchvision's box_iou, nms, batched_nms, F.interpolate, and the package's
mask pasting and mask voting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from fcis.inference import numpy_ops as ops
from fcis.models.fcis import mask_voting
from fcis.models.mask_paste import paste_masks_in_frame


def random_boxes(rng: np.random.Generator, n: int, size: float = 100.0) -> np.ndarray:
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(1, size / 3, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def test_box_iou_matches_torchvision():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 30), random_boxes(rng, 40)
    ref = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(ops.box_iou(a, b), ref, rtol=1e-6, atol=1e-7)
    assert ops.box_iou(a[:0], b).shape == (0, 40)


@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(iou):
    rng = np.random.default_rng(1)
    for n in (0, 1, 200):
        boxes, scores = random_boxes(rng, n), rng.random(n).astype(np.float32)
        ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
        ours = ops.nms(boxes, scores, iou)
        assert ours.dtype == np.int64
        np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("n", [0, 300, 1500])   # 1500 boxes: torchvision's per-class path (> 4000 numbers)
def test_batched_nms_matches_torchvision(n):
    rng = np.random.default_rng(2)
    boxes, scores = random_boxes(rng, n, 400.0), rng.random(n).astype(np.float32)
    idxs = rng.integers(0, 5, n)
    ref = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs),
                                      0.3).numpy()
    np.testing.assert_array_equal(ops.batched_nms(boxes, scores, idxs, 0.3), ref)


def test_resize_bilinear_matches_interpolate():
    rng = np.random.default_rng(3)
    for (h, w), (oh, ow) in [((20, 30), (41, 17)), ((64, 80), (32, 40)), ((7, 5), (7, 5)), ((1, 9), (3, 4))]:
        x = rng.random((3, h, w), dtype=np.float32)
        ref = F.interpolate(torch.from_numpy(x)[None], (oh, ow), mode="bilinear", align_corners=False)[0]
        np.testing.assert_allclose(ops.resize_bilinear(x, oh, ow), ref.numpy(), atol=2e-6)


def test_resized_size_is_the_transforms_rule():
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    t = GeneralizedRCNNTransform(600, 1000, [0.0] * 3, [1.0] * 3).eval()
    for h, w in [(480, 640), (333, 500), (601, 90), (37, 41)]:
        resized, _ = t.resize(torch.zeros(3, h, w), None)
        assert ops.resized_size(h, w, 600, 1000) == tuple(resized.shape[-2:])


def test_paste_masks_in_frame_matches_torch():
    rng = np.random.default_rng(4)
    masks = rng.random((6, 21, 21), dtype=np.float32)
    boxes = random_boxes(rng, 6, 50.0)
    boxes[0] = (10.0, 10.0, 10.0005, 30.0)                      # a degenerate (near-zero width) box
    for frame in [(0, 0, 80, 70), (12, 5, 40, 33), (5, 5, 5, 9)]:
        ref = paste_masks_in_frame(torch.from_numpy(masks), torch.from_numpy(boxes), frame).numpy()
        ours = ops.paste_masks_in_frame(masks, boxes, frame)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-5)


def _voting_case(seed: int):
    rng = np.random.default_rng(seed)
    m, c, p = 40, 3, 21
    centres = random_boxes(rng, 4, 60.0)                         # clusters of overlapping candidates
    cand = np.repeat(centres, 10, axis=0) + rng.normal(0, 2, (m, 4)).astype(np.float32)
    cand[:, 2:] = np.maximum(cand[:, 2:], cand[:, :2] + 1)
    logits = rng.normal(0, 2, (m, c + 1)).astype(np.float32)
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    masks = rng.random((m, c + 1, p, p), dtype=np.float32)
    kept_index = np.array([0, 11, 25, 37])
    labels = np.array([1, 2, 3, 1])
    return cand[kept_index].copy(), labels, cand, scores.astype(np.float32), masks, kept_index


@pytest.mark.parametrize("voting", [True, False])
def test_vote_masks_matches_torch(voting):
    kept, labels, cand, scores, masks, kept_index = _voting_case(5)
    size = (90, 100)
    ref = mask_voting.vote_masks(*map(torch.from_numpy, (kept, labels, cand, scores, masks)), size, iou=0.5,
                                 min_score=0.05, voting=voting, kept_index=torch.from_numpy(kept_index)).numpy()
    ours = ops.vote_masks(kept, labels, cand, scores, masks, size, iou=0.5, min_score=0.05, voting=voting,
                          kept_index=kept_index)
    assert ours.shape == (4, 90, 100) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert ops.vote_masks(kept[:0], labels[:0], cand, scores, masks, size, iou=0.5, min_score=0.05).shape == (0, 90, 100)


def test_masks_to_boxes_or_keep_matches_torch():
    rng = np.random.default_rng(6)
    masks = rng.random((5, 30, 40), dtype=np.float32) * 0.3   # below the threshold but where set
    masks[1, 4:9, 10:21] = 0.9
    masks[3, 0, 39] = 0.45
    boxes = random_boxes(rng, 5, 30.0)
    ref = mask_voting.masks_to_boxes_or_keep(torch.from_numpy(masks), torch.from_numpy(boxes), 0.4).numpy()
    ours = ops.masks_to_boxes_or_keep(masks, boxes, 0.4)
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(ours[1], [10, 4, 21, 9])
    np.testing.assert_array_equal(ours[3], [39, 0, 40, 1])
    np.testing.assert_array_equal(ours[0], boxes[0])                 # empty mask: the box is kept
