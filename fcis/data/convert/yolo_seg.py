"""YOLO segmentation labels (``cls x1 y1 x2 y2 ...`` normalised polygons) to COCO JSON."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import data_error
from ._common import file_name_for, image_record, image_size, list_images, polygon_problem, polygon_record, write_coco

_TOLERANCE = 0.01  # normalised coordinates may overshoot [0, 1] by this much (clipped)


def _parse_line(label_path: Path, n: int, line: str, num_classes: int, width: int, height: int):
    """``(class index, flat polygon in pixels)`` of label line ``n`` (1-based)."""
    tokens = line.split()
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise data_error(label_path, f"line {n}: not a list of numbers: {line.strip()!r}") from None
    cls, coords = values[0], values[1:]
    if cls != int(cls) or not 0 <= cls < num_classes:
        raise data_error(label_path, f"line {n}: class {tokens[0]} out of range (0..{num_classes - 1})")
    if len(coords) == 4:
        raise data_error(label_path, f"line {n}: 4 values look like a YOLO box (cx cy w h), "
                                     "not a segmentation polygon")
    if any(not -_TOLERANCE <= v <= 1 + _TOLERANCE for v in coords):
        raise data_error(label_path, f"line {n}: coordinates must be normalised to [0, 1]")
    pixels = [v * (width if i % 2 == 0 else height) for i, v in enumerate(coords)]
    problem = polygon_problem(pixels)
    if problem:
        raise data_error(label_path, f"line {n}: {problem}")
    return int(cls), pixels


def convert_yolo_seg(
    image_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    out_json: str | os.PathLike,
    *,
    class_names: list[str],
) -> Path:
    """Convert a YOLO segmentation folder to a COCO instances JSON (polygons); return its path.

    For each image ``<stem>.<ext>`` in ``image_dir`` the labels are ``label_dir/<stem>.txt``, one
    object per line: ``cls x1 y1 x2 y2 ...`` with a 0-based class index and coordinates normalised by
    the image width/height. A missing label file means an image without objects (YOLO convention).
    YOLO class ``i`` becomes category id ``i + 1`` named ``class_names[i]``. Raises DataError naming
    the label file and line for malformed lines.
    """
    if not class_names or not all(isinstance(n, str) for n in class_names):
        raise ValueError(f"class_names must be a non-empty list of strings, got {class_names!r}")
    out_json = Path(out_json)
    images: list[dict] = []
    annotations: list[dict] = []
    for image_id, path in enumerate(list_images(image_dir), start=1):
        width, height = image_size(path)
        images.append(image_record(image_id, file_name_for(path, out_json), width, height))
        label_path = Path(label_dir) / f"{path.stem}.txt"
        if not label_path.is_file():
            continue
        try:
            lines = label_path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise data_error(label_path, f"cannot read label file ({e})") from None
        for n, line in enumerate(lines, start=1):
            if line.strip():
                cls, poly = _parse_line(label_path, n, line, len(class_names), width, height)
                annotations.append(polygon_record(len(annotations) + 1, image_id, cls + 1, poly, width, height))
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    return write_coco(out_json, images, annotations, categories)
