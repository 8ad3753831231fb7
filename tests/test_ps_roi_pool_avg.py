"""ps_roi_assemble(mode="average"): the official PS-RoI pooling against a float64 loop
transcription of msracver/FCIS psroi_pooling.cu, plus gradcheck."""

import math

import pytest
import torch

from fcis.ops import PSRoIAssemble, ps_roi_assemble


def _c_round(v: float) -> float:
    return math.floor(v + 0.5) if v >= 0 else math.ceil(v - 0.5)


def reference(x: torch.Tensor, rois: torch.Tensor, k: int, ph: int, pw: int, scale: float) -> torch.Tensor:
    """Loop over every output element, as the CUDA kernel does (PSROIPoolForwardKernel)."""
    n, c, h, w = x.shape
    g = c // (k * k)
    out = torch.zeros(len(rois), g, ph, pw, dtype=torch.float64)
    for r, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sw, sh = _c_round(x1) * scale, _c_round(y1) * scale
        ew, eh = (_c_round(x2) + 1.0) * scale, (_c_round(y2) + 1.0) * scale
        rw, rh = max(ew - sw, 0.1), max(eh - sh, 0.1)
        bh, bw = rh / ph, rw / pw
        for ctop in range(g):
            for i in range(ph):
                for j in range(pw):
                    hs = min(max(math.floor(i * bh + sh), 0), h)
                    he = min(max(math.ceil((i + 1) * bh + sh), 0), h)
                    ws = min(max(math.floor(j * bw + sw), 0), w)
                    we = min(max(math.ceil((j + 1) * bw + sw), 0), w)
                    gw = min(max(math.floor(j * k / pw), 0), k - 1)
                    gh = min(max(math.floor(i * k / ph), 0), k - 1)
                    ch = (ctop * k + gh) * k + gw
                    if he <= hs or we <= ws:
                        continue
                    total = sum(float(x[int(b), ch, yy, xx]) for yy in range(hs, he) for xx in range(ws, we))
                    out[r, ctop, i, j] = total / ((he - hs) * (we - ws))
    return out


def _rois():
    # inside, tiny (forced 0.1 wide), crossing the border, outside, degenerate, second image
    return torch.tensor([[0, 3.2, 4.7, 40.1, 30.5], [0, 10.0, 10.0, 10.2, 10.4], [1, -20.0, -8.0, 25.0, 60.0],
                         [1, 200.0, 200.0, 260.0, 240.0], [0, 30.0, 20.0, 12.0, 5.0], [1, 0.0, 0.0, 63.0, 47.0]],
                        dtype=torch.float64)


@pytest.mark.parametrize("k,p", [(3, 3), (3, 7), (2, 5)])
def test_average_matches_official_loop(k, p):
    torch.manual_seed(0)
    x = torch.randn(2, 2 * k * k, 6, 8, dtype=torch.float64)
    rois = _rois()
    got = ps_roi_assemble(x, rois, k, p, spatial_scale=1 / 8, mode="average")
    assert got.shape == (len(rois), 2, p, p) and got.dtype == torch.float64
    torch.testing.assert_close(got, reference(x, rois, k, p, p, 1 / 8), rtol=1e-12, atol=1e-12)


def test_average_float32_list_boxes_and_module():
    torch.manual_seed(1)
    x = torch.randn(2, 2 * 9, 6, 8)
    rois = _rois()
    boxes = [rois[rois[:, 0] == i, 1:].float() for i in range(2)]
    got = PSRoIAssemble(3, 7, 1 / 8, mode="average")(x, boxes)
    order = torch.cat([torch.nonzero(rois[:, 0] == i).flatten() for i in range(2)])
    torch.testing.assert_close(got.double(), reference(x.double(), rois[order], 3, 7, 7, 1 / 8), rtol=1e-5, atol=1e-5)
    assert "mode='average'" in repr(PSRoIAssemble(3, 7, mode="average"))


def test_average_gradcheck_and_empty():
    torch.manual_seed(2)
    x = torch.randn(2, 2 * 4, 5, 6, dtype=torch.float64, requires_grad=True)
    rois = _rois()[[0, 2, 5]]
    assert torch.autograd.gradcheck(lambda t: ps_roi_assemble(t, rois, 2, 5, 1 / 8, mode="average"), (x,))
    empty = ps_roi_assemble(x, torch.zeros(0, 5, dtype=torch.float64), 2, 5, 1 / 8, mode="average")
    assert empty.shape == (0, 2, 5, 5)
    empty.sum().backward()
    assert x.grad is not None and not x.grad.any()


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        ps_roi_assemble(torch.zeros(1, 9, 4, 4), torch.zeros(1, 5), 3, 3, mode="nearest")
