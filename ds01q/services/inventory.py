"""Inventory: read it (static or NVML), reconcile it into the database, drain and resume."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

from sqlalchemy.orm import Session

from ds01q import accounting, store
from ds01q.config import Config
from ds01q.errors import InventoryError, NotFound
from ds01q.models import Gpu, InventoryEvent, Job, Slice
from ds01q.state import transition
from ds01q.types import JobState, SliceInfo

KNOWN_GPUS = ("NVIDIA A100-PCIE-40GB", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A30")
LAYOUT_CHANGED = "mig layout changed"


@lru_cache(maxsize=1)
def known_profiles() -> frozenset[str]:
    from ds01q.mig.profiles import possible_profiles as pp

    return pp(list(KNOWN_GPUS))


def possible_profiles(infos: Sequence[SliceInfo]) -> frozenset[str]:
    from ds01q.mig.profiles import possible_profiles as pp

    names = sorted({s.gpu_name for s in infos})
    return pp(names) | {s.profile for s in infos}


def slice_infos(session: Session) -> list[SliceInfo]:
    drained = {g.uuid for g in store.all_gpus(session) if g.drained}
    return [store.slice_info(s, s.gpu_uuid in drained) for s in store.present_slices(session)]


def read_inventory(cfg: Config) -> list[Any]:
    """GpuRecords from NVML or from the config's declared GPUs (source static, or auto without a driver)."""
    from ds01q.inventory.static import static_inventory

    if cfg.inventory_source == "static":
        return static_inventory(list(cfg.inventory_gpus), node=cfg.node)
    from ds01q.inventory.nvml import read_nvml

    try:
        return read_nvml(node=cfg.node)
    except InventoryError:
        if cfg.inventory_source == "auto":
            return static_inventory(list(cfg.inventory_gpus), node=cfg.node)
        raise


@dataclass
class SyncResult:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed_jobs: list[int] = field(default_factory=list)  # jobs whose slice vanished
    to_stop: list[tuple[int, str]] = field(default_factory=list)  # (job id, container) to stop

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "failed_jobs": self.failed_jobs}


def sync(session: Session, records: Sequence[Any], now: float, by: str = "ds01q") -> SyncResult:
    """Make the slices table match ``records``. A vanished slice with an active allocation ends
    its job NODE_FAIL (reason: mig layout changed) and requeues it if the job allows."""
    res = SyncResult()
    seen_gpus: set[str] = set()
    seen: dict[str, SliceInfo] = {}
    for rec in records:
        seen_gpus.add(rec.uuid)
        g = session.get(Gpu, rec.uuid) or Gpu(uuid=rec.uuid)
        g.name, g.node, g.index = rec.name, getattr(rec, "node", "local") or "local", rec.index
        g.memory_mb, g.mig_enabled, g.present = rec.memory_mb, rec.mig_enabled, True
        g.utilization = getattr(rec, "utilization", None)
        session.add(g)
        for s in rec.slices:
            seen[s.uuid] = s
    for g in store.all_gpus(session):
        if g.uuid not in seen_gpus and g.present:
            g.present = False
    existing = {s.uuid: s for s in session.query(Slice).all()}
    for uuid, info in seen.items():
        row = existing.get(uuid)
        if row is None or not row.present:
            row = row or Slice(uuid=uuid, generation=0)
            row.generation = (row.generation or 0) + 1  # a UUID that reappears is a new slice
            row.present = True
            res.added.append(uuid)
            session.add(InventoryEvent(at=now, kind="added", uuid=uuid, by=by,
                                       detail=f"{info.profile} on {info.gpu_uuid} (generation {row.generation})"))
        row.gpu_uuid, row.node, row.profile = info.gpu_uuid, info.node, info.profile
        row.compute_slices, row.gpu_compute_slices = info.compute_slices, info.gpu_compute_slices
        row.memory_mb, row.gpu_name = info.memory_mb, info.gpu_name
        session.add(row)
    gone = [row for uuid, row in existing.items() if row.present and uuid not in seen]
    active = {a.slice_uuid: a for a in store.active_allocations(session)}
    for row in gone:
        row.present = False
        res.removed.append(row.uuid)
        alloc = active.get(row.uuid)
        session.add(InventoryEvent(at=now, kind="removed", uuid=row.uuid, by=by,
                                   detail=f"{row.profile} on {row.gpu_uuid}"
                                   + (f"; job {alloc.job_id} ended NODE_FAIL" if alloc else "")))
        if alloc is not None and alloc.job_id not in res.failed_jobs:
            res.failed_jobs.append(alloc.job_id)
            job = store.get_job(session, alloc.job_id)
            if job.container:
                res.to_stop.append((job.id, job.container))
            _fail_on_layout_change(session, job, now, by)
    session.flush()
    return res


def _fail_on_layout_change(session: Session, job: Job, now: float, by: str) -> None:
    store.release(session, job.id, now)
    transition(session, job, JobState.NODE_FAIL, at=now, by=by, reason=LAYOUT_CHANGED)
    job.reason = LAYOUT_CHANGED
    accounting.on_job_end(session, job, store.allocations_of(session, job.id, active_only=False), now)
    if job.requeue_on_layout_change:
        job.requeue_count += 1
        transition(session, job, JobState.PENDING, at=now, by=by, reason=f"requeued: {LAYOUT_CHANGED}")
        job.reason = "Resources"
    else:
        job.end_state = JobState.NODE_FAIL.value


def set_drain(session: Session, uuid: str, drained: bool, reason: str | None, *, at: float, by: str) -> str:
    target: Gpu | Slice | None = session.get(Gpu, uuid) or session.get(Slice, uuid)
    if target is None or not target.present:
        raise NotFound(f"{uuid} is not a GPU or slice in the inventory (see `ds01q status`)")
    target.drained = drained
    target.drain_reason = reason if drained else None
    session.add(InventoryEvent(at=at, kind="drained" if drained else "resumed", uuid=uuid, detail=reason, by=by))
    return "gpu" if isinstance(target, Gpu) else "slice"
