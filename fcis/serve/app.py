"""The ASGI app: the API (``/v1/predict``, ``/v1/model``, ``/healthz``, ``/readyz``), the page at
``/`` and its static files, the API key check, the upload limits and the bounded queue."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from importlib import resources
from typing import Any, Callable

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from fcis.engine.errors import InputError

from .backend import ModelBackend
from .config import ServeConfig
from .queue import InferenceQueue, QueueFull
from .uploads import BodyLimit, UploadError, decode_upload

__all__ = ["create_app", "STATIC_DIR"]

log = logging.getLogger("fcis.serve")
STATIC_DIR = resources.files("fcis.serve") / "static"
PUBLIC_PATHS = ("/healthz", "/readyz", "/", "/favicon.ico")     # and /static/*: the page needs no key


class ApiKey:
    """ASGI middleware: every request but :data:`PUBLIC_PATHS` and ``/static/`` needs ``key`` in
    ``X-API-Key`` or ``Authorization: Bearer``; 401 otherwise."""

    def __init__(self, app: Callable, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        given = headers.get(b"x-api-key")
        auth = headers.get(b"authorization", b"")
        if given is None and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        if given is not None and hmac.compare_digest(given, self.key):
            await self.app(scope, receive, send)
            return
        message = "missing API key (send X-API-Key: KEY)" if given is None else "wrong API key"
        body = json.dumps({"detail": message}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(backend: ModelBackend, config: ServeConfig | None = None, *, warm_up: bool = True) -> FastAPI:
    """The app serving ``backend`` within ``config``'s limits. The model is warmed up (one
    inference) at startup, after which ``/readyz`` answers 200."""
    config = config or ServeConfig()
    queue = InferenceQueue(config.workers, config.max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if warm_up and not backend.ready:
            await run_in_threadpool(backend.warm_up)
        backend.ready = True
        yield
        queue.shutdown()

    app = FastAPI(title="fcis serve", version="1", lifespan=lifespan,
                  description="Instance segmentation: POST an image to /v1/predict, get COCO results "
                              "(category ids, scores, [x, y, w, h] boxes, RLE masks).")
    app.state.backend, app.state.config, app.state.queue = backend, config, queue

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {str(exc)[:300]}"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"detail": f"bad request: {problems}"}, status_code=400)

    @app.get("/healthz", summary="the process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="the model is loaded and warmed up")
    async def readyz() -> JSONResponse:
        if not backend.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready", "model": backend.name})

    @app.get("/v1/model", summary="the model: name, classes (category ids), input size, backend, limits")
    async def model_info() -> dict[str, Any]:
        return {**backend.info(),
                "limits": {"max_upload_mb": config.max_upload_mb, "max_image_pixels": config.max_image_pixels,
                           "workers": config.workers, "max_queue": config.max_queue},
                "queue": queue.stats()}

    @app.post("/v1/predict", summary="instances in an image (multipart field 'image')")
    async def predict(request: Request, image: UploadFile | None = File(None, description="the photo"),
                      overlay: bool = False) -> JSONResponse:
        """COCO results of one image: ``{"image": {"width", "height"}, "instances": [{"category_id",
        "category", "score", "bbox": [x, y, w, h], "segmentation": {"size": [H, W], "counts"}}],
        "model", "time_ms"}``; ``?overlay=1`` adds ``overlay_png`` (base64 PNG)."""
        if image is None:
            form = await request.form()
            fields = ", ".join(repr(k) for k in form.keys()) or "none"
            raise UploadError(400, "send the photo as multipart/form-data field 'image' "
                                   f"(e.g. curl -F image=@photo.jpg); fields received: {fields}")
        data = await image.read()
        name = image.filename or "upload"

        def job() -> dict[str, Any]:
            return backend.predict(decode_upload(data, max_pixels=config.max_image_pixels, name=name),
                                   overlay=overlay)

        return JSONResponse(await queue.run(job))

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes)
    if config.api_key:
        app.add_middleware(ApiKey, key=config.api_key)
    return app
