"""``fcis serve``: a trained model behind an HTTP API and a web page (FastAPI + uvicorn; the
``serve`` extra). ``create_app(ModelBackend.from_checkpoint(path), ServeConfig())`` is the ASGI app."""

from .app import create_app
from .backend import ModelBackend
from .config import ServeConfig

__all__ = ["create_app", "ModelBackend", "ServeConfig"]
