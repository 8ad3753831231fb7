"""The official-inference variant of FCIS (``FCISConfig(variant="official")``), piece by piece against
the official formulas transcribed here (float64 loops), the libraries the official code calls
(OpenCV, MXNet: tests/fixtures/variant/, written by tools/variant/make_fixtures.py), and whole:
the model's contract, and ONNX against PyTorch (slow). The comparison with the official MXNet code
itself is tests/test_official_comparison.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from official_helpers import small_official_model
from torch import nn

from fcis.inference.official_ops import (
    OFFICIAL_PIXEL_MEANS,
    bbox_pred,
    box_parser,
    clip_boxes,
    cv2_resize_f32,
    cv2_resize_u8,
    filter_boxes,
    generate_anchors,
    official_detections,
    official_input,
    official_nms,
    official_proposals,
    official_resized_size,
    official_scale,
    pad_rows,
)
from fcis.models import fcis_resnet50
from fcis.models.caffe_resnet import FullMaxPool, build_caffe_resnet
from fcis.models.fcis import FCIS, FCISConfig
from fcis.models.fcis.official import OfficialFCIS, official_config
from fcis.models.fcis.official_rpn import OfficialRPN, foreground_probs, pad_indices
from fcis.ops.ps_roi_pool_avg import ps_roi_pool_avg

FIXTURES = Path(__file__).parent / "fixtures" / "variant"

# py-faster-rcnn's generate_anchors() (base 16, ratios 0.5/1/2, scales 8/16/32), as published in
# its README and reproduced by every port of it
PY_FASTER_RCNN_ANCHORS = np.array([
    [-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
    [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
    [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]], dtype=np.float64)


# --- anchors, boxes, NMS -------------------------------------------------------------------------

def test_anchors_are_py_faster_rcnns():
    np.testing.assert_array_equal(generate_anchors(16, (0.5, 1, 2), (8, 16, 32)), PY_FASTER_RCNN_ANCHORS)
    coco = generate_anchors(16, (0.5, 1, 2), (4, 8, 16, 32))
    assert coco.shape == (12, 4)
    # ratio-major: for each ratio the four scales; scale 4 of ratio 0.5 is 23x12 (round(sqrt(512)),
    # round(23 * 0.5)) times 4 around (7.5, 7.5)
    np.testing.assert_array_equal(coco[0], [-38, -16, 53, 31])
    np.testing.assert_array_equal(coco[[1, 2, 3, 5, 6, 7, 9, 10, 11]], PY_FASTER_RCNN_ANCHORS)
    np.testing.assert_array_equal(coco[[4, 8]], [[-24, -24, 39, 39], [-14, -36, 29, 51]])


def _bbox_pred_loop(boxes, deltas):
    out = []
    for (x1, y1, x2, y2), (dx, dy, dw, dh) in zip(boxes.tolist(), deltas.tolist()):
        w, h = x2 - x1 + 1.0, y2 - y1 + 1.0
        cx, cy = x1 + 0.5 * (w - 1.0), y1 + 0.5 * (h - 1.0)
        px, py, pw, ph = dx * w + cx, dy * h + cy, math.exp(dw) * w, math.exp(dh) * h
        out.append([px - 0.5 * (pw - 1), py - 0.5 * (ph - 1), px + 0.5 * (pw - 1), py + 0.5 * (ph - 1)])
    return np.array(out)


def test_box_decoding_uses_the_plus_one_convention():
    rng = np.random.default_rng(0)
    boxes = np.sort(rng.uniform(0, 200, (50, 4)), axis=1)[:, [0, 1, 2, 3]]
    deltas = rng.normal(0, 0.3, (50, 4))
    np.testing.assert_allclose(bbox_pred(boxes, deltas), _bbox_pred_loop(boxes, deltas), rtol=0, atol=1e-9)
    # zero deltas give the box back; a 10-wide box (x 0..9) shifted by dx = 0.1 moves by one pixel
    np.testing.assert_array_equal(bbox_pred(np.array([[0.0, 0, 9, 19]]), np.zeros((1, 4))), [[0, 0, 9, 19]])
    np.testing.assert_allclose(bbox_pred(np.array([[0.0, 0, 9, 19]]), np.array([[0.1, 0, 0, 0]])), [[1, 0, 10, 19]])
    # log(2) on a 10-wide box: 20 wide around the same centre 4.5 -> x from -5 to 14
    np.testing.assert_allclose(bbox_pred(np.array([[0.0, 0, 9, 9]]), np.array([[0, 0, math.log(2), 0]])),
                               [[-5, 0, 14, 9]], atol=1e-12)


def _nms_loop(dets, thresh):
    order = sorted(range(len(dets)), key=lambda i: (-float(dets[i, 4]), -i))
    keep, alive = [], set(order)
    for i in order:
        if i not in alive:
            continue
        keep.append(i)
        for j in order:
            if j in alive and j != i and order.index(j) > order.index(i):
                xx1, yy1 = max(dets[i, 0], dets[j, 0]), max(dets[i, 1], dets[j, 1])
                xx2, yy2 = min(dets[i, 2], dets[j, 2]), min(dets[i, 3], dets[j, 3])
                inter = max(0.0, xx2 - xx1 + 1) * max(0.0, yy2 - yy1 + 1)
                area = lambda k: (dets[k, 2] - dets[k, 0] + 1) * (dets[k, 3] - dets[k, 1] + 1)  # noqa: E731
                if inter / (area(i) + area(j) - inter) > thresh:
                    alive.discard(j)
    return keep


def test_nms_is_the_official_greedy_with_plus_one_areas():
    rng = np.random.default_rng(1)
    xy = rng.integers(0, 60, (80, 2)).astype(np.float32)
    wh = rng.integers(1, 30, (80, 2)).astype(np.float32)
    dets = np.hstack([xy, xy + wh, rng.permutation(80)[:, None].astype(np.float32)])
    for thresh in (0.3, 0.7):
        assert official_nms(dets, thresh).tolist() == _nms_loop(dets.astype(np.float64), thresh)
    # +1 areas: two 1-pixel-apart 2x2 boxes (x 0..1 and 1..2) overlap by 1/3, not 0
    pair = np.array([[0, 0, 1, 1, 0.9], [1, 0, 2, 1, 0.8]], dtype=np.float32)
    assert official_nms(pair, 0.3).tolist() == [0] and official_nms(pair, 0.34).tolist() == [0, 1]
    # equal scores: the higher index first (a stable argsort, reversed, as the official [::-1])
    same = np.array([[0, 0, 9, 9, 0.5], [0, 0, 9, 9, 0.5]], dtype=np.float32)
    assert official_nms(same, 0.5).tolist() == [1]
    assert official_nms(dets, 0.7, max_keep=5).tolist() == official_nms(dets, 0.7)[:5].tolist()
    assert official_nms(np.zeros((0, 5), np.float32), 0.5).tolist() == []


def test_filter_and_clip_are_inclusive():
    boxes = np.array([[0, 0, 0, 5], [0, 0, 1, 5], [3, 3, 2, 9]], dtype=np.float32)
    assert filter_boxes(boxes, 2).tolist() == [1]          # widths x2 - x1 + 1: 1, 2, 0
    np.testing.assert_array_equal(clip_boxes(np.array([[-5.0, -1, 700, 500]]), 480, 640), [[0, 0, 639, 479]])


def test_padding_rule_spreads_the_kept_rows_evenly():
    assert pad_rows(0, 300).tolist() == [] and pad_rows(300, 300).tolist() == list(range(300))
    idx = pad_rows(100, 300)
    assert len(idx) == 300 and idx[:100].tolist() == list(range(100))
    assert np.bincount(idx, minlength=100).tolist() == [3] * 100           # each kept row 3 times
    idx = pad_rows(250, 300)
    assert sorted(np.bincount(idx[250:], minlength=250).tolist()) == [0] * 200 + [1] * 50
    assert np.diff(idx[250:]).min() >= 4                                   # spread, not the first 50
    for n in (1, 7, 150, 299, 300):
        torch_idx = pad_indices(torch.arange(n), 300)
        assert torch_idx.tolist() == pad_rows(n, 300).tolist()
    assert pad_indices(torch.arange(0), 300).tolist() == [0] * 300           # all dropped (< n = 0)


# --- the proposal op -----------------------------------------------------------------------------

def _rpn_maps(h=8, w=11, anchors=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(1, anchors, h, w, generator=g)
    deltas = torch.randn(1, 4 * anchors, h, w, generator=g) * 0.2
    return probs, deltas


def test_proposal_op_steps():
    probs, deltas = _rpn_maps()
    anchors = generate_anchors(16, (0.5, 1, 2), (4, 8, 16, 32))
    # an input of 120 x 170: int(120 / 16) = 7 rows and int(170 / 16) = 10 columns of the 8 x 11 map
    out = official_proposals(probs[0].numpy(), deltas[0].numpy(), 120, 170, anchors=anchors,
                             pre_nms_top_n=200, post_nms_top_n=50, nms_iou=0.7, min_size=2)
    assert out.dtype == np.float32 and out.shape == (50, 4)
    assert out[:, 0].min() >= 0 and out[:, 2].max() <= 169 and out[:, 3].max() <= 119
    assert ((out[:, 2] - out[:, 0] + 1 >= 2) & (out[:, 3] - out[:, 1] + 1 >= 2)).all()
    # the same boxes from the maps cut by hand: the last row and column play no part
    cut = official_proposals(probs[0, :, :7, :10].numpy(), deltas[0, :, :7, :10].numpy(), 120, 170,
                             anchors=anchors, pre_nms_top_n=200, post_nms_top_n=50, nms_iou=0.7, min_size=2)
    np.testing.assert_array_equal(out, cut)
    # the highest-scoring valid anchor's box comes first
    top = np.unravel_index(np.argmax(probs[0, :, :7, :10].numpy()), (12, 7, 10))
    a, y, x = (int(v) for v in top)
    box = bbox_pred(anchors[a:a + 1] + [x * 16, y * 16, x * 16, y * 16], deltas[0, 4 * a:4 * a + 4, y, x].numpy()[None])
    np.testing.assert_allclose(out[0], clip_boxes(box, 120, 170)[0].astype(np.float32))
    # few survivors are padded to post_nms_top_n by repeating kept rows; none -> no rows
    tiny = official_proposals(probs[0].numpy(), deltas[0].numpy(), 120, 170, anchors=anchors,
                              pre_nms_top_n=3, post_nms_top_n=50, nms_iou=0.7, min_size=2)
    assert tiny.shape == (50, 4) and len(np.unique(tiny, axis=0)) <= 3
    none = official_proposals(probs[0].numpy(), deltas[0].numpy(), 120, 170, anchors=anchors, min_size=10_000)
    assert none.shape == (0, 4)


def test_proposal_op_in_pytorch_for_export_gives_the_same_boxes():
    probs, deltas = _rpn_maps(seed=3)
    rpn = OfficialRPN(8, scales=(4, 8, 16, 32), ratios=(0.5, 1, 2), pre_nms_top_n=300, post_nms_top_n=60)
    ref = official_proposals(probs[0].numpy(), deltas[0].numpy(), 120, 170, anchors=rpn.base_anchors,
                             pre_nms_top_n=300, post_nms_top_n=60)
    got = rpn.export_proposals(probs, deltas, (120, 170)).numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3)


def test_rpn_softmax_is_background_then_foreground():
    scores = torch.randn(2, 24, 3, 4)
    pair = torch.stack([scores[:, :12], scores[:, 12:]], dim=2).softmax(dim=2)   # (bg, fg) of each anchor
    torch.testing.assert_close(foreground_probs(scores), pair[:, :, 1], rtol=0, atol=1e-7)


def test_box_parser_applies_the_stds_and_clips():
    rois = np.array([[10, 20, 49, 59], [0, 0, 9, 9]], dtype=np.float32)
    deltas = np.array([[0.5, -0.5, 0.2, 0.4], [-5, -5, 0, 0]], dtype=np.float32)
    got = box_parser(rois, deltas, (0.2, 0.2, 0.5, 0.5), (0, 0, 0, 0), 100, 100)
    stds = np.array([0.2, 0.2, 0.5, 0.5], dtype=np.float32)
    ref = np.clip(_bbox_pred_loop(rois.astype(np.float64), (deltas * stds).astype(np.float64)), 0, 99)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)
    assert got.dtype == np.float32


# --- backbone and input --------------------------------------------------------------------------

def test_caffe_resnet_puts_the_stride_in_the_first_1x1_and_pools_fully(small):
    net = build_caffe_resnet(50, None)
    for layer in (net.layer2, net.layer3):
        assert layer[0].conv1.stride == (2, 2) and layer[0].conv2.stride == (1, 1)
        assert layer[0].downsample[0].stride == (2, 2)
    assert net.layer4[0].conv1.stride == net.layer4[0].conv2.stride == net.layer4[0].downsample[0].stride == (1, 1)
    assert all(b.conv2.dilation == (2, 2) and b.conv2.padding == (2, 2) for b in net.layer4)
    assert isinstance(net.maxpool, FullMaxPool)
    assert all(m.eps == 1e-5 for m in net.modules() if type(m).__name__ == "FrozenBatchNorm2d")
    ceil = nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)
    for size in range(3, 24):
        x = torch.randn(1, 2, size, size + 1)
        out = FullMaxPool()(x)
        assert out.shape[-2:] == (math.ceil((size - 3) / 2) + 1, math.ceil((size - 2) / 2) + 1)   # MXNet 'full'
        torch.testing.assert_close(out, ceil(x), rtol=0, atol=0)
    # the official feature sizes: a 600 x 626 input gives conv4 and conv5 of 38 x 39
    with torch.no_grad():
        c4, c5 = small.backbone(torch.zeros(1, 3, 600, 626))
    assert c4.shape[-2:] == c5.shape[-2:] == (38, 39)


def test_resize_rule_and_sizes():
    assert official_scale(480, 640) == 600 / 480
    assert official_scale(300, 1000) == 1000 / 1000                       # 2000 > 1000: long side rules
    # np.round(0.5 * 2001) = 1000 (half to even): not over 1000, so the short side still rules
    assert official_scale(1200, 2001) == 0.5
    assert official_scale(1200, 2003) == 1000 / 2003                      # round(1001.5) = 1002 > 1000
    assert official_resized_size(1200, 2001, 0.5) == (600, 1000)          # 1000.5 rounds to even
    assert official_resized_size(1200, 2003, 0.5) == (600, 1002)


@pytest.fixture(scope="module")
def cv2_cases():
    with np.load(FIXTURES / "cv2_resize.npz") as z:
        return {k: z[k] for k in z.files}


def test_8bit_resize_is_opencvs_bit_for_bit(cv2_cases):
    keys = sorted({k.rsplit("_", 1)[0] for k in cv2_cases if k.startswith("u8_")})
    assert len(keys) >= 30 and any(float(cv2_cases[k + "_scale"]) == 0.5 for k in keys)
    for key in keys:
        got = cv2_resize_u8(cv2_cases[key + "_in"], float(cv2_cases[key + "_scale"]))
        np.testing.assert_array_equal(got, cv2_cases[key + "_out"], err_msg=key)


def test_float_mask_resize_is_within_ulps_of_opencv(cv2_cases):
    keys = sorted({k.rsplit("_", 1)[0] for k in cv2_cases if k.startswith("f32_")})
    assert len(keys) >= 30
    for key in keys:
        ref = cv2_cases[key + "_out"]
        got = cv2_resize_f32(cv2_cases[key + "_in"], ref.shape[1], ref.shape[0])
        tol = 1e-5 if 1 in cv2_cases[key + "_in"].shape else 3e-7     # OpenCV treats 1-wide sources apart
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol, err_msg=key)


def test_official_input_is_rgb_minus_pixel_means():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    data, scale = official_input(u8, 60, 100)
    assert scale == 2.0 and data.shape == (3, 60, 80) and data.dtype == np.float32
    resized = cv2_resize_u8(u8, 2.0).astype(np.float64)
    np.testing.assert_array_equal(data, (resized - OFFICIAL_PIXEL_MEANS).astype(np.float32).transpose(2, 0, 1))
    # a [0, 1] float image (how fcis loads photos) is quantised back to the same 8 bits
    again, _ = official_input(u8.transpose(2, 0, 1).astype(np.float32) / 255, 60, 100)
    np.testing.assert_array_equal(again, data)


def test_ps_roi_pooling_matches_mxnet():
    with np.load(FIXTURES / "psroi_mxnet.npz") as z:
        maps, rois, ref = torch.from_numpy(z["maps"]), torch.from_numpy(z["rois"]), z["pooled"]
    got = ps_roi_pool_avg(maps, rois, 7, (21, 21), 0.0625, geometry_dtype=torch.float32).numpy()
    # integer maps: exact sums, so any bin that took other cells would show
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


# --- post-processing -----------------------------------------------------------------------------

def _official_voting_transcribed(boxes, scores, masks, height, width):
    """``cpu_mask_voting`` + ``mask_aggregation`` as the official file writes them (full-image
    canvas), with this module's float32 NMS and OpenCV resize stand-ins."""
    num_classes = scores.shape[1]
    t_boxes, t_scores, all_scores = [None] * num_classes, [None] * num_classes, []
    for i in range(1, num_classes):
        dets = np.hstack((boxes.astype(np.float32), scores[:, i:i + 1]))
        inds = official_nms(dets, 0.3)[:100]
        t_boxes[i], t_scores[i] = boxes[inds], scores[inds, i]
        all_scores.extend(scores[inds, i])
    ranked = np.sort(all_scores)[::-1]
    thresh = max(ranked[min(len(ranked), 100) - 1], 1e-3)
    res_mask = []
    for i in range(len(boxes)):
        b = np.round(boxes[i]).astype(int)
        res_mask.append(cv2_resize_f32(masks[i], b[2] - b[0] + 1, b[3] - b[1] + 1))
    out = []
    for c in range(1, num_classes):
        keep = t_scores[c] >= thresh
        for box, score in zip(t_boxes[c][keep], t_scores[c][keep]):
            iw = np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]) + 1.0
            ih = np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]) + 1.0
            area = lambda b: (b[..., 2] - b[..., 0] + 1.0) * (b[..., 3] - b[..., 1] + 1.0)  # noqa: E731
            ov = np.where((iw > 0) & (ih > 0), iw * ih / (area(boxes.astype(np.float64)) + area(box.astype(np.float64))
                                                         - iw * ih), 0)
            inds = np.nonzero(ov >= 0.5)[0]
            w = scores[inds, c] / sum(scores[inds, c])
            canvas = np.zeros((height, width))
            for j, wj in zip(inds, w):
                b = np.round(boxes[j]).astype(int)
                canvas[b[1]:b[3] + 1, b[0]:b[2] + 1] += (res_mask[j] >= 0.4).astype(float) * wj
            r, cc = np.nonzero(canvas >= 0.4)
            tight = np.array([cc.min(), r.min(), cc.max(), r.max()], dtype=np.float32)
            crop = canvas[r.min():r.max() + 1, cc.min():cc.max() + 1]
            out.append((c, float(score), tight, cv2_resize_f32(crop.astype(np.float32), 21, 21)))
    return out


