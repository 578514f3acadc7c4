"""Best-fit placement of one request shape on slices.

A ``Shape`` is a request plus the profile filter that the user's limits impose
(``allowed_profiles`` restricts MIG profiles, ``allow_full_gpu`` whole GPUs).
Pending jobs are grouped by shape, so a pass searches once per shape, not
once per job.

Best fit:

- ANY: the free slice with the fewest compute slices, then the least memory,
  that has at least ``min_mem_mb``; among equals, one on a GPU that already
  has a busy slice (so whole GPUs stay free), then the lowest uuid.
- MIG P: the same order among slices of profile P.
- GPUS N: N whole GPUs on one node; the node with the fewest free whole GPUs
  that still has N (so big nodes stay free for big jobs), then the node name;
  on that node the N lowest uuids.
- NONE: no slice.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ds01q.types import RequestKind, ResourceRequest, SliceInfo


@dataclass(frozen=True, slots=True)
class Shape:
    request: ResourceRequest
    allowed_profiles: frozenset[str] | None = None  # None: any MIG profile
    allow_full_gpu: bool = True

    @property
    def kind(self) -> RequestKind:
        return self.request.kind

    def accepts(self, s: SliceInfo) -> bool:
        """Could this one slice serve the shape (ignoring whether it is free)?"""
        req = self.request
        if req.gpu_model and not s.is_model(req.gpu_model):
            return False
        if req.kind == RequestKind.GPUS:
            return s.is_full and self.allow_full_gpu
        if req.kind == RequestKind.MIG:
            if s.profile != req.profile:
                return False
        elif req.kind == RequestKind.ANY:
            if s.memory_mb < req.min_mem_mb:
                return False
        else:
            return False
        if s.is_full:
            return self.allow_full_gpu
        return self.allowed_profiles is None or s.profile in self.allowed_profiles


def size_key(s: SliceInfo) -> tuple[int, int, str]:
    return (s.compute_slices, s.memory_mb, s.profile)


def fits_in(shape: Shape, slices: Iterable[SliceInfo]) -> bool:
    """Could the shape be placed if all these slices were free?"""
    if shape.kind == RequestKind.NONE:
        return True
    if shape.kind != RequestKind.GPUS:
        return any(shape.accepts(s) for s in slices)
    per_node: Counter[str] = Counter(s.node for s in slices if shape.accepts(s))
    return any(n >= shape.request.count for n in per_node.values())


def shape_equiv(shape: Shape, candidates: Iterable[SliceInfo]) -> float:
    """The fewest GPU-equivalents the shape can ever take from these candidates."""
    if shape.kind == RequestKind.NONE:
        return 0.0
    if shape.kind == RequestKind.GPUS:
        return float(shape.request.count)
    return min((s.gpu_equiv for s in candidates), default=0.0)


class FreePool:
    """The slices that are free in this pass, bucketed by size for best fit."""

    def __init__(self, free: Iterable[SliceInfo], busy_gpus: Counter[str]) -> None:
        self._busy = busy_gpus
        self._buckets: dict[tuple[int, int, str], list[SliceInfo]] = defaultdict(list)
        self._full_by_node: dict[str, list[SliceInfo]] = defaultdict(list)
        for s in sorted(free, key=lambda x: x.uuid):
            self._buckets[size_key(s)].append(s)
            if s.is_full:
                self._full_by_node[s.node].append(s)
        self._order = sorted(self._buckets)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def uuids(self) -> set[str]:
        """The slices still free."""
        return {s.uuid for b in self._buckets.values() for s in b}

    def find(
        self, shape: Shape, exclude: frozenset[str] = frozenset(), max_equiv: float = math.inf
    ) -> tuple[SliceInfo, ...] | None:
        """Best-fit slices for the shape, or None. Takes nothing."""
        kind = shape.kind
        if kind == RequestKind.NONE:
            return ()
        if kind == RequestKind.GPUS:
            if shape.request.count > max_equiv + 1e-9:
                return None
            return self._find_gpus(shape, exclude)
        return self._find_one(shape, exclude, max_equiv)

    def _find_one(self, shape: Shape, exclude: frozenset[str], max_equiv: float) -> tuple[SliceInfo, ...] | None:
        for key in self._order:
            bucket = self._buckets[key]
            if not bucket or not shape.accepts(bucket[0]):
                continue
            first: SliceInfo | None = None
            for s in bucket:
                if s.uuid in exclude or s.gpu_equiv > max_equiv + 1e-9:
                    continue
                if self._busy[s.gpu_uuid]:
                    return (s,)
                if first is None:
                    first = s
            if first is not None:
                return (first,)
        return None

    def _find_gpus(self, shape: Shape, exclude: frozenset[str]) -> tuple[SliceInfo, ...] | None:
        if not shape.allow_full_gpu:
            return None
        need, model = shape.request.count, shape.request.gpu_model
        best: tuple[int, str, list[SliceInfo]] | None = None
        for node, full in self._full_by_node.items():
            usable = [s for s in full if s.uuid not in exclude and (model is None or s.is_model(model))]
            if len(usable) >= need and (best is None or (len(usable), node) < best[:2]):
                best = (len(usable), node, usable)
        return None if best is None else tuple(best[2][:need])

    def take(self, slices: Iterable[SliceInfo]) -> None:
        for s in slices:
            self._buckets[size_key(s)].remove(s)
            if s.is_full:
                self._full_by_node[s.node].remove(s)
            self._busy[s.gpu_uuid] += 1


def _preference(s: SliceInfo, busy: Mapping[str, int]) -> tuple[int, int, int, str]:
    return (s.compute_slices, s.memory_mb, 0 if busy.get(s.gpu_uuid) else 1, s.uuid)


def earliest_fit(
    shape: Shape, candidates: Iterable[SliceInfo], avail: Mapping[str, float], busy: Mapping[str, int]
) -> tuple[float, tuple[SliceInfo, ...]] | None:
    """When the shape could start at the earliest, and on which slices.

    ``avail`` maps each usable slice's uuid to the time it becomes free (now
    for a free slice); slices missing from it are never usable.
    ``candidates`` are the slices that ``shape.accepts``.
    """
    if shape.kind == RequestKind.NONE:
        return None
    usable = [s for s in candidates if s.uuid in avail]
    if shape.kind != RequestKind.GPUS:
        if not usable:
            return None
        s = min(usable, key=lambda x: (avail[x.uuid], _preference(x, busy)))
        return avail[s.uuid], (s,)
    need = shape.request.count
    per_node: dict[str, list[SliceInfo]] = defaultdict(list)
    for s in usable:
        per_node[s.node].append(s)
    best: tuple[float, str, tuple[SliceInfo, ...]] | None = None
    for node, group in per_node.items():
        if len(group) < need:
            continue
        group.sort(key=lambda x: (avail[x.uuid], x.uuid))
        start = avail[group[need - 1].uuid]
        if best is None or (start, node) < best[:2]:
            best = (start, node, tuple(group[:need]))
    return None if best is None else (best[0], best[2])


def least_loaded_node(nodes: Iterable[str], load: Mapping[str, int]) -> str | None:
    """The node running the fewest jobs (then the first name), for a job that needs no GPU."""
    return min(nodes, key=lambda n: (load.get(n, 0), n), default=None)
