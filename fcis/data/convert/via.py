"""VGG Image Annotator (VIA) region JSON (balloon layout) to COCO JSON."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..cocofile import read_json
from ..errors import data_error
from ._common import file_name_for, image_record, image_size, polygon_problem, polygon_record, write_coco


def _region_polygon(shape: Any) -> list[float]:
    """Flat polygon of one VIA ``shape_attributes``; ValueError with the problem otherwise.

    ``polygon`` points are image coordinates of the outline, used as is (COCO convention: pixel
    ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``; Detectron2's balloon example adds 0.5 instead);
    ``rect``, ``circle`` and ``ellipse`` are turned into polygons.
    """
    if not isinstance(shape, dict) or "name" not in shape:
        raise ValueError("region has no 'shape_attributes' with a 'name'")
    name = shape["name"]

    def num(key: str, default: float | None = None) -> float:
        value = shape.get(key, default)
        if value is None:
            raise ValueError(f"{name} region is missing '{key}'")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} region has a non-numeric '{key}': {value!r}") from None

    if name == "polygon":
        xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
        if not isinstance(xs, list) or not isinstance(ys, list):
            raise ValueError("polygon region needs lists 'all_points_x' and 'all_points_y'")
        if len(xs) != len(ys):
            raise ValueError(f"polygon has {len(xs)} x and {len(ys)} y coordinates")
        try:
            return [float(v) for xy in zip(xs, ys) for v in xy]
        except (TypeError, ValueError):
            raise ValueError("polygon region has non-numeric coordinates") from None
    if name == "rect":
        x, y, w, h = (num(k) for k in ("x", "y", "width", "height"))
        return [x, y, x + w, y, x + w, y + h, x, y + h]
    if name in ("circle", "ellipse"):
        cx, cy, t = num("cx"), num("cy"), num("theta", 0.0)
        rx, ry = (num("r"), num("r")) if name == "circle" else (num("rx"), num("ry"))
        pts = []
        for k in range(32):
            a = 2 * math.pi * k / 32
            ex, ey = rx * math.cos(a), ry * math.sin(a)
            pts += [cx + ex * math.cos(t) - ey * math.sin(t), cy + ex * math.sin(t) + ey * math.cos(t)]
        return pts
    raise ValueError(f"unsupported region shape '{name}' (need polygon, rect, circle or ellipse)")


def convert_via(
    via_json: str | os.PathLike,
    out_json: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    category: str = "object",
) -> Path:
    """Convert a VIA region JSON to a one-class COCO instances JSON (polygons); return its path.

    ``via_json`` is a VIA 1.x export (dict keyed by filename+size, each entry with ``filename`` and
    ``regions``, a dict or a list) or a VIA 2.x project (its ``_via_img_metadata``). Images are
    looked up in ``image_dir`` (default: the VIA JSON's folder) and their sizes read with PIL;
    images without regions are kept with no annotations. All regions get category id 1 named
    ``category``. Raises DataError naming the file and problem for malformed entries or regions.
    """
    via_json, out_json = Path(via_json), Path(out_json)
    image_dir = Path(image_dir) if image_dir is not None else via_json.parent
    data = read_json(via_json)
    if isinstance(data, dict) and "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
    if not isinstance(data, dict):
        raise data_error(via_json, f"not a VIA region file: top level is a {type(data).__name__}, expected an object")
    images: list[dict] = []
    annotations: list[dict] = []
    for image_id, (key, entry) in enumerate(data.items(), start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            raise data_error(via_json, f"entry '{key}' has no 'filename'")
        regions = entry.get("regions", [])
        if isinstance(regions, dict):
            regions = list(regions.values())
        if not isinstance(regions, list):
            raise data_error(via_json, f"entry '{key}': 'regions' must be a dict or a list")
        path = image_dir / entry["filename"]
        width, height = image_size(path)
        images.append(image_record(image_id, file_name_for(path, out_json), width, height))
        for r, region in enumerate(regions):
            shape = region.get("shape_attributes") if isinstance(region, dict) else None
            try:
                coords = _region_polygon(shape)
            except ValueError as e:
                raise data_error(via_json, f"image '{entry['filename']}' region {r}: {e}") from None
            problem = polygon_problem(coords, width, height)
            if problem:
                raise data_error(via_json, f"image '{entry['filename']}' region {r}: {problem}")
            annotations.append(polygon_record(len(annotations) + 1, image_id, 1, coords, width, height))
    if not images:
        raise data_error(via_json, "no images in the VIA file")
    return write_coco(out_json, images, annotations, [{"id": 1, "name": category}])
