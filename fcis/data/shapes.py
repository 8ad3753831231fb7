"""Synthetic "shapes" instance segmentation dataset in COCO format (for tests and smoke training)."""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

CLASS_NAMES = ("circle", "square", "triangle")  # category ids 1, 2, 3
_MIN_VISIBLE_PX = 40
_MIN_VISIBLE_FRACTION = 0.3


@lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random colour field plus faint stripes, ``float32[H, W, 3]`` in ~[0, 255]."""
    gh, gw = (int(v) for v in rng.integers(2, 6, size=2))
    grid = rng.integers(0, 256, size=(gh, gw, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    theta, period, amp = rng.uniform(0, math.pi), rng.uniform(6, 30), rng.uniform(5, 20)
    yy, xx = _grid(h, w)
    stripes = amp * np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * (2 * math.pi / period))
    return base + stripes[:, :, None]


def _shape_mask(rng: np.random.Generator, cls: int, h: int, w: int, smin: float, smax: float) -> np.ndarray:
    """Boolean ``[H, W]`` mask of one circle (0), rotated square (1) or rotated triangle (2)."""
    size = rng.uniform(smin, smax)
    cx, cy = rng.uniform(size / 2, w - size / 2), rng.uniform(size / 2, h - size / 2)
    angle = rng.uniform(0, 2 * math.pi)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if cls == 0:
        r = size / 2
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        k, r = (4, size / math.sqrt(2)) if cls == 1 else (3, 0.6 * size)
        pts = [(cx + r * math.cos(angle + 2 * math.pi * j / k), cy + r * math.sin(angle + 2 * math.pi * j / k))
               for j in range(k)]
        draw.polygon(pts, fill=1)
    return np.asarray(canvas, dtype=bool)


def _colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour that differs from the mean background ``under`` the object."""
    mean = under.reshape(-1, 3).mean(0)
    for _ in range(20):
        c = rng.integers(0, 256, size=3).astype(np.float32)
        if np.abs(c - mean).sum() > 120:
            break
    return c


def _render(rng: np.random.Generator, n_obj: int, h: int, w: int, smin: float, smax: float
            ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image ``uint8[H, W, 3]`` and its visible instances ``[(class index, bool[H, W])]``,
    objects ``smin`` to ``smax`` px."""
    img = _background(rng, h, w)
    objs: list[tuple[int, np.ndarray, int]] = []  # class, visible mask, full area
    for _ in range(n_obj):
        cls = int(rng.integers(0, 3))
        m = _shape_mask(rng, cls, h, w, smin, smax)
        img[m] = _colour(rng, img[m])
        for _, earlier, _ in objs:
            earlier &= ~m
        objs.append((cls, m, int(m.sum())))
    img += rng.normal(0.0, 5.0, size=(h, w, 1)).astype(np.float32)
    kept = [(c, m) for c, m, full in objs
            if full > 0 and m.sum() >= max(_MIN_VISIBLE_PX, _MIN_VISIBLE_FRACTION * full)]
    return np.clip(img, 0, 255).astype(np.uint8), kept


def make_shapes(
    out_dir: str | os.PathLike,
    *,
    num_images: int,
    seed: int,
    image_size: tuple[int, int] = (256, 320),
    max_objects: int = 4,
    val_fraction: float = 0.2,
    min_object_size: int = 24,
    max_object_fraction: float = 0.45,
) -> dict[str, Path]:
    """Write a synthetic COCO instance segmentation dataset and return its paths.

    Writes ``out_dir/images/NNNNN.png`` (RGB, ``image_size`` = (H, W)), ``out_dir/train.json`` and
    ``out_dir/val.json`` (split by image, ``val_fraction`` of the images in val, at least one when
    ``val_fraction > 0`` and ``num_images >= 2``). Classes: circle, square, triangle (category ids
    1, 2, 3). Each image has a textured random background and 1..``max_objects`` objects of ``min_object_size``
    px (default 24) to ``max_object_fraction`` of the short side (default 45%), random colours and rotations; ``num_images // 20`` images have none.
    Later objects occlude earlier ones (earlier masks are updated); an instance whose visible part is
    below 30% of its own area or 40 px is dropped. Masks are compressed RLE, ``bbox`` is the tight box
    of the visible mask, ``area`` its pixel count, ``iscrowd`` 0. Deterministic for a given ``seed``:
    image ``i`` depends only on ``(seed, i)``.

    Returns ``{"train": train.json, "val": val.json, "images": images folder}``.
    """
    h, w = (int(v) for v in image_size)
    if num_images < 1 or max_objects < 0 or not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"need num_images >= 1, max_objects >= 0, 0 <= val_fraction <= 1; got "
                         f"{num_images}, {max_objects}, {val_fraction}")
    smin, smax = float(min_object_size), max_object_fraction * min(h, w)
    if min_object_size < 8 or not 0 < max_object_fraction <= 1:
        raise ValueError(f"need min_object_size >= 8 and 0 < max_object_fraction <= 1; got "
                         f"{min_object_size}, {max_object_fraction}")
    if smax < smin:
        raise ValueError(f"image_size {image_size} too small for objects of {min_object_size} px to "
                         f"{max_object_fraction:.0%} of the short side")
    out = Path(out_dir)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    empty = set(rng.choice(num_images, size=num_images // 20, replace=False).tolist())
    order = rng.permutation(num_images)
    n_val = int(round(num_images * val_fraction))
    if val_fraction > 0 and num_images >= 2:
        n_val = min(max(n_val, 1), num_images - 1)
    val_set = set(order[:n_val].tolist())

    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)]
    splits: dict[str, dict[str, Any]] = {name: {"images": [], "annotations": [], "categories": categories} for name in ("train", "val")}
    ann_id = 0
    for i in range(num_images):
        img_rng = np.random.default_rng([seed, i])
        n_obj = 0 if i in empty or max_objects == 0 else int(img_rng.integers(1, max_objects + 1))
        pixels, instances = _render(img_rng, n_obj, h, w, smin, smax)
        file_name = f"{i:05d}.png"
        Image.fromarray(pixels).save(img_dir / file_name, compress_level=1)
        split = splits["val" if i in val_set else "train"]
        split["images"].append({"id": i + 1, "file_name": f"images/{file_name}", "height": h, "width": w})
        for cls, m in instances:
            ann_id += 1
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            split["annotations"].append({
                "id": ann_id, "image_id": i + 1, "category_id": cls + 1, "iscrowd": 0,
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                "area": int(m.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            })
    paths = {"train": out / "train.json", "val": out / "val.json", "images": img_dir}
    for name in ("train", "val"):
        splits[name]["info"] = {"description": f"fcis synthetic shapes, seed {seed}, split {name}"}
        paths[name].write_text(json.dumps(splits[name]))
    return paths