def test_detections_are_the_official_mask_voting():
    rng = np.random.default_rng(3)
    m = 60
    centres = rng.uniform(20, 100, (m, 2))
    sizes = rng.uniform(10, 40, (m, 2))
    rois = np.hstack([centres - sizes, centres + sizes]).astype(np.float32) * 2    # network input at scale 2
    logits = rng.normal(0, 2, (m, 4))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    masks = rng.uniform(0, 1, (m, 21, 21)).astype(np.float32)
    masks[:, 5:15, 5:15] = 0.9                                                # every mask has a core
    dets, canvas = official_detections(rois, probs, masks, 2.0, (260, 280))
    assert canvas == (130, 140)
    boxes = clip_boxes(rois[filter_boxes(rois, 2.0)] / np.float32(2.0), 130, 140)
    ref = _official_voting_transcribed(boxes, probs[filter_boxes(rois, 2.0)], masks[filter_boxes(rois, 2.0)],
                                       130, 140)
    assert len(dets) == len(ref) > 10
    for d, (c, s, box, mask) in zip(dets, ref):
        assert d.label == c and d.score == s
        np.testing.assert_array_equal(d.box, box)
        np.testing.assert_array_equal(d.mask, mask)
    assert official_detections(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32),
                               np.zeros((0, 21, 21), np.float32), 1.0, (10, 10))[0] == []


