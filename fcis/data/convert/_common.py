"""Helpers shared by the converters: image listing/sizes, annotation records, JSON writing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ...image_io import ImageReadError, displayed_size
from ..cocofile import polygon_area, polygon_meets_image
from ..errors import data_error

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def list_images(image_dir: str | os.PathLike) -> list[Path]:
    """Image files directly in ``image_dir``, sorted by name; DataError if there is none."""
    folder = Path(image_dir)
    if not folder.is_dir():
        raise data_error(folder, "image folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise data_error(folder, "no images found")
    return files


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file as displayed (EXIF orientation applied: annotations
    refer to the rotated picture), read from its header; DataError naming it on failure."""
    try:
        return displayed_size(path)
    except ImageReadError as e:
        raise data_error(path, e.reason) from None


def file_name_for(image_path: Path, out_json: Path) -> str:
    """``image_path`` relative to the folder of ``out_json`` (the default ``image_root``)."""
    rel = os.path.relpath(os.path.abspath(image_path), os.path.abspath(out_json.parent))
    return Path(rel).as_posix()


def image_record(image_id: int, file_name: str, width: int, height: int) -> dict:
    return {"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)}


def polygon_record(ann_id: int, image_id: int, cat_id: int, coords: list[float], width: int, height: int) -> dict:
    """COCO annotation for one polygon ``[x1, y1, x2, y2, ...]`` (clipped to the image).

    ``bbox`` is the polygon's extent, ``area`` the pixel area of the rasterised polygon. The caller
    must have checked there are at least 3 points and a non-zero area.
    """
    p = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    p[:, 0] = p[:, 0].clip(0, width)
    p[:, 1] = p[:, 1].clip(0, height)
    flat = [round(float(v), 2) for v in p.reshape(-1)]
    rle = mask_utils.merge(mask_utils.frPyObjects([flat], height, width))
    x0, y0 = p.min(0)
    x1, y1 = p.max(0)
    return {"id": ann_id, "image_id": image_id, "category_id": cat_id, "iscrowd": 0, "segmentation": [flat],
            "area": float(mask_utils.area(rle)), "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]}


def mask_record(ann_id: int, image_id: int, cat_id: int, mask: np.ndarray) -> dict:
    """COCO annotation for a boolean ``[H, W]`` mask, stored as compressed RLE."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"id": ann_id, "image_id": image_id, "category_id": cat_id, "iscrowd": 0,
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": int(mask.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)]}


def polygon_problem(coords: list[float], width: int | None = None, height: int | None = None) -> str | None:
    """Why a flat polygon cannot be used (in a ``width`` x ``height`` image, when given), or None."""
    if len(coords) % 2:
        return "polygon has an odd number of coordinates"
    if len(coords) < 6:
        return f"polygon has {len(coords) // 2} point(s), need at least 3"
    if polygon_area(coords) <= 0:
        return "polygon has no area"
    if width is not None and height is not None and not polygon_meets_image(coords, height, width):
        return f"polygon lies entirely outside the image ({width}x{height})"
    return None


def write_coco(out_json: str | os.PathLike, images: list, annotations: list, categories: list) -> Path:
    """Write a COCO instances JSON (creating its folder) and return its path."""
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"info": {"description": "converted by fcis.data.convert"}, "images": images,
            "annotations": annotations, "categories": categories}
    out.write_text(json.dumps(data))
    return out
