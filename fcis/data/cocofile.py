"""Reading and checking COCO instance JSON files (no image loading).

Structural problems (not JSON, missing keys, unknown ids) raise :class:`DataError`; per-annotation
problems are returned as reasons so that the caller decides whether to skip or raise.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .errors import data_error

_REQUIRED_KEYS = ("images", "annotations", "categories")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def read_json(path: str | os.PathLike) -> Any:
    """``json.load`` with every failure turned into a DataError naming ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise data_error(path, "file not found") from None
    except json.JSONDecodeError as e:
        raise data_error(path, f"invalid JSON ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise data_error(path, f"cannot read file ({e})") from None


def load_coco_json(path: str | os.PathLike) -> dict:
    """Read a COCO instances file and check its structure and cross references.

    Checks: top level object with list keys ``images``/``annotations``/``categories``; images have
    integer ``id``, string ``file_name``, positive ``height``/``width``; categories have integer ``id``
    and a ``name``; annotations have integer ``id``, a known ``image_id`` and a known ``category_id``;
    no duplicate ids. Returns the parsed dict (unchanged).
    """
    data = read_json(path)
    bad = "not a COCO instances file"
    if not isinstance(data, dict):
        raise data_error(path, f"{bad}: top level is a {type(data).__name__}, expected an object")
    for key in _REQUIRED_KEYS:
        if key not in data:
            raise data_error(path, f"{bad}: missing key '{key}'")
        if not isinstance(data[key], list):
            raise data_error(path, f"{bad}: '{key}' is a {type(data[key]).__name__}, expected a list")
    image_ids: set[int] = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise data_error(path, f"image entry {i} has no integer 'id'")
        if not isinstance(img.get("file_name"), str):
            raise data_error(path, f"image {img['id']} has no 'file_name'")
        for k in ("height", "width"):
            if not _is_int(img.get(k)) or img[k] <= 0:
                raise data_error(path, f"image {img['id']} has no positive integer '{k}'")
        if img["id"] in image_ids:
            raise data_error(path, f"duplicate image id {img['id']}")
        image_ids.add(img["id"])
    cat_ids: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or "name" not in cat:
            raise data_error(path, f"category entry {i} needs an integer 'id' and a 'name'")
        if cat["id"] in cat_ids:
            raise data_error(path, f"duplicate category id {cat['id']}")
        cat_ids.add(cat["id"])
    if not cat_ids:
        raise data_error(path, "no categories")
    ann_ids: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            raise data_error(path, f"annotation entry {i} has no integer 'id'")
        aid = ann["id"]
        if aid in ann_ids:
            raise data_error(path, f"duplicate annotation id {aid}")
        ann_ids.add(aid)
        if ann.get("image_id") not in image_ids:
            raise data_error(path, f"annotation {aid} refers to unknown image {ann.get('image_id')!r}")
        if ann.get("category_id") not in cat_ids:
            raise data_error(path, f"annotation {aid} refers to unknown category {ann.get('category_id')!r}")
    return data


def polygon_area(coords: list[float]) -> float:
    """Shoelace area of a flat ``[x1, y1, x2, y2, ...]`` polygon."""
    p = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def polygon_meets_image(coords: list[float], h: int, w: int) -> bool:
    """Whether the extent of a flat polygon overlaps the ``w`` x ``h`` image's interior."""
    p = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    return bool(p[:, 0].min() < w and p[:, 0].max() > 0 and p[:, 1].min() < h and p[:, 1].max() > 0)


def _valid_counts(counts: list, total: int) -> bool:
    """Whether uncompressed RLE ``counts`` are non-negative integers summing to ``total``
    (crowd regions hold thousands of them: checked in bulk when they are plain ints)."""
    if counts and len(counts) < 1 << 20 and set(map(type, counts)) <= {int}:
        try:
            values = np.array(counts, dtype=np.int64)
        except OverflowError:
            values = None
        if values is not None and int(values.max()) < 1 << 42:   # the int64 sum cannot overflow
            return bool((values >= 0).all()) and int(values.sum()) == total
    return all(_is_int(c) and c >= 0 for c in counts) and sum(counts) == total


def _segmentation_rle(seg: Any, h: int, w: int) -> tuple[Any, Any, str | None]:
    """(cleaned segmentation, lazily usable RLE or None, problem or None)."""
    if isinstance(seg, list):
        if not all(isinstance(p, list) and all(_is_num(v) for v in p) for p in seg):
            return None, None, "polygon must be a list of lists of numbers"
        if any(len(p) % 2 for p in seg):
            return None, None, "polygon has an odd number of coordinates"
        parts = [p for p in seg if len(p) >= 6]
        if not parts:
            return None, None, "polygon has fewer than 3 points"
        parts = [p for p in parts if polygon_area(p) > 0]
        if not parts:
            return None, None, "polygon has no area"
        parts = [p for p in parts if polygon_meets_image(p, h, w)]
        if not parts:
            return None, None, f"polygon lies entirely outside the image ({w}x{h})"
        return parts, None, None
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            return None, None, "RLE needs 'counts' and 'size'"
        if not isinstance(seg["size"], list) or seg["size"] != [h, w]:
            return None, None, f"RLE size {seg['size']} does not match image size [{h}, {w}]"
        counts = seg["counts"]
        if isinstance(counts, list):
            if not _valid_counts(counts, h * w):
                return None, None, f"uncompressed RLE counts must be non-negative and sum to {h * w}"
            rle = mask_utils.frPyObjects(seg, h, w)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else counts}
        else:
            return None, None, "RLE 'counts' must be a string or a list"
        if float(mask_utils.area(rle)) <= 0:
            return None, None, "empty RLE mask"
        return seg, rle, None
    if seg is None:
        return None, None, "no segmentation"
    return None, None, f"unsupported segmentation of type {type(seg).__name__}"


def check_annotation(ann: dict, h: int, w: int) -> tuple[dict | None, str | None]:
    """Check one annotation of an ``h`` x ``w`` image, cheaply (no full mask decode).

    Returns ``(cleaned, None)`` or ``(None, reason)``. Cleaning drops polygon parts with fewer than
    3 points or zero area and fills in missing ``bbox``/``area``/``iscrowd`` from the segmentation.
    Problems: no/invalid segmentation, polygon with fewer than 3 points or no area or entirely
    outside the image, empty RLE, RLE of
    the wrong size, box with non-positive size or lying outside the image.
    """
    seg, rle, problem = _segmentation_rle(ann.get("segmentation"), h, w)
    if problem:
        return None, problem
    out = dict(ann, segmentation=seg)
    out.setdefault("iscrowd", 0)
    if "bbox" not in out or "area" not in out:
        if rle is None:
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        out.setdefault("bbox", [float(v) for v in mask_utils.toBbox(rle)])
        out.setdefault("area", float(mask_utils.area(rle)))
    box = out["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(_is_num(v) for v in box)):
        return None, f"bbox {box!r} is not 4 numbers [x, y, w, h]"
    x, y, bw, bh = box
    if bw <= 0 or bh <= 0:
        return None, f"box {box} has non-positive size"
    if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
        return None, f"box {box} lies outside the image ({w}x{h})"
    return out, None
