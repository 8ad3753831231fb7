"""Generators of bad (but realistic) input files for tests/test_bad_inputs_data.py: phone photos
with EXIF orientation, 16-bit PNGs, corrupt PNGs that still decode, unreadable files, very thin
images. Everything is written by the tests themselves, a few bytes each."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION = 0x0112


def pattern(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A ``uint8[h, w, 3]`` image whose every pixel differs (so a rotation is always visible)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def save_with_orientation(path: Path, stored: np.ndarray, orientation: int = 6) -> Path:
    """Write ``stored`` (``uint8[H, W, 3]``, the pixels as stored) with EXIF ``orientation``
    (6: displayed rotated 90° clockwise, as phones write a portrait photo). PNG or JPEG by suffix."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(stored).save(path, exif=exif)
    return path


def displayed(stored: np.ndarray, orientation: int = 6) -> np.ndarray:
    """The pixels a viewer shows for ``stored`` with EXIF ``orientation`` 1, 3, 6 or 8."""
    return {1: stored, 3: np.rot90(stored, 2), 6: np.rot90(stored, -1), 8: np.rot90(stored, 1)}[orientation]


def save_png16(path: Path, values: np.ndarray) -> Path:
    """A 16-bit grayscale PNG (PIL mode ``I;16``) of ``uint16[H, W]`` ``values``."""
    Image.fromarray(values.astype(np.uint16)).save(path)
    return path


def corrupt_png_that_decodes(path: Path, ids: np.ndarray) -> Path:
    """An 8-bit PNG of ``ids`` whose pixel data had bytes zeroed after it was written: the zlib
    stream is intact (it decodes, into different ids) but the chunk checksum no longer matches."""
    buf = io.BytesIO()
    Image.fromarray(ids.astype(np.uint8)).save(buf, format="PNG")
    b = buf.getvalue()
    i = b.index(b"IDAT")
    n = struct.unpack(">I", b[i - 4:i])[0]
    raw = bytearray(zlib.decompress(b[i + 4:i + 4 + n]))
    crc = b[i + 4 + n:i + 8 + n]
    raw[len(raw) // 3: 2 * len(raw) // 3] = bytes(2 * len(raw) // 3 - len(raw) // 3)
    data = zlib.compress(bytes(raw))
    path.write_bytes(b[:i - 4] + struct.pack(">I", len(data)) + b"IDAT" + data + crc + b[i + 8 + n:])
    return path


def not_an_image(path: Path) -> Path:
    """A file with an image suffix that holds text."""
    path.write_text("this is not an image\n")
    return path


def coco_json(path: Path, images: list[dict], annotations: list[dict], categories: list[dict] | None = None) -> Path:
    """Write a COCO instances JSON (one category "thing", id 1, unless given)."""
    data = {"images": images, "annotations": annotations,
            "categories": categories or [{"id": 1, "name": "thing"}]}
    path.write_text(json.dumps(data))
    return path


def box_polygon(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]
