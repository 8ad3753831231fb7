"""Write the small reference fixtures of the official-variant tests (tests/fixtures/variant/), with
the libraries the official code runs on; run in an environment that has them (not fcis's), e.g.

    /work/venvs/mxnet-oracle/bin/python tools/variant/make_fixtures.py tests/fixtures/variant

- ``cv2_resize.npz``: OpenCV's ``cv2.resize`` (INTER_LINEAR) of random 8-bit images at random
  scales (``fx = fy``, what ``lib/utils/image.py`` calls, incl. the exact 1/2 that OpenCV runs as
  INTER_AREA) and of random float32 masks to random sizes (``cpu_mask_voting``, ``mask_voc2coco``);
- ``psroi_mxnet.npz``: MXNet's ``contrib.PSROIPooling`` (CPU, float32) of random maps over RoIs
  drawn to fall on bin boundaries, which the float32 bin geometry decides.

Nothing of the official code is used: only OpenCV and MXNet, the libraries it calls.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def cv2_cases(rng: np.random.Generator) -> dict[str, np.ndarray]:
    import cv2

    out: dict[str, np.ndarray] = {"cv2_version": np.array(cv2.__version__)}
    k = 0
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 32, 2))
        scale = float(rng.choice([rng.uniform(0.3, 3.0), 600 / min(h, w) / 20, 0.5, 1.0, 2.0, 1.37]))
        if round(h * scale) < 1 or round(w * scale) < 1:
            continue
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out[f"u8_{k}_in"] = img
        out[f"u8_{k}_scale"] = np.array(scale)
        out[f"u8_{k}_out"] = cv2.resize(img, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        k += 1
    for j in range(40):
        src = (int(rng.integers(1, 45)), int(rng.integers(1, 45))) if j % 2 else (21, 21)
        size = (21, 21) if j % 2 else (int(rng.integers(1, 45)), int(rng.integers(1, 45)))
        m = rng.random(src).astype(np.float32)
        out[f"f32_{j}_in"] = m
        out[f"f32_{j}_out"] = cv2.resize(m, size)          # size = (width, height)
    return out


def psroi_cases(rng: np.random.Generator) -> dict[str, np.ndarray]:
    import mxnet as mx

    k, p, groups, h, w = 7, 21, 1, 30, 40
    # small integers: every bin's sum is exact in float32, so a bin that takes other cells shows
    maps = rng.integers(-8, 9, (1, groups * k * k, h, w)).astype(np.float32)
    rois = []
    for _ in range(150):
        # corners on integer pixels whose 16ths make bins end on (or next to) integer cells
        x1, y1 = (float(v) for v in rng.integers(-20, 400, 2))
        bw, bh = (float(v) * 16 / 21 * rng.choice([1, 3, 7, 21]) for v in rng.integers(1, 30, 2))
        rois.append([0, x1 + rng.choice([0.0, 0.5, 0.49, -0.5]), y1, x1 + bw - 1, y1 + bh - 1])
    rois_a = np.asarray(rois, dtype=np.float32)
    out = mx.contrib.nd.PSROIPooling(mx.nd.array(maps), mx.nd.array(rois_a), spatial_scale=0.0625,
                                     output_dim=groups, pooled_size=p, group_size=k).asnumpy()
    return {"mxnet_version": np.array(mx.__version__), "maps": maps, "rois": rois_a, "pooled": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "cv2_resize.npz", **cv2_cases(np.random.default_rng(0)))
    np.savez_compressed(args.out / "psroi_mxnet.npz", **psroi_cases(np.random.default_rng(1)))


if __name__ == "__main__":
    main()
