"""The official FCIS code's (msracver/FCIS) image transform and test-time post-processing, in NumPy.

Used by the official-inference variant of FCIS (``FCISConfig(variant="official")``) in PyTorch
(:mod:`fcis.models.fcis.official`) and, unchanged, by :class:`fcis.inference.OnnxPredictor` for an
exported official-variant model, so both run the same post-processing. No torch here.

What is transcribed (file names are the official repository's):

- **Input** (``lib/utils/image.py``: ``resize``, ``transform``): scale ``600 / short side``, or
  ``1000 / long side`` when ``np.round(scale · long side) > 1000``; ``cv2.resize(im, None, fx=scale,
  fy=scale, INTER_LINEAR)`` on the 8-bit image; RGB minus the pixel means on 0-255, no std.
  :func:`cv2_resize_u8` reproduces OpenCV 4.11's 8-bit INTER_LINEAR bit for bit (its fixed-point
  weights of 11 bits, computed from float32 source positions, the vectorised vertical pass's
  rounding ``((r0 >> 4)·b0 >> 16) + ((r1 >> 4)·b1 >> 16) + 2 >> 2``, rows clamped after the
  weights are taken, and the exact scale 1/2, which OpenCV runs as INTER_AREA: ``(a+b+c+d+2) >> 2``,
  border means rounded half to even); checked against ``cv2.resize`` on 300 random images and
  scales (tests/fixtures/cv2_resize.npz, written by tools/official/make_cv2_fixture.py).
  ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` samples the same
  positions only when the output size is the exact ratio (cv2 maps with ``1/fx``, torch with
  ``in/out``), works in float and does not round to 8 bits: up to ±1 grey level on most pixels
  and a sub-pixel shift — hence this emulation.
- **Mask resizing** (``cv2.resize`` of float32 masks, in ``cpu_mask_voting`` and
  ``mask_voc2coco``): :func:`cv2_resize_f32`, the same sampling with weights from double source
  positions; within 2e-7 of OpenCV 4.11 (a few float32 ulps; OpenCV's float kernel rounds its
  products in an order not reproduced here), which matters only for a value that close to 0.4.
- **Region proposals** (``fcis/operator_py/proposal.py``, the Python op of the released test
  configs) and the **BoxParser** (``fcis/operator_py/box_parser.py``): :func:`official_proposals`,
  :func:`box_parser`, on py-faster-rcnn's :func:`generate_anchors`. NumPy as the official ops:
  the same dtypes step by step (NumPy 1.x's casting rules, under which the official code ran:
  ``float32 array × float64 scalar`` stays float32, e.g. the BoxParser's deltas × stds; NumPy's
  float32 ``exp``, which NumPy 2 computes as NumPy 1.23 did).
- **Post-processing** (``fcis/core/tester.py`` ``im_detect`` + ``pred_eval``'s mask-merge branch,
  ``lib/mask/mask_transform.py`` ``cpu_mask_voting`` / ``mask_aggregation``,
  ``lib/nms/nms.py`` ``nms``, ``lib/bbox/bbox_transform.py`` ``clip_boxes`` / ``filter_boxes``,
  ``lib/utils/mask_voc2coco.py``): :func:`official_detections` and :func:`paste_official_mask`.

Boxes here are the official inclusive pixel boxes ``(x1, y1, x2, y2)`` (width ``x2 - x1 + 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["OFFICIAL_PIXEL_MEANS", "generate_anchors", "bbox_pred", "official_proposals", "box_parser",
           "pad_rows", "official_scale", "official_resized_size", "cv2_resize_u8", "cv2_resize_f32",
           "official_input", "official_nms", "filter_boxes", "clip_boxes", "OfficialDetection",
           "official_detections", "paste_official_mask", "official_mask_window"]

#: The official COCO/VOC configs' PIXEL_MEANS (BGR 103.06, 115.90, 123.15), here in RGB order, 0-255.
OFFICIAL_PIXEL_MEANS = (123.15, 115.90, 103.06)

_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


# --- input -----------------------------------------------------------------------------------------

def official_scale(height: int, width: int, target_size: int = 600, max_size: int = 1000) -> float:
    """``lib/utils/image.py`` ``resize``'s scale: ``target / short side``, or ``max_size / long
    side`` when ``np.round(scale · long side) > max_size`` (NumPy rounds half to even)."""
    size_min, size_max = min(height, width), max(height, width)
    scale = float(target_size) / float(size_min)
    if np.round(scale * size_max) > max_size:
        scale = float(max_size) / float(size_max)
    return scale


def _cv_round(v: float) -> int:
    """OpenCV's ``saturate_cast<int>(double)``: round half to even."""
    return int(np.rint(v))


