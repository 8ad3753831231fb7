"""Tensors derived from a module's parameters (folded, reordered), kept between inference calls.

An entry is used only while every tensor it was made from is the same tensor object, unmodified
(its version counter): an in-place update, ``load_state_dict`` or a replaced parameter makes it
again. It holds weak references, so it never keeps an old parameter alive; copies and pickles of
the owning module start empty (their parameters are other tensors)."""

from __future__ import annotations

import weakref
from typing import Callable, Hashable, TypeVar

from torch import Tensor

__all__ = ["DerivedCache"]

T = TypeVar("T")


class DerivedCache:
    """``get(key, sources, make)``: ``make()``'s result for ``key``, made again when ``sources``
    (the tensors it is derived from) are not those of the cached entry, or were modified."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[tuple[weakref.ref, ...], tuple[int, ...], object]] = {}

    def get(self, key: Hashable, sources: tuple[Tensor, ...], make: Callable[[], T]) -> T:
        versions = tuple(t._version for t in sources)
        entry = self._entries.get(key)
        if entry is not None and entry[1] == versions and all(r() is t for r, t in zip(entry[0], sources)):
            return entry[2]  # type: ignore[return-value]
        value = make()
        self._entries[key] = (tuple(weakref.ref(t) for t in sources), versions, value)
        return value

    def __len__(self) -> int:
        return len(self._entries)

    def __deepcopy__(self, memo: dict) -> "DerivedCache":
        return type(self)()

    def __getstate__(self) -> dict:
        return {}                         # weak references do not pickle; the cache is rebuilt

    def __setstate__(self, state: dict) -> None:
        self._entries = {}
