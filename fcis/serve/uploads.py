"""Uploaded bytes -> an RGB image, with the limits enforced before the expensive work: the
body size while it streams in (:class:`BodyLimit`), the pixel count from the image header before
decoding (decompression bombs), then a full decode that names what is wrong with a bad file."""

from __future__ import annotations

import io
import warnings
from typing import Any, Awaitable, Callable

from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.exceptions import HTTPException

__all__ = ["UploadError", "decode_upload", "BodyLimit"]


class UploadError(Exception):
    """An upload the server refuses: ``status`` (400 or 413) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_upload(data: bytes, *, max_pixels: int, name: str = "upload") -> Image.Image:
    """The RGB image in ``data`` (EXIF orientation applied, as browsers show it).

    Raises :class:`UploadError` 400 for empty data or data that is not a readable image
    (truncated, corrupt, another kind of file) and 413 when ``width x height > max_pixels``,
    checked from the header before any pixel is decoded.
    """
    if not data:
        raise UploadError(400, f"{name}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadError(413, f"{name}: image too large ({e})") from None
    except UnidentifiedImageError:
        raise UploadError(400, f"{name}: not an image in a format this server reads (JPEG, PNG, BMP, GIF, "
                               f"TIFF, WebP, ...); it starts with {data[:8]!r}") from None
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ... for a corrupt header
        raise UploadError(400, f"{name}: not a readable image ({_first_line(e)})") from None
    width, height = im.size
    if width * height > max_pixels:
        raise UploadError(413, f"{name}: {width}x{height} = {width * height} pixels is over this server's limit "
                               f"of {max_pixels} pixels")
    if width == 0 or height == 0:
        raise UploadError(400, f"{name}: the image has no pixels ({width}x{height})")
    try:
        im.load()
        upright = ImageOps.exif_transpose(im)
        return upright.convert("RGB")
    except Exception as e:  # noqa: BLE001 - truncated or corrupt pixel data
        raise UploadError(400, f"{name}: a {im.format} image of {width}x{height} that cannot be decoded "
                               f"({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


class _TooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the limit; an HTTPException so that the
    framework's body parsing passes it on (answered 413) instead of calling it a parse error."""


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 — at once when its
    ``Content-Length`` says so, else as soon as that many bytes have arrived (chunked uploads)."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit_mb = self.max_bytes / 2**20
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _json(send, 400, "the Content-Length header is not a number")
                    return
                if length > self.max_bytes:
                    await _json(send, 413, f"upload of {length / 2**20:.1f} MiB is over this server's limit "
                                           f"of {limit_mb:g} MiB")
                    return
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(413, f"upload is over this server's limit of {limit_mb:g} MiB")
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _json(send, 413, f"upload is over this server's limit of {limit_mb:g} MiB")


async def _json(send: Callable, status: int, message: str) -> None:
    import json

    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
