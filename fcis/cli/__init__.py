"""Command-line interface (``fcis ...`` / ``python -m fcis ...``)."""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
