"""The oracle's NumPy ChannelOperator (tools/official/official_runtime.py, standing in for the official
compiled operator) against float64 loops written from the CUDA kernels of fcis/operator_cxx/channel_operator.cu
(GroupMaxForwardKernel, GroupPickForwardKernel, GetMaxIdxKernel) and mshadow's Softmax on the
(N * group, C / group, H * W) view. No MXNet needed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tools.official.official_runtime import group_max, group_pick, group_softmax, score_pick_index


def _loop_group_max(data, group):
    n, c, h, w = data.shape
    cig = c // group
    out = np.zeros((n, group, h, w))
    for i in range(n):
        for g in range(group):
            for s in range(h * w):
                y, x = divmod(s, w)
                best = -math.inf
                for k in range(cig):
                    v = float(data[i, g * cig + k, y, x])
                    if v > best:
                        best = v
                out[i, g, y, x] = best
    return out


def _loop_group_softmax(data, group):
    n, c, h, w = data.shape
    cig = c // group
    out = np.zeros(data.shape)
    for i in range(n):
        for g in range(group):
            for y in range(h):
                for x in range(w):
                    vals = [float(data[i, g * cig + k, y, x]) for k in range(cig)]
                    m = max(vals)
                    e = [math.exp(v - m) for v in vals]
                    for k in range(cig):
                        out[i, g * cig + k, y, x] = e[k] / sum(e)
    return out


def _loop_max_idx(scores, group):
    out = []
    for row in scores.reshape(-1, group):
        best, idx = -math.inf, -1
        for k in range(1, group):
            if row[k] > best:
                best, idx = float(row[k]), k
        out.append(idx)
    return np.array(out)


def _loop_group_pick(data, idx, group):
    n, c, h, w = data.shape
    cig = c // group
    out = np.zeros((n, cig, h, w))
    for i in range(n):
        g = int(idx[i])
        for k in range(cig):
            for y in range(h):
                for x in range(w):
                    out[i, k, y, x] = data[i, g * cig + k, y, x] if 0 <= g < group else 0.0
    return out


@pytest.mark.parametrize("n", [0, 1, 4])
def test_channel_operator_matches_the_cuda_kernels(n):
    rng = np.random.default_rng(n)
    group, cig, h, w = 5, 2, 3, 4
    data = rng.normal(0, 3, (n, group * cig, h, w)).astype(np.float32)
    data[:, 3, 0, 0] = data[:, 2, 0, 0]  # a tie
    np.testing.assert_array_equal(group_max(data, group), _loop_group_max(data, group))
    soft = group_softmax(data, group)
    assert soft.dtype == np.float32 and soft.shape == data.shape
    np.testing.assert_allclose(soft, _loop_group_softmax(data, group), rtol=1e-6, atol=1e-7)

    scores = rng.random((n, group, 1, 1)).astype(np.float32)
    if n:
        scores[0, 0] = 10.0  # background is never picked
        scores[-1, 2] = scores[-1, 4] = 5.0  # first maximum wins
    idx = score_pick_index(scores, group)
    np.testing.assert_array_equal(idx, _loop_max_idx(scores, group))
    if n:
        assert idx[0] != 0 and idx[-1] == 2
    np.testing.assert_array_equal(group_pick(soft, idx, group), _loop_group_pick(soft, idx, group))

    labels = np.array([0, 4, -1, 7][:n], dtype=np.float32)  # Label_Pick: out of range -> zeros
    np.testing.assert_array_equal(group_pick(data, labels, group), _loop_group_pick(data, labels, group))
