"""The inventory in the database: reconcile one node's GPU report into it, drain and resume,
and the slice views the scheduler and the submit checks read.

``sync`` is per node: a report only adds, updates or retires GPUs and slices of the node
it names, so one node's report never marks another node's slices as gone."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from ds01q.db import store
from ds01q.errors import NotFound
from ds01q.db.models import Gpu, InventoryEvent, Slice
from ds01q.types import FULL_PROFILE, SliceInfo

KNOWN_GPUS = ("NVIDIA A100-PCIE-40GB", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A30")


@lru_cache(maxsize=1)
def known_profiles() -> frozenset[str]:
    from ds01q.mig.profiles import possible_profiles as pp

    return pp(list(KNOWN_GPUS))


def possible_profiles(infos: Sequence[SliceInfo]) -> frozenset[str]:
    from ds01q.mig.profiles import possible_profiles as pp

    names = sorted({s.gpu_name for s in infos})
    return pp(names) | {s.profile for s in infos}


# built once: each scheduling pass runs them
_DRAINED_GPUS = select(Gpu.__table__.c.uuid).where(Gpu.__table__.c.drained.is_(True))
_PRESENT_SLICES = select(Slice.__table__).where(Slice.__table__.c.present.is_(True)).order_by(Slice.__table__.c.uuid)


def slice_infos(session: Session) -> list[SliceInfo]:
    """Every present slice, read as plain rows (each scheduling pass reads them)."""
    drained = set(session.scalars(_DRAINED_GPUS))
    rows = session.execute(_PRESENT_SLICES)
    return [store.slice_info(s, s.gpu_uuid in drained) for s in rows]


@dataclass
class SyncResult:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed_jobs: list[int] = field(default_factory=list)  # jobs whose slice vanished: the caller stops them

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "failed_jobs": self.failed_jobs}


def sync(session: Session, records: Sequence[Any], now: float, *, node: str = "local", by: str = "ds01q") -> SyncResult:
    """Make ``node``'s GPUs and slices match ``records`` (GpuRecords of that node). Returns what
    was added and removed, and the jobs whose slice vanished under them: the caller stops
    those (outcome LAYOUT_CHANGE: NODE_FAIL, requeued if the job allows)."""
    res = SyncResult()
    seen_gpus: set[str] = set()
    seen: dict[str, SliceInfo] = {}
    placed: dict[str, Any] = {}  # slice uuid -> its Instance (placement) where the record has one
    unplaced_gpus: set[str] = set()  # GPUs whose record says nothing about placements (NVML without root)
    for rec in records:
        instances = getattr(rec, "instances", ())
        placed.update((i.uuid, i) for i in instances)
        if not instances:
            unplaced_gpus.add(rec.uuid)
        seen_gpus.add(rec.uuid)
        g = session.get(Gpu, rec.uuid) or Gpu(uuid=rec.uuid)
        g.name, g.node, g.index = rec.name, node, rec.index
        g.memory_mb, g.mig_enabled, g.present = rec.memory_mb, rec.mig_enabled, True
        g.utilization = getattr(rec, "utilization", None)
        session.add(g)
        for s in rec.slices:
            seen[s.uuid] = s
    for g in store.all_gpus(session):
        if g.node == node and g.uuid not in seen_gpus and g.present:
            g.present = False
    existing = {s.uuid: s for s in session.query(Slice).all()}
    mine = {uuid for uuid, row in existing.items() if row.node == node}
    for uuid, info in seen.items():
        row = existing.get(uuid)
        if row is None or not row.present:
            row = row or Slice(uuid=uuid, generation=0)
            row.generation = (row.generation or 0) + 1  # a UUID that reappears is a new slice
            row.present = True
            res.added.append(uuid)
            session.add(InventoryEvent(at=now, kind="added", uuid=uuid, by=by,
                                       detail=f"{info.profile} on {info.gpu_uuid} (generation {row.generation})"))
        row.gpu_uuid, row.node, row.profile = info.gpu_uuid, node, info.profile
        row.compute_slices, row.gpu_compute_slices = info.compute_slices, info.gpu_compute_slices
        row.memory_mb, row.gpu_name = info.memory_mb, info.gpu_name
        _place(row, placed.get(uuid), keep=uuid not in res.added and info.gpu_uuid in unplaced_gpus)
        session.add(row)
    gone = [existing[uuid] for uuid in sorted(mine) if existing[uuid].present and uuid not in seen]
    active = {a.slice_uuid: a for a in store.active_allocations(session)}
    for row in gone:
        row.present = False
        res.removed.append(row.uuid)
        alloc = active.get(row.uuid)
        session.add(InventoryEvent(at=now, kind="removed", uuid=row.uuid, by=by,
                                   detail=f"{row.profile} on {row.gpu_uuid}"
                                   + (f"; job {alloc.job_id} stops (NODE_FAIL)" if alloc else "")))
        if alloc is not None and alloc.job_id not in res.failed_jobs:
            res.failed_jobs.append(alloc.job_id)
    session.flush()
    return res


def _place(row: Slice, inst: Any, keep: bool) -> None:
    """Record the slice's placement; an instance's placement never changes while its uuid lives,
    so a report without placements (``keep``) leaves the recorded one."""
    if inst is not None:
        row.placement_start, row.placement_size, row.gi_id = int(inst.start), int(inst.size), inst.gi_id
    elif not keep:
        row.placement_start = row.placement_size = row.gi_id = None


def recorded_instances(session: Session, gpu: str) -> list[Any] | None:
    """The GPU's present MIG instances with the placements the inventory recorded (``Instance``s,
    busy where a job holds them), ordered by start; None when any placement is unknown."""
    from ds01q.mig.placement import Instance

    rows = [s for s in store.present_slices(session) if s.gpu_uuid == gpu and s.profile != FULL_PROFILE]
    if any(r.placement_start is None or r.placement_size is None for r in rows):
        return None
    busy = {a.slice_uuid for a in store.active_allocations(session) if a.gpu_uuid == gpu}
    out = [Instance(r.profile, int(r.placement_start or 0), int(r.placement_size or 0), r.gi_id, r.uuid,
                    r.uuid in busy) for r in rows]
    return sorted(out, key=lambda i: i.start)


def set_drain(session: Session, uuid: str, drained: bool, reason: str | None, *, at: float, by: str) -> str:
    target: Gpu | Slice | None = session.get(Gpu, uuid) or session.get(Slice, uuid)
    if target is None or not target.present:
        raise NotFound(f"{uuid} is not a GPU or slice in the inventory (see `ds01q status`)")
    target.drained = drained
    target.drain_reason = reason if drained else None
    session.add(InventoryEvent(at=at, kind="drained" if drained else "resumed", uuid=uuid, detail=reason, by=by))
    return "gpu" if isinstance(target, Gpu) else "slice"
