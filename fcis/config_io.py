"""Rebuilding the library's configuration dataclasses from plain dicts (checkpoints, JSON)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """``cls(**data)``, refusing keys that are not fields of ``cls`` with a message naming them."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]  # T is a dataclass
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    return cls(**data)
