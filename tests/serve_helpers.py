"""Uploads for the ``fcis serve`` tests (not a test module): good images and the bad ones."""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image


@functools.lru_cache(maxsize=2)
def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of ``width x height`` zeros, streamed through zlib row by row: about
    50 KB on disk, 400 megapixels once decoded (~1 s to make; cached)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)       # filter byte + packed bits
    block = row * 1000
    parts = [comp.compress(block) for _ in range(height // 1000)]
    idat = b"".join(parts) + comp.compress(row * (height % 1000)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def random_photo(h: int = 96, w: int = 120, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


def bad_uploads(good_jpeg: bytes) -> list[tuple[str, dict, int, str]]:
    """``(what, httpx files=..., expected status, a word the message must hold)`` for each bad upload."""
    return [
        ("truncated JPEG", {"image": ("cut.jpg", good_jpeg[: len(good_jpeg) // 2])}, 400, "cut.jpg"),
        ("text file", {"image": ("notes.txt", b"just some text, not an image\n")}, 400, "notes.txt"),
        ("0 bytes", {"image": ("empty.png", b"")}, 400, "empty"),
        ("20000x20000 PNG bomb", {"image": ("bomb.png", png_bomb())}, 413, "bomb.png"),
        ("wrong field name", {"file": ("photo.jpg", good_jpeg)}, 400, "'image'"),
    ]
