"""ps_roi_assemble against a float64 loop reference, against torchvision, and gradcheck, on both
its paths (the fast gather and grid_sample), and the two paths against each other."""

import importlib
import math

import pytest
import torch
from torchvision.ops import ps_roi_align, roi_align

from fcis.ops import PSRoIAssemble, ps_roi_assemble, ps_roi_assemble_rows, ps_roi_assemble_rows_chunks, rows_to_maps

assemble_module = importlib.import_module("fcis.ops.ps_roi_assemble")  # the module, not the function


@pytest.fixture(params=["gather", "grid_sample"])
def path(request, monkeypatch):
    """Run a test on the fast gather path (the default for float32/float64 maps of >= 8 groups in
    eager mode; forced here for the tests' few groups) and on the grid_sample path (the one ONNX
    export, fp16/bf16 and fewer groups take)."""
    monkeypatch.setattr(assemble_module, "_gather_path_applies", lambda *args: request.param == "gather")
    return request.param


def _bilinear(fmap, y, x):
    """One RoIAlign sample, as torchvision's CPU kernel computes it (float64 scalars)."""
    h, w = fmap.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_high = y_low = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_high = x_low = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * fmap[y_low, x_low] + hy * lx * fmap[y_low, x_high]
            + ly * hx * fmap[y_high, x_low] + ly * lx * fmap[y_high, x_high])


def reference_ps_roi_assemble(input, rois, k, p, scale, sampling_ratio):
    """Plain loops over RoIs, groups and cells: the contract written out."""
    x = input.double().tolist()
    num, groups = rois.shape[0], input.shape[1] // (k * k)
    out = torch.zeros(num, groups, p, p, dtype=torch.float64)
    for r in range(num):
        b, x1, y1, x2, y2 = rois[r].double().tolist()
        start_w, start_h = x1 * scale - 0.5, y1 * scale - 0.5
        roi_w, roi_h = x2 * scale - 0.5 - start_w, y2 * scale - 0.5 - start_h
        bin_h, bin_w = roi_h / p, roi_w / p
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / p)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / p)
        count = max(gh * gw, 1)
        for g in range(groups):
            for i in range(p):
                for j in range(p):
                    ch = g * k * k + (i * k // p) * k + (j * k // p)
                    fmap = torch.tensor(x[int(b)][ch], dtype=torch.float64)
                    acc = 0.0
                    for iy in range(gh):
                        yy = start_h + i * bin_h + (iy + 0.5) * bin_h / gh
                        for ix in range(gw):
                            xx = start_w + j * bin_w + (ix + 0.5) * bin_w / gw
                            acc += float(_bilinear(fmap, yy, xx))
                    out[r, g, i, j] = acc / count
    return out


def _random_rois(n_img, num, h, w, scale, gen):
    """Boxes of many sizes, including ones that leave the map and degenerate ones."""
    img_h, img_w = h / scale, w / scale
    cx = torch.rand(num, generator=gen) * img_w * 1.2 - 0.1 * img_w
    cy = torch.rand(num, generator=gen) * img_h * 1.2 - 0.1 * img_h
    bw = torch.rand(num, generator=gen) * img_w * 0.9 + 1.0
    bh = torch.rand(num, generator=gen) * img_h * 0.9 + 1.0
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    boxes[0] = torch.tensor([3.0, 4.0, 3.0, 9.0])          # zero width
    batch = torch.randint(0, n_img, (num, 1), generator=gen).double()
    return torch.cat([batch, boxes.double()], 1)


def _gather_cells(full, k, p, groups):
    """From per-channel RoIAlign output (K, C, P, P), pick the channel each cell reads."""
    out = torch.empty(full.shape[0], groups, p, p, dtype=full.dtype)
    for g in range(groups):
        for i in range(p):
            for j in range(p):
                out[:, g, i, j] = full[:, g * k * k + (i * k // p) * k + (j * k // p), i, j]
    return out


@pytest.mark.parametrize("k,p,sampling_ratio", [(3, 9, -1), (3, 7, 2), (2, 5, -1), (1, 4, 1)])
def test_matches_loop_reference_float64(k, p, sampling_ratio, path):
    gen = torch.Generator().manual_seed(k * 100 + p)
    groups, h, w, scale = 2, 9, 11, 0.5
    x = torch.randn(2, groups * k * k, h, w, generator=gen, dtype=torch.float64)
    rois = _random_rois(2, 6, h, w, scale, gen)
    got = ps_roi_assemble(x, rois, k, p, scale, sampling_ratio)
    want = reference_ps_roi_assemble(x, rois, k, p, scale, sampling_ratio)
    assert got.shape == (6, groups, p, p) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_matches_torchvision_roi_align_per_group_float64(sampling_ratio, path):
    """FCIS's shape (k=7, P=21) against roi_align, channel by channel, to 1e-6."""
    gen = torch.Generator().manual_seed(0)
    k, p, groups, h, w, scale = 7, 21, 3, 19, 25, 1 / 16
    x = torch.randn(2, groups * k * k, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(2, 12, h, w, scale, gen)
    got = ps_roi_assemble(x, rois, k, p, scale, sampling_ratio)
    full = roi_align(x, rois, p, scale, sampling_ratio, aligned=True)
    want = _gather_cells(full, k, p, groups)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)

    weights = torch.randn(got.shape, generator=gen, dtype=torch.float64)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), x)
    (grad_want,) = torch.autograd.grad((want * weights).sum(), x)
    torch.testing.assert_close(grad_got, grad_want, rtol=0, atol=1e-6)


def test_equals_ps_roi_align_when_p_equals_k(path):
    """P == k is exactly torchvision's ps_roi_align (same half-pixel offset, same sampling)."""
    gen = torch.Generator().manual_seed(1)
    k, groups = 3, 4
    x = torch.randn(1, groups * k * k, 12, 12, generator=gen, dtype=torch.float64)
    boxes = [torch.tensor([[1.0, 2.0, 9.0, 11.0], [0.0, 0.0, 12.0, 12.0]], dtype=torch.float64)]
    got = ps_roi_assemble(x, boxes, k, k, 1.0, 2)
    want = ps_roi_align(x, boxes, k, 1.0, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_float32_matches_float64(path):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2 * 49, 20, 30, generator=gen, dtype=torch.float64)
    rois = _random_rois(1, 20, 20, 30, 1 / 8, gen)
    got32 = ps_roi_assemble(x.float(), rois.float(), 7, 21, 1 / 8)
    got64 = ps_roi_assemble(x, rois, 7, 21, 1 / 8)
    assert got32.dtype == torch.float32
    # float32 error: grid_sample's normalised coordinates (~1e-7 relative, times W), or the gather
    # path's float32 weights.
    torch.testing.assert_close(got32.double(), got64, rtol=0, atol=1e-4)


def test_gradcheck(path):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2 * 4, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 1.0, 5.0, 4.5], [1, 2.0, 0.0, 7.0, 6.0], [0, -1.0, -1.0, 3.0, 2.0]],
                        dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ps_roi_assemble(t, rois, 2, 4, 1.0, -1), (x,))
    assert torch.autograd.gradcheck(lambda t: ps_roi_assemble(t, rois, 2, 5, 1.0, 2), (x,))


