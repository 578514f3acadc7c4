"""``LazyMapping``: a read-only mapping whose values are built on first read.

A pass decides every pending job's reason, but most readers look at a few
jobs (``ds01q show``, ``shell``'s position) and ``factors`` only matter for
``queue --long``. So ``CycleResult.pending`` and ``CycleResult.factors`` keep
the pass's compact records and build each ``PendingInfo`` / factor dict when
it is first read. Equality, iteration and ``len`` behave as for a dict.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

K = TypeVar("K")
S = TypeVar("S")
V = TypeVar("V")


class LazyMapping(Mapping[K, V], Generic[K, S, V]):
    def __init__(self, source: Mapping[K, S], build: Callable[[K, S], V]) -> None:
        self._source = source
        self._build = build
        self._built: dict[K, V] = {}

    def __getitem__(self, key: K) -> V:
        value = self._built.get(key)
        if value is None:
            value = self._built[key] = self._build(key, self._source[key])
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._source

    def __iter__(self) -> Iterator[K]:
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"