def official_resized_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(h, w) that ``cv2.resize(im, None, fx=scale, fy=scale)`` gives: each side times the scale,
    rounded half to even; at least one pixel."""
    return max(1, _cv_round(height * scale)), max(1, _cv_round(width * scale))


def _float32_positions(size: int, out: int, step: float, clamp: bool) -> tuple[np.ndarray, np.ndarray]:
    """Source index and float32 fraction of each output position, as OpenCV's fixed-point path
    computes them: ``fx = (float)((d + 0.5)·step - 0.5)``, ``sx = floor(fx)``, ``fx -= sx`` in
    float32; with ``clamp`` (the horizontal axis) positions before the first or after the last
    source pixel take that pixel with fraction 0."""
    pos = ((np.arange(out, dtype=np.float64) + 0.5) * step - 0.5).astype(np.float32)
    src = np.floor(pos).astype(np.int64)
    frac = (pos - src.astype(np.float32)).astype(np.float32)
    if clamp:
        low, high = src < 0, src >= size - 1
        frac[low | high] = 0
        src[low] = 0
        src[high] = size - 1
    return src, frac


def _double_positions(size: int, out: int, step: float, clamp: bool) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_float32_positions` with the position and its fraction in double, the fraction
    then rounded to float32 (OpenCV 4.11's float path)."""
    pos = (np.arange(out, dtype=np.float64) + 0.5) * step - 0.5
    src = np.floor(pos).astype(np.int64)
    frac = (pos - src).astype(np.float32)
    if clamp:
        low, high = src < 0, src >= size - 1
        frac[low | high] = 0
        src[low] = 0
        src[high] = size - 1
    return src, frac


def _fixed(v: np.ndarray) -> np.ndarray:
    """``saturate_cast<short>(v · 2048)`` (round half to even) as int64."""
    return np.clip(np.rint((v * np.float32(_COEF_SCALE)).astype(np.float32)), -32768, 32767).astype(np.int64)


def _area_half_u8(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """OpenCV's INTER_AREA at exactly half size (what INTER_LINEAR becomes at scale 1/2): the
    vectorised ``(a + b + c + d + 2) >> 2`` inside, the mean of the pixels there are (rounded half
    to even) on a last odd row or column."""
    h, w = img.shape[:2]
    s = img.astype(np.int64)
    out = np.zeros((out_h, out_w) + img.shape[2:], dtype=np.int64)
    h2, w2 = min(h // 2, out_h), min(w // 2, out_w)
    quad = (s[0:2 * h2:2, 0:2 * w2:2] + s[0:2 * h2:2, 1:2 * w2:2]
            + s[1:2 * h2:2, 0:2 * w2:2] + s[1:2 * h2:2, 1:2 * w2:2])
    out[:h2, :w2] = (quad + 2) >> 2
    for dy in range(out_h):
        cols = range(out_w) if dy >= h2 else range(w2, out_w)
        ys = [y for y in (2 * dy, 2 * dy + 1) if y < h]
        for dx in cols:
            xs = [x for x in (2 * dx, 2 * dx + 1) if x < w]
            if not ys or not xs:
                continue
            total = sum(s[y, x] for y in ys for x in xs)
            out[dy, dx] = np.rint(np.asarray(total, dtype=np.float32) / np.float32(len(ys) * len(xs)))
    return np.clip(out, 0, 255).astype(np.uint8)


def cv2_resize_u8(img: np.ndarray, scale: float) -> np.ndarray:
    """``cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)`` of a uint8
    (H, W) or (H, W, C) image, bit-exact with OpenCV 4.11 (see the module docstring)."""
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"cv2_resize_u8 needs a uint8 (H, W[, C]) image, got {img.dtype} {img.shape}")
    height, width = img.shape[:2]
    out_h, out_w = official_resized_size(height, width, scale)
    step = 1.0 / scale
    if step == 2.0:
        return _area_half_u8(img, out_h, out_w)
    sx, fx = _float32_positions(width, out_w, step, clamp=True)
    # vertical positions are not clamped: the rows are (OpenCV clamps the row pointers, not the weights)
    pos = ((np.arange(out_h, dtype=np.float64) + 0.5) * step - 0.5).astype(np.float32)
    sy = np.floor(pos).astype(np.int64)
    fy = (pos - sy.astype(np.float32)).astype(np.float32)
    a0, a1 = _fixed((np.float32(1) - fx).astype(np.float32)), _fixed(fx)
    b0, b1 = _fixed((np.float32(1) - fy).astype(np.float32)), _fixed(fy)
    src = img.reshape(height, width, -1).astype(np.int64)
    border = np.nonzero(sx + 1 >= width)[0]
    xmax = int(border[0]) if border.size else out_w
    rows = src[:, sx] * a0[None, :, None] + src[:, np.minimum(sx + 1, width - 1)] * a1[None, :, None]
    rows[:, xmax:] = src[:, sx[xmax:]] * _COEF_SCALE                    # past the last pixel: S · ONE
    r0 = rows[np.clip(sy, 0, height - 1)] >> 4
    r1 = rows[np.clip(sy + 1, 0, height - 1)] >> 4
    r0, r1 = np.clip(r0, -32768, 32767), np.clip(r1, -32768, 32767)         # packed to int16
    out = ((r0 * b0[:, None, None]) >> 16) + ((r1 * b1[:, None, None]) >> 16)
    out = np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)
    return out.reshape((out_h, out_w) + img.shape[2:])