def test_list_of_boxes_and_module():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 9, 8, 8, generator=gen)
    b0 = torch.tensor([[0.0, 0.0, 6.0, 6.0]])
    b1 = torch.tensor([[1.0, 1.0, 7.0, 5.0], [2.0, 2.0, 3.0, 3.0]])
    as_list = PSRoIAssemble(3, 6)(x, [b0, b1])
    rois = torch.tensor([[0, 0.0, 0.0, 6.0, 6.0], [1, 1.0, 1.0, 7.0, 5.0], [1, 2.0, 2.0, 3.0, 3.0]])
    torch.testing.assert_close(as_list, ps_roi_assemble(x, rois, 3, 6))
    assert "group_size=3" in repr(PSRoIAssemble(3, 6))


def test_no_rois_and_bad_input(path):
    x = torch.randn(1, 18, 5, 5, requires_grad=True)
    out = ps_roi_assemble(x, torch.zeros(0, 5), 3, 6)
    assert out.shape == (0, 2, 6, 6)
    out.sum().backward()                                     # an empty batch still back-propagates
    assert x.grad is not None and float(x.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="multiple of group_size"):
        ps_roi_assemble(torch.randn(1, 10, 5, 5), torch.zeros(0, 5), 3, 6)
    with pytest.raises(ValueError, match="Tensor\\[K, 5\\]"):
        ps_roi_assemble(x, torch.zeros(3, 4), 3, 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(path):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3 * 49, 19, 25, generator=gen, dtype=torch.float64)
    rois = _random_rois(2, 30, 19, 25, 1 / 16, gen)
    cpu = ps_roi_assemble(x, rois, 7, 21, 1 / 16, -1)
    gpu = ps_roi_assemble(x.cuda(), rois.cuda(), 7, 21, 1 / 16, -1)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_gather_and_grid_sample_paths_agree_at_fcis_shape(monkeypatch, dtype, atol):
    """Random maps at FCIS's shape (k = 7, P = 21, 162 groups = 2 × 81 classes), two images and
    RoIs of every size: the fast path and the grid_sample path agree in values and gradients."""
    gen = torch.Generator().manual_seed(6)
    k, p, groups, h, w, scale = 7, 21, 162, 10, 13, 1 / 16
    x = torch.randn(2, groups * k * k, h, w, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    rois = _random_rois(2, 16, h, w, scale, gen).to(dtype)
    weights = torch.randn(16, groups, p, p, generator=gen, dtype=torch.float64).to(dtype)
    for sampling_ratio in (2, -1):
        fast = ps_roi_assemble(x, rois, k, p, scale, sampling_ratio)
        (grad_fast,) = torch.autograd.grad((fast * weights).sum(), x)
        with monkeypatch.context() as m:
            m.setattr(assemble_module, "_gather_path_applies", lambda *args: False)
            ref = ps_roi_assemble(x, rois, k, p, scale, sampling_ratio)
        (grad_ref,) = torch.autograd.grad((ref * weights).sum(), x)
        assert fast.shape == ref.shape == (16, groups, p, p) and fast.dtype == dtype
        torch.testing.assert_close(fast, ref, rtol=0, atol=atol)
        torch.testing.assert_close(grad_fast, grad_ref, rtol=0, atol=atol * 10)


def test_channels_last_maps_give_the_same_values_and_channels_last_gradients(monkeypatch):
    monkeypatch.setattr(assemble_module, "_gather_path_applies", lambda *args: True)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3 * 49, 9, 12, generator=gen, dtype=torch.float64)
    rois = _random_rois(2, 10, 9, 12, 1 / 16, gen)
    weights = torch.randn(10, 3, 21, 21, generator=gen, dtype=torch.float64)
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        xf = x.contiguous(memory_format=fmt).requires_grad_()
        out = ps_roi_assemble(xf, rois, 7, 21, 1 / 16, 2)
        (grad,) = torch.autograd.grad((out * weights).sum(), xf)
        assert grad.is_contiguous(memory_format=fmt)
        grads.append((out, grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=1e-12)


def test_path_choice():
    maps = torch.zeros(1, 162 * 49, 4, 4)
    assert assemble_module._gather_path_applies(maps, 162)
    assert not assemble_module._gather_path_applies(maps.half(), 162)         # fp16/bf16: grid_sample
    assert not assemble_module._gather_path_applies(torch.zeros(1, 49, 4, 4), 1)   # InstanceFCN's 1 group


def test_rows_layout_equals_the_maps_in_values_and_gradients(path):
    """ps_roi_assemble_rows reads the (N, H, W, k², G) table the head writes: the same values and
    gradients as ps_roi_assemble of the equivalent (N, G·k², H, W) maps, at FCIS's k and P (both
    paths: the rows are copied back to maps where the gather does not apply); gradcheck on rows."""
    gen = torch.Generator().manual_seed(8)
    k, p, groups, h, w, scale = 7, 21, 10, 9, 12, 1 / 16
    maps = torch.randn(2, groups * k * k, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    rows = maps.detach().view(2, groups, k * k, h, w).permute(0, 3, 4, 2, 1).contiguous().requires_grad_()
    assert torch.equal(rows_to_maps(rows), maps)
    rois = _random_rois(2, 12, h, w, scale, gen)
    weights = torch.randn(12, groups, p, p, generator=gen, dtype=torch.float64)
    for sampling_ratio in (2, -1):
        want = ps_roi_assemble(maps, rois, k, p, scale, sampling_ratio)
        got = ps_roi_assemble_rows(rows, rois, k, p, scale, sampling_ratio)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        (g_maps,) = torch.autograd.grad((want * weights).sum(), maps)
        (g_rows,) = torch.autograd.grad((got * weights).sum(), rows)
        assert g_rows.shape == rows.shape
        torch.testing.assert_close(rows_to_maps(g_rows), g_maps, rtol=0, atol=1e-12)
    small = torch.randn(2, 3, 4, 4, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[0, 0.5, 1.0, 3.0, 2.5], [1, 2.0, 0.0, 4.0, 3.0], [0, -1.0, -1.0, 3.0, 2.0]],
                         dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ps_roi_assemble_rows(t, boxes, 2, 5, 1.0, 2), (small,))
    assert ps_roi_assemble_rows(small, boxes[:0], 2, 5).shape == (0, 8, 5, 5)


@pytest.mark.parametrize("groups", [10, 4])          # 4 groups: the grid_sample path, chunk by chunk
def test_rows_in_chunks_equal_the_whole(groups):
    """Inference's chunked assembling gives ps_roi_assemble_rows' values exactly, chunk by chunk
    (chunk sizes that do and do not divide the RoI count, two images), detached from autograd."""
    gen = torch.Generator().manual_seed(9)
    k, p, h, w, scale = 7, 21, 9, 12, 1 / 16
    rows = torch.randn(2, h, w, k * k, groups, generator=gen, requires_grad=True)
    rois = _random_rois(2, 23, h, w, scale, gen).float()
    for sampling_ratio in (2, -1):
        want = ps_roi_assemble_rows(rows, rois, k, p, scale, sampling_ratio)
        for chunk in (1, 5, 23, 64):
            parts = list(ps_roi_assemble_rows_chunks(rows, rois, k, p, scale, sampling_ratio, chunk=chunk))
            assert [start for start, _ in parts] == list(range(0, 23, chunk))
            assert all(not part.requires_grad for _, part in parts)
            torch.testing.assert_close(torch.cat([part for _, part in parts]), want.detach(), rtol=0, atol=0)
    assert list(ps_roi_assemble_rows_chunks(rows, rois[:0], k, p, scale)) == []
