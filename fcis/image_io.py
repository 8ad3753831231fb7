"""The one image reader of the package (training, evaluation, prediction, converters, overlays).

Pixels are returned as the picture is *displayed*: the EXIF orientation tag (phones write it on
most photos) is applied, so annotations are taken to refer to the rotated picture. 16-bit images
(``I;16``/``I`` modes, e.g. 16-bit grayscale PNGs) are scaled to 8 bits (``value >> 8``) instead of
being clipped to white. PIL and NumPy only (the ONNX runner uses it too).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageReadError", "read_rgb", "pil_to_rgb_array", "displayed_size", "verified_open",
           "EXIF_ORIENTATION", "TRANSPOSED_ORIENTATIONS"]

#: The EXIF tag holding the orientation (1 = as stored; 5-8 swap width and height).
EXIF_ORIENTATION = 0x0112
TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})


class ImageReadError(ValueError):
    """An image file cannot be read; ``reason`` says why (``str(e)`` is ``"<path>: <reason>"``)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path, self.reason = os.fspath(path), reason


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:       # a broken EXIF block: use the pixels as stored
        return 1


def pil_to_rgb_array(im: Image.Image) -> np.ndarray:
    """RGB ``uint8[H, W, 3]`` of a PIL image as displayed (EXIF orientation applied).

    Grayscale, palette, RGBA/LA (alpha dropped), CMYK and 16-bit (``I;16*``, ``I``: ``>> 8``)
    images are converted to RGB."""
    if _orientation(im) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I;16") or im.mode == "I":
        gray = (np.clip(np.asarray(im, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """RGB ``uint8[H, W, 3]`` of an image file as displayed; :class:`ImageReadError` naming the
    file and the reason (not found, not an image, truncated, decoder error, too large...)."""
    try:
        with Image.open(path) as im:
            im.load()
            return pil_to_rgb_array(im)
    except FileNotFoundError:
        raise ImageReadError(path, "cannot read image (file not found)") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "cannot read image (cannot identify image file)") from None
    except Exception as e:  # truncated files, decoder errors, decompression bombs...
        raise ImageReadError(path, f"cannot read image ({type(e).__name__}: {e})") from None


def displayed_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file as displayed (EXIF orientation 5-8 swap them), read from
    its header; :class:`ImageReadError` naming the file otherwise."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            return (h, w) if _orientation(im) in TRANSPOSED_ORIENTATIONS else (w, h)
    except FileNotFoundError:
        raise ImageReadError(path, "cannot read image (file not found)") from None
    except Exception as e:
        raise ImageReadError(path, f"cannot read image ({type(e).__name__}: {e})") from None


def verified_open(path: str | os.PathLike, what: str = "image") -> Image.Image:
    """Open and fully decode an image file after ``PIL.Image.verify`` checked its integrity (PNG
    chunk checksums: a file with zeroed bytes that would still decode into garbage is refused).
    :class:`ImageReadError` naming the file and the problem otherwise. The caller closes it."""
    try:
        with Image.open(path) as probe:
            probe.verify()
    except FileNotFoundError:
        raise ImageReadError(path, f"cannot read {what} (file not found)") from None
    except Exception as e:
        raise ImageReadError(path, f"corrupt {what} file ({type(e).__name__}: {e})") from None
    try:
        im = Image.open(path)
        im.load()
        return im
    except Exception as e:
        raise ImageReadError(path, f"cannot read {what} ({type(e).__name__}: {e})") from None