def _area_half_f32(m: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    h, w = m.shape
    out = np.zeros((out_h, out_w), dtype=np.float32)
    for dy in range(out_h):
        for dx in range(out_w):
            block = m[2 * dy:2 * dy + 2, 2 * dx:2 * dx + 2]
            out[dy, dx] = block.sum(dtype=np.float32) * np.float32(1.0 / block.size) if block.size else 0
    return out


def cv2_resize_f32(mask: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """``cv2.resize(mask, (out_w, out_h))`` (INTER_LINEAR) of a float32 (H, W) array, within a few
    float32 ulps of OpenCV 4.11 (module docstring). A same-size call is a copy, as in OpenCV."""
    m = np.asarray(mask, dtype=np.float32)
    height, width = m.shape
    if out_w < 1 or out_h < 1:
        raise ValueError(f"cv2_resize_f32: empty output size ({out_w}, {out_h})")
    if (out_w, out_h) == (width, height):
        return m.copy()
    step_x, step_y = 1.0 / (out_w / width), 1.0 / (out_h / height)
    if step_x == 2.0 and step_y == 2.0:
        return _area_half_f32(m, out_h, out_w)
    sx, fx = _double_positions(width, out_w, step_x, clamp=True)
    pos = (np.arange(out_h, dtype=np.float64) + 0.5) * step_y - 0.5
    sy = np.floor(pos).astype(np.int64)
    fy = (pos - sy).astype(np.float32)
    a0, b0 = (np.float32(1) - fx).astype(np.float32), (np.float32(1) - fy).astype(np.float32)
    border = np.nonzero(sx + 1 >= width)[0]
    xmax = int(border[0]) if border.size else out_w
    rows = (m[:, sx] * a0[None, :] + m[:, np.minimum(sx + 1, width - 1)] * fx[None, :]).astype(np.float32)
    rows[:, xmax:] = m[:, sx[xmax:]]
    top, bottom = rows[np.clip(sy, 0, height - 1)], rows[np.clip(sy + 1, 0, height - 1)]
    return (top * b0[:, None] + bottom * fy[:, None]).astype(np.float32)


def official_input(image: np.ndarray, min_size: int = 600, max_size: int = 1000,
                   pixel_means: tuple[float, float, float] = OFFICIAL_PIXEL_MEANS) -> tuple[np.ndarray, float]:
    """The official test input of one image: (3, H, W) float32 in [0, 1] (RGB, as every fcis
    loader gives it; quantised back to 8 bits: ``round(x · 255)``) or (H, W, 3) uint8 ->
    ``((3, h, w) float32 RGB minus the pixel means, scale)``: ``resize`` then ``transform``
    (computed in float64 as the official NumPy code, then float32 as MXNet receives it)."""
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        hwc = image
    elif image.ndim == 3 and image.shape[0] == 3:
        hwc = np.rint(np.clip(np.asarray(image, dtype=np.float32) * np.float32(255), 0, 255)).astype(np.uint8)
        hwc = np.ascontiguousarray(hwc.transpose(1, 2, 0))
    else:
        raise ValueError(f"official_input needs a (3, H, W) float image or an (H, W, 3) uint8 one, got "
                         f"{image.dtype} {image.shape}")
    scale = official_scale(hwc.shape[0], hwc.shape[1], min_size, max_size)
    resized = cv2_resize_u8(hwc, scale)
    means = np.asarray(pixel_means, dtype=np.float64)
    tensor = (resized.astype(np.float64) - means).astype(np.float32).transpose(2, 0, 1)
    return np.ascontiguousarray(tensor), scale


# --- boxes -----------------------------------------------------------------------------------------

def descending_order(scores: np.ndarray) -> np.ndarray:
    """``scores.argsort()[::-1]`` with a stable sort: descending, equal scores by decreasing index
    (NumPy's default sort, which the official code calls, orders equal keys as its algorithm
    happens to; with a stable sort the order of ties is defined — the only liberty taken)."""
    return np.argsort(scores, kind="stable")[::-1]


def official_nms(dets: np.ndarray, thresh: float, max_keep: int | None = None) -> np.ndarray:
    """``lib/nms/nms.py`` ``nms``: greedy over ``dets`` (N, 5) float32 (x1, y1, x2, y2, score) by
    decreasing score; a box whose IoU (areas with +1, float32) with a kept one is > ``thresh`` is
    suppressed. Returns the kept indices (int64), in order; with ``max_keep``, stops once that
    many are kept (the first ones do not depend on the rest)."""
    dets = np.asarray(dets, dtype=np.float32)
    if dets.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    one = np.float32(1)
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    order = descending_order(scores)
    keep: list[int] = []
    while order.size > 0 and (max_keep is None or len(keep) < max_keep):
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[ovr <= np.float32(thresh)]
    return np.asarray(keep, dtype=np.int64)


def filter_boxes(boxes: np.ndarray, min_size: float) -> np.ndarray:
    """``bbox_transform.filter_boxes``: indices of the boxes whose width and height (+1) are >= min_size."""
    one = np.asarray(1, dtype=boxes.dtype)
    ws = boxes[:, 2] - boxes[:, 0] + one
    hs = boxes[:, 3] - boxes[:, 1] + one
    return np.nonzero((ws >= min_size) & (hs >= min_size))[0]


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """``bbox_transform.clip_boxes`` of (N, 4) boxes to [0, width - 1] × [0, height - 1] (a copy, same dtype)."""
    out = boxes.copy()
    out[:, 0::2] = np.maximum(np.minimum(out[:, 0::2], width - 1), 0)
    out[:, 1::2] = np.maximum(np.minimum(out[:, 1::2], height - 1), 0)
    return out


def _overlaps(boxes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``bbox_overlaps`` of (N, 4) boxes with one query box (float64, areas with +1) -> (N,)."""
    b = boxes.astype(np.float64)
    q = query.astype(np.float64)
    q_area = (q[2] - q[0] + 1) * (q[3] - q[1] + 1)
    iw = np.minimum(b[:, 2], q[2]) - np.maximum(b[:, 0], q[0]) + 1
    ih = np.minimum(b[:, 3], q[3]) - np.maximum(b[:, 1], q[1]) + 1
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    out = np.zeros(len(b))
    ok = (iw > 0) & (ih > 0)
    out[ok] = iw[ok] * ih[ok] / (area[ok] + q_area - iw[ok] * ih[ok])
    return out


# --- proposals and box refinement ------------------------------------------------------------------

def generate_anchors(base_size: int = 16, ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                     scales: tuple[float, ...] = (8.0, 16.0, 32.0)) -> np.ndarray:
    """py-faster-rcnn's base anchors (``lib/rpn/generate_anchor.py``), (len(ratios)·len(scales), 4)
    float64 inclusive boxes, ratio-major: for each ratio r of the base box (0, 0, base-1, base-1),
    width ``round(sqrt(base² / r))`` and height ``round(width · r)`` (NumPy rounds half to even)
    around its centre ((base - 1) / 2), then each scale multiplies both sides around that centre."""
    def around(w: np.ndarray, h: np.ndarray, cx: float, cy: float) -> np.ndarray:
        return np.stack([cx - 0.5 * (w - 1), cy - 0.5 * (h - 1), cx + 0.5 * (w - 1), cy + 0.5 * (h - 1)], axis=1)

    base = float(base_size)
    centre = 0.5 * (base - 1)
    r = np.asarray(ratios, dtype=np.float64)
    ws = np.round(np.sqrt(base * base / r))
    hs = np.round(ws * r)
    s = np.asarray(scales, dtype=np.float64)
    return np.concatenate([around(w * s, h * s, centre, centre) for w, h in zip(ws, hs)], axis=0)


def bbox_pred(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """``bbox_transform.bbox_pred`` (nonlinear_pred) of (K, 4) inclusive boxes and (K, 4) deltas
    (dx, dy, dw, dh) -> (K, 4) float64: widths ``x2 - x1 + 1``, centres ``x1 + 0.5 (w - 1)``, in
    float64, with ``np.exp`` taken in the deltas' dtype (as the official NumPy); no clamp."""
    boxes = boxes.astype(np.float64)
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * (widths - 1.0)
    ctr_y = boxes[:, 1] + 0.5 * (heights - 1.0)
    px = deltas[:, 0] * widths + ctr_x
    py = deltas[:, 1] * heights + ctr_y
    pw = np.exp(deltas[:, 2]) * widths
    ph = np.exp(deltas[:, 3]) * heights
    return np.stack([px - 0.5 * (pw - 1.0), py - 0.5 * (ph - 1.0), px + 0.5 * (pw - 1.0), py + 0.5 * (ph - 1.0)],
                    axis=1)


def pad_rows(n: int, total: int) -> np.ndarray:
    """Row indices ``[0, n)`` then, when ``1 <= n < total``, ``total - n`` padding rows, the j-th
    repeating row ``floor((j + 0.5) · n / (total - n))``: the official proposal op pads with
    ``np.random.choice(keep, total - n)``, a random draw that cannot be reproduced; this is its
    expectation, evenly spread and deterministic. (n,) when ``n >= total`` or ``n == 0``."""
    if n == 0 or n >= total:
        return np.arange(min(n, total))
    m = total - n
    pad = np.floor((np.arange(m, dtype=np.float64) + 0.5) * n / m).astype(np.int64)
    return np.concatenate([np.arange(n), pad])


def official_proposals(fg_probs: np.ndarray, deltas: np.ndarray, im_height: int, im_width: int, *,
                       anchors: np.ndarray, feat_stride: int = 16, pre_nms_top_n: int = 6000,
                       post_nms_top_n: int = 300, nms_iou: float = 0.7, min_size: float = 2.0) -> np.ndarray:
    """``fcis/operator_py/proposal.py`` ``ProposalOperator.forward`` for one image.

    Args:
        fg_probs (A, H, W) float32: the foreground probabilities (the op's ``scores[:, A:]``);
        deltas (4A, H, W) float32: ``rpn_bbox_pred`` (per anchor dx, dy, dw, dh);
        im_height, im_width: the network input's size (``im_info[:2]``); anchors (A, 4) float64
        (:func:`generate_anchors`).

    Returns:
        (R, 4) float32 inclusive boxes, R = ``post_nms_top_n`` (padded, :func:`pad_rows`) or 0.
    """
    a = fg_probs.shape[0]
    h, w = int(np.float32(im_height) / feat_stride), int(np.float32(im_width) / feat_stride)
    fg = fg_probs[:, :h, :w]                                      # _clip_pad
    dl = deltas[:, :h, :w]
    h, w = fg.shape[1], fg.shape[2]
    sx, sy = np.meshgrid(np.arange(w) * feat_stride, np.arange(h) * feat_stride)
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1)
    all_anchors = (anchors.reshape(1, a, 4) + shifts.reshape(-1, 1, 4)).reshape(-1, 4)
    dl = dl.reshape(a, 4, h, w).transpose(2, 3, 0, 1).reshape(-1, 4)
    scores = fg.transpose(1, 2, 0).reshape(-1)
    boxes = clip_boxes(bbox_pred(all_anchors, dl), int(im_height), int(im_width))
    keep = filter_boxes(boxes, min_size)
    boxes, scores = boxes[keep], scores[keep]
    order = descending_order(scores)[:pre_nms_top_n]
    dets = np.hstack([boxes[order], scores[order, None]]).astype(np.float32)
    kept = official_nms(dets, nms_iou, max_keep=post_nms_top_n)[:post_nms_top_n]
    return dets[kept[pad_rows(len(kept), post_nms_top_n)], :4]


def box_parser(rois: np.ndarray, deltas: np.ndarray, stds: tuple[float, ...], means: tuple[float, ...],
               im_height: int, im_width: int) -> np.ndarray:
    """``fcis/operator_py/box_parser.py`` (class-agnostic, clipping): (R, 4) float32 RoIs and their
    (R, 4) float32 foreground deltas -> (R, 4) float32 refined boxes. ``delta · std + mean`` stays
    float32 (NumPy 1.x: a float32 array times a float64 scalar is float32), the decode is
    :func:`bbox_pred` (float64, ``exp`` in float32), then clipped to the input and cast."""
    d = np.asarray(deltas, dtype=np.float32)
    v = np.stack([d[:, i] * np.float32(stds[i]) + np.float32(means[i]) for i in range(4)], axis=1)
    return clip_boxes(bbox_pred(np.asarray(rois, dtype=np.float32), v), int(im_height), int(im_width)
                      ).astype(np.float32)


# --- mask voting -----------------------------------------------------------------------------------

@dataclass
class OfficialDetection:
    """One detection of :func:`official_detections`: ``label`` in 1..C, ``score``, the voted
    mask's tight ``box`` (x1, y1, x2, y2 inclusive pixels of the voting canvas) and ``mask``
    (P, P) float32, the voted mask over that box (binarise at 0.4)."""

    label: int
    score: float
    box: np.ndarray
    mask: np.ndarray


def official_detections(rois: np.ndarray, class_probs: np.ndarray, masks: np.ndarray, scale: float,
                        resized_size: tuple[int, int], *, min_drop_size: float = 2.0, nms_iou: float = 0.3,
                        max_per_image: int = 100, voting_iou: float = 0.5, binary_thresh: float = 0.4,
                        min_score: float = 1e-3) -> tuple[list[OfficialDetection], tuple[int, int]]:
    """``im_detect`` (TEST.ITER 2) + ``pred_eval``'s mask merge with ``cpu_mask_voting``.

    Args:
        rois (M, 4) float32: both passes' boxes in the resized image's pixels (the network's
            ``rois`` output, batch column dropped); class_probs (M, C+1) float32; masks (M, P, P)
            float32: each RoI's foreground probability for its top class (``seg_pred[:, 1]``).
        scale: the input scale (``im_info[2]``); resized_size: (h, w) of the network input.
        min_drop_size: TEST.MIN_DROP_SIZE (2 COCO, 16 VOC); nms_iou: TEST.NMS; max_per_image:
            100; voting_iou: TEST.MASK_MERGE_THRESH; binary_thresh: BINARY_THRESH; min_score: the
            1e-3 floor of the score threshold.

    Returns:
        (detections ordered by class, then as NMS kept them; the voting canvas (height, width) =
        ``round(h / scale)``, ``round(w / scale)``).
    """
    num_classes = class_probs.shape[1]
    keep = filter_boxes(rois.astype(np.float32), min_drop_size)
    scale32 = np.float32(scale)
    boxes = rois[keep].astype(np.float32) / scale32
    scores = class_probs[keep].astype(np.float32)
    cand_masks = masks[keep].astype(np.float32)
    height = int(np.round(float(resized_size[0]) / float(scale32)))
    width = int(np.round(float(resized_size[1]) / float(scale32)))
    boxes = clip_boxes(boxes, height, width)
    if len(boxes) == 0:
        return [], (height, width)
    kept_boxes: list[np.ndarray] = [np.zeros((0, 4), np.float32)] * num_classes
    kept_scores: list[np.ndarray] = [np.zeros(0, np.float32)] * num_classes
    all_scores = []
    for c in range(1, num_classes):
        dets = np.hstack((boxes, scores[:, c:c + 1]))
        inds = official_nms(dets, nms_iou)[:max_per_image]
        kept_boxes[c], kept_scores[c] = boxes[inds], scores[inds, c]
        all_scores.extend(scores[inds, c])
    ranked = np.sort(np.asarray(all_scores, dtype=np.float32))[::-1]
    thresh = max(ranked[min(len(ranked), max_per_image) - 1], min_score) if len(ranked) else np.inf
    rounded = np.round(boxes).astype(np.int64)
    pasted: dict[int, np.ndarray] = {}        # candidate -> its mask cv2-resized into its rounded box

    def candidate_mask(j: int) -> np.ndarray:
        if j not in pasted:
            x1, y1, x2, y2 = rounded[j]
            pasted[j] = cv2_resize_f32(cand_masks[j], int(x2 - x1 + 1), int(y2 - y1 + 1))
        return pasted[j]

    out = []
    for c in range(1, num_classes):
        sel = kept_scores[c] >= thresh
        for box, score in zip(kept_boxes[c][sel], kept_scores[c][sel]):
            members = np.nonzero(_overlaps(boxes, box) >= voting_iou)[0]
            weights = scores[members, c]
            total = np.float32(0)
            for v in weights:                  # Python's sum over float32 scalars, in order
                total = np.float32(total + v)
            weights = weights / total
            tight, voted = _aggregate(rounded[members], [candidate_mask(int(j)) for j in members], weights,
                                      height, width, binary_thresh)
            mask = cv2_resize_f32(voted.astype(np.float32), masks.shape[-1], masks.shape[-2])
            out.append(OfficialDetection(c, float(score), tight, mask))
    return out, (height, width)


def _aggregate(boxes: np.ndarray, masks: list[np.ndarray], weights: np.ndarray, height: int, width: int,
               binary_thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """``mask_aggregation``: the weighted sum (float64) of the binarised candidate masks in their
    rounded boxes, its tight box at ``binary_thresh`` and the sum cropped to that box. Summed in
    the smallest window holding the boxes (the same values: the canvas is zero elsewhere)."""
    x0, y0 = int(boxes[:, 0].min()), int(boxes[:, 1].min())
    x1, y1 = int(boxes[:, 2].max()) + 1, int(boxes[:, 3].max()) + 1
    canvas = np.zeros((y1 - y0, x1 - x0))
    for (bx1, by1, bx2, by2), mask, weight in zip(boxes, masks, weights):
        binary = (mask >= np.float32(binary_thresh)).astype(np.float64)
        canvas[by1 - y0:by2 + 1 - y0, bx1 - x0:bx2 + 1 - x0] += binary * weight
    rows, cols = np.nonzero(canvas >= binary_thresh)
    if len(rows) == 0:
        # the official fallback: one pixel at the canvas's centre (np.ceil(height / 2) as the
        # official code runs under Python 3, where / is true division)
        cy, cx = int(math.ceil(height / 2)), int(math.ceil(width / 2))
        box = np.array((cx, cy, cx, cy), dtype=np.float32)
        inside = y0 <= cy < y1 and x0 <= cx < x1
        crop = canvas[cy - y0:cy - y0 + 1, cx - x0:cx - x0 + 1] if inside else np.zeros((1, 1))
        return box, crop
    ry0, ry1, rx0, rx1 = rows.min(), rows.max(), cols.min(), cols.max()
    box = np.array((rx0 + x0, ry0 + y0, rx1 + x0, ry1 + y0), dtype=np.float32)
    return box, canvas[ry0:ry1 + 1, rx0:rx1 + 1]


def paste_official_mask(mask: np.ndarray, box: np.ndarray, height: int, width: int
                        ) -> tuple[np.ndarray, int, int]:
    """``mask_voc2coco`` of one detection: its box clipped to the image (``clip_boxes`` with the
    image's size) and rounded, the (P, P) mask ``cv2.resize``-d into it. Returns ``(window (h', w')
    float32, x1, y1)``: the values over pixels ``[y1, y1 + h') × [x1, x1 + w')`` (zero elsewhere;
    the instance is ``window >= 0.4``)."""
    clipped = clip_boxes(np.asarray(box, dtype=np.float64)[None, :4], height, width)[0]
    x1, y1, x2, y2 = (int(v) for v in np.round(clipped))
    window = cv2_resize_f32(mask, x2 - x1 + 1, y2 - y1 + 1)
    return window, x1, y1


def official_mask_window(det: OfficialDetection, height: int, width: int) -> tuple[np.ndarray, int, int]:
    """:func:`paste_official_mask` of a detection."""
    return paste_official_mask(det.mask, det.box, height, width)