# --- the model -----------------------------------------------------------------------------------

def test_default_variant_is_unchanged_and_official_needs_its_settings():
    assert FCISConfig().variant == "torchvision"
    default = fcis_resnet50(num_classes=2)
    assert type(default) is FCIS and isinstance(default.backbone.body.maxpool, nn.MaxPool2d)
    assert default.backbone.body.layer2[0].conv2.stride == (2, 2)
    with pytest.raises(ValueError, match="variant must be"):
        FCISConfig(variant="mxnet")
    with pytest.raises(ValueError, match="assemble_mode"):
        FCISConfig(**{**official_config(2), "assemble_mode": "bilinear"})
    with pytest.raises(ValueError, match="depth"):
        FCISConfig(**{**official_config(2), "depth": 18})


@pytest.fixture(scope="module")
def small():
    return small_official_model(2, min_size=64, max_size=96)


def test_official_model_follows_the_contract(small):
    assert isinstance(small, OfficialFCIS) and isinstance(small, FCIS)
    image = torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        (out,) = small([image])
    n = len(out["scores"])
    assert n > 0 and out["boxes"].shape == (n, 4) and out["masks"].shape == (n, 1, 70, 90)
    assert out["labels"].min() >= 1 and out["labels"].max() <= 2
    assert torch.all(out["scores"][:-1] >= out["scores"][1:])
    assert out["boxes"][:, [0, 1]].min() >= 0 and out["boxes"][:, 2].max() <= 90 and out["boxes"][:, 3].max() <= 70
    # a box is the pasted window of its mask: every pixel >= 0.4 lies inside it
    for box, mask in zip(out["boxes"].long(), out["masks"][:, 0]):
        inside = torch.zeros_like(mask, dtype=torch.bool)
        inside[box[1]:box[3], box[0]:box[2]] = True
        assert not ((mask >= 0.4) & ~inside).any()
    (windows,) = small.detect_windows([image], score_threshold=float(out["scores"][n // 2]))
    windows = list(windows)
    assert len(windows) == int((out["scores"] >= out["scores"][n // 2]).sum())
    for det, score, mask in zip(windows, out["scores"], out["masks"][:, 0]):
        assert det.score == pytest.approx(float(score))
        torch.testing.assert_close(det.full_mask(0.4), mask >= 0.4)
    small.train()
    with pytest.raises(ValueError, match="inference only"):
        small([image], [{}])
    small.eval()


def test_blank_tiny_and_thin_images_run(small):
    with torch.no_grad():
        for image in (torch.zeros(3, 64, 64), torch.rand(3, 3, 2), torch.rand(3, 2, 900), torch.rand(3, 1, 1)):
            (out,) = small([image])
            assert out["masks"].shape[-2:] == image.shape[-2:]


@pytest.mark.slow
def test_export_of_a_converted_checkpoint_gives_the_pytorch_detections(tmp_path):
    """Official-layout file -> ``fcis convert weights`` -> ``fcis export`` -> OnnxPredictor: the
    same detections as the PyTorch Predictor of the checkpoint, and graph outputs as the eager
    candidates (ResNet-50, 64-channel heads, 50 proposals: one pooled chunk; the export takes
    minutes on a loaded 2-core machine)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from official_helpers import write_official_params

    from fcis.cli.main import main
    from fcis.export.onnx_export import onnx_op_domains
    from fcis.inference import OnnxPredictor, Predictor
    from fcis.inference.official_ops import official_input as prepare

    model = small_official_model(2, rpn_channels=64, head_channels=64)
    write_official_params(model, tmp_path / "small-0000.params")
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    assert main(["convert", "weights", str(tmp_path / "small-0000.params"), str(tmp_path / "c.pt"), "--classes",
                 str(tmp_path / "names.txt"), "--set", "min_size=64", "--set", "max_size=96",
                 "--set", "rpn_pre_nms_top_n_test=500", "--set", "rpn_post_nms_top_n_test=50"]) == 0
    assert main(["export", "--weights", str(tmp_path / "c.pt"), "--output", str(tmp_path / "c.onnx")]) == 0
    assert set(onnx_op_domains(tmp_path / "c.onnx")) == {"ai.onnx"}
    runner = OnnxPredictor(tmp_path / "c.onnx", score_threshold=0.0)
    assert runner.official and runner.class_names == ["cat", "dog"]
    torch_pred = Predictor.from_checkpoint(tmp_path / "c.pt", score_threshold=0.0)
    eager = torch_pred.model
    rng = np.random.default_rng(0)
    for shape in ((90, 120, 3), (130, 70, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        a, b = runner.predict(image), torch_pred.predict(image)
        assert len(a["scores"]) == len(b["scores"]) > 0
        np.testing.assert_array_equal(a["labels"], b["labels"].numpy())
        np.testing.assert_allclose(a["scores"], b["scores"].numpy(), rtol=0, atol=1e-5)
        np.testing.assert_array_equal(a["boxes"], b["boxes"].numpy())
        assert (a["masks"] != b["masks"].numpy()).mean() < 1e-3
        data, _ = prepare(image, 64, 96)
        rois, probs, masks = runner.session.run(["boxes", "class_probs", "mask_probs"], {"image": data[None]})
        cand = eager.candidates(torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255))
        assert rois.shape == cand.rois.shape == (100, 4)
        np.testing.assert_allclose(rois, cand.rois.numpy(), rtol=0, atol=5e-3)
        np.testing.assert_allclose(probs, cand.class_probs.numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(masks, cand.masks.numpy(), rtol=0, atol=1e-4)
