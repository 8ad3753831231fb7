"""Mask probabilities returned by every model lie in [0, 1] (torchvision's contract), also where
float32 rounding of mask voting or of the bilinear paste passes 1 (issue 22, item 6: voting
returned up to 1.0000002): FCIS's voting (PyTorch and the ONNX runner's NumPy twin), InstanceFCN's
paste, Mask R-CNN's paste."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcis.inference import numpy_ops as ops
from fcis.inference.onnx_runner import postprocess
from fcis.models import BUILDERS, FCISConfig
from fcis.models.fcis.inference import select_detection_windows, select_detections
from fcis.models.fcis.mask_voting import vote_masks
from fcis.models.instancefcn.inference import proposal_windows, rank_proposals, select_proposals
from fcis.models.mask_paste import paste_masks_in_frame, paste_probabilities
from fcis.models.maskrcnn.model import _windows


def _certain_case(seed: int, m: int = 40, classes: int = 3):
    """Candidates whose masks are all 1.0 (certain) over overlapping boxes with fractional corners:
    every vote agrees, so the exact voted value is 1 wherever a box covers the pixel."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(m, 2, generator=gen) * 30
    boxes = torch.cat([xy, xy + 20 + torch.rand(m, 2, generator=gen) * 10], dim=1)
    scores = torch.rand(m, classes, generator=gen)
    return boxes, scores, torch.ones(m, classes, 21, 21)


@pytest.mark.parametrize("binarize", [0.4, None])
def test_mask_voting_stays_in_0_1(binarize):
    """Before the clamp, these cases voted up to 1.0000002 (PyTorch) and 1.0000004 (NumPy)."""
    top = 0.0
    for seed in range(30):
        boxes, scores, masks = _certain_case(seed)
        kept, labels = boxes[:3], torch.tensor([1, 2, 1])
        voted = vote_masks(kept, labels, boxes, scores, masks, (64, 64), iou=0.3, min_score=0.0, binarize=binarize)
        ours = ops.vote_masks(kept.numpy(), labels.numpy(), boxes.numpy(), scores.numpy(), masks.numpy(), (64, 64),
                              iou=0.3, min_score=0.0, binarize_at=binarize)
        assert float(voted.min()) >= 0.0 and float(voted.max()) <= 1.0
        assert float(ours.min()) >= 0.0 and float(ours.max()) <= 1.0
        np.testing.assert_allclose(ours, voted.numpy(), atol=1e-5)
        top = max(top, float(voted.max()))
    assert top == 1.0                                         # clamped, not lowered


@pytest.mark.parametrize("voting", [True, False])
def test_fcis_detections_and_onnx_postprocess_stay_in_0_1(voting):
    cfg = FCISConfig(num_classes=2, score_thresh=0.0, mask_voting=voting, voting_binarize=False)
    for seed in range(10):
        boxes, scores, masks = _certain_case(seed)
        probs = scores.softmax(-1)
        out = select_detections(boxes, probs, masks, (64, 64), cfg)
        assert len(out["scores"]) > 0
        assert float(out["masks"].min()) >= 0.0 and float(out["masks"].max()) <= 1.0
        windows = list(select_detection_windows(boxes, probs, masks, (64, 64), cfg))
        assert all(0.0 <= float(w.window.min()) and float(w.window.max()) <= 1.0 for w in windows)
        numpy_out = postprocess(boxes.numpy(), probs.numpy(), masks.numpy(), (64, 64), cfg.to_dict())
        assert numpy_out["masks"].dtype == np.float32 and numpy_out["masks"].max() <= 1.0
        assert numpy_out["masks"].min() >= 0.0


def test_instancefcn_pasted_proposals_stay_in_0_1():
    box = torch.tensor([[0.0, 0.0, 37.7, 33.93]])
    plain = paste_masks_in_frame(torch.ones(1, 21, 21), box, (0, 0, 48, 48))
    assert float(plain.max()) > 1.0              # grid_sample's weights: the rounding this guards against
    assert float(paste_probabilities(torch.ones(1, 21, 21), box, (0, 0, 48, 48)).max()) == 1.0
    boxes, scores, masks = _certain_case(0, m=12)
    probs, order = torch.sort(scores[:, 0], descending=True)
    mask_probs, boxes = masks[order, 0], boxes[order]
    pasted = paste_probabilities(mask_probs, boxes, (0, 0, 64, 64))
    assert float(pasted.max()) == 1.0
    out = select_proposals(probs, boxes, mask_probs, (64, 64), nms_iou=0.9, nms_resolution=2, mask_threshold=0.5,
                           limit=10)
    assert len(out["scores"]) > 0 and 0.0 <= float(out["masks"].min()) and float(out["masks"].max()) <= 1.0
    keep = rank_proposals(mask_probs, boxes, (64, 64), nms_iou=0.9, nms_resolution=2, mask_threshold=0.5, limit=10)
    windows = list(proposal_windows(probs, boxes, mask_probs, (64, 64), keep, mask_threshold=0.5))
    assert windows and all(float(w.window.max()) <= 1.0 for w in windows)


def test_maskrcnn_pasted_masks_stay_in_0_1():
    """torchvision's paste is exact for values in [0, 1]; the clamp holds the contract for any
    rounding upstream: probabilities one ulp past 1 come out at 1."""
    torch.manual_seed(0)
    model = BUILDERS["maskrcnn_resnet18_fpn"](num_classes=2, min_size=64, max_size=64).eval()
    over = torch.full((2, 1, 28, 28), 1.0 + 2 ** -20)
    det = {"boxes": torch.tensor([[4.0, 5.0, 30.0, 40.0], [10.0, 2.0, 60.0, 50.0]]), "scores": torch.tensor([0.9, 0.8]),
           "labels": torch.tensor([1, 2]), "masks": over}
    (pasted,) = model.transform.postprocess([dict(det)], [(64, 64)], [(96, 96)])
    assert pasted["masks"].shape == (2, 1, 96, 96) and float(pasted["masks"].max()) == 1.0
    windows = list(_windows(dict(det), (64, 64), (96, 96), 0.0))
    assert len(windows) == 2 and all(float(w.window.max()) == 1.0 for w in windows)
    with torch.no_grad():
        (out,) = model([torch.rand(3, 64, 64)])
    assert len(out["scores"]) > 0
    assert float(out["masks"].min()) >= 0.0 and float(out["masks"].max()) <= 1.0
