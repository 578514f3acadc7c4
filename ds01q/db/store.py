"""Queries and updates. Every function takes a Session and never commits:
the caller (services / controller) owns the transaction."""
from __future__ import annotations

import json
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Sequence

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.orm import Session

from ds01q.errors import NotFound
from ds01q.db.models import Allocation, Gpu, InventoryEvent, Job, JobEvent, Slice
from ds01q.types import ACTIVE_NAMES, HOLDING_NAMES, ResourceRequest, SliceInfo

ACTIVE = ACTIVE_NAMES
HOLDING = HOLDING_NAMES

# The statements of every job's path (scheduling pass, assume, launch, exit), built once: building a
# statement and its cache key at each call cost more CPU than running it on SQLite.
_jobs, _allocs = Job.__table__, Allocation.__table__
# what the scheduling pass reads of each active job: not the script, environment and arguments it never uses
SCHEDULED_COLUMNS = ("id", "name", "user", "group", "state", "boost", "nice", "interactive", "request", "time_limit_s",
                     "submitted_at", "started_at", "eligible_at", "requeue_count", "node", "array_id", "depends_on",
                     "array_throttle")
_JOB_ROWS_IN = (select(*(_jobs.c[name] for name in SCHEDULED_COLUMNS))
                .where(_jobs.c.state.in_(bindparam("states", expanding=True))).order_by(_jobs.c.id))
_JOBS_IN = select(Job).where(Job.state.in_(bindparam("states", expanding=True))).order_by(Job.id)
_JOB_STATES = select(_jobs.c.id, _jobs.c.state).where(_jobs.c.id.in_(bindparam("ids", expanding=True)))
_STATE_AND_CONTAINER = select(_jobs.c.state, _jobs.c.container).where(_jobs.c.id == bindparam("job"))
_HELD = (select(_allocs.c.job_id, _allocs.c.slice_uuid, _allocs.c.gpu_equiv)
         .where(_allocs.c.released_at.is_(None)).order_by(_allocs.c.id))
_ALLOCS_OF = select(Allocation).where(Allocation.job_id == bindparam("job")).order_by(Allocation.id)
_ACTIVE_ALLOCS_OF = (select(Allocation).where(Allocation.job_id == bindparam("job"), Allocation.released_at.is_(None))
                     .order_by(Allocation.id))
_SLICES_NAMED = select(*(Slice.__table__.c[name] for name in (
    "uuid", "gpu_uuid", "node", "profile", "compute_slices", "gpu_compute_slices", "memory_mb", "gpu_name", "present",
    "drained", "generation"))).where(Slice.uuid.in_(bindparam("uuids", expanding=True)))
_ALLOCATE = insert(_allocs)
_RELEASE = (update(_allocs).where(_allocs.c.job_id == bindparam("job"), _allocs.c.released_at.is_(None))
            .values(released_at=bindparam("at")))


def read_snapshot(session: Session) -> Session:
    """Make every read of ``session`` from here on see the database as of one moment: a job, its events
    and its slices read by separate statements then agree. Call it before the session's first statement.

    Without it, SQLite (the driver starts a transaction only for a write) and PostgreSQL (READ COMMITTED)
    give each statement its own snapshot, and a job read as STOPPING could come with the events of its
    end. SQLite: an explicit BEGIN (WAL mode: the first read fixes the snapshot). PostgreSQL: REPEATABLE
    READ for this session's transaction. The session must not write."""
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("BEGIN")
    else:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    return session


@contextmanager
def snapshot(sessions: Callable[[], Session]) -> Iterator[Session]:
    """A new read-only session of ``sessions`` whose reads all see one moment (``read_snapshot``):
    what the views of jobs (``queue``, ``show``, ``history``) read in."""
    with sessions() as session:
        yield read_snapshot(session)


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def jobs_in(session: Session, states: Sequence[str]) -> list[Job]:
    return list(session.scalars(_JOBS_IN, {"states": list(states)}))


def state_and_container(session: Session, job_id: int) -> tuple[str, str | None] | None:
    """The job's state and container, or None: what an exit needs to know before it is recorded."""
    row = session.execute(_STATE_AND_CONTAINER, {"job": job_id}).first()
    return (row.state, row.container) if row is not None else None


def job_rows_in(session: Session, states: Sequence[str]) -> list[Any]:
    """As ``jobs_in``, as plain read-only rows of ``SCHEDULED_COLUMNS`` (the same attribute names) without
    the ORM's identity map: the scheduling pass reads every active job at each submit and exit."""
    return list(session.execute(_JOB_ROWS_IN, {"states": list(states)}).all())


def history(session: Session, *, user: str | None = None, states: Sequence[str] | None = None,
            since: float | None = None, until: float | None = None, limit: int = 1000) -> list[Job]:
    q = select(Job).where(Job.state.not_in(ACTIVE))
    if user:
        q = q.where(Job.user == user)
    if states:
        q = q.where(Job.state.in_(states))
    if since is not None:
        q = q.where(Job.submitted_at >= since)
    if until is not None:
        q = q.where(Job.submitted_at < until)
    return list(session.scalars(q.order_by(Job.id.desc()).limit(limit)))


def lock_user(session: Session, user: str) -> None:
    """Serialise one user's writers until the transaction ends (a quota check and its insert as one step).

    PostgreSQL: a transaction-scoped advisory lock on the user's name. SQLite: a no-op write that takes
    the database's write lock now, so a second submit waits instead of counting a stale queue.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:u))"), {"u": user})
    else:
        session.execute(text("UPDATE jobs SET id = id WHERE 0 = 1"))


def count_jobs(session: Session, user: str, states: Sequence[str]) -> int:
    return int(session.scalar(select(func.count()).select_from(Job).where(Job.user == user, Job.state.in_(states))) or 0)


def events_for(session: Session, job_ids: Iterable[int]) -> dict[int, list[JobEvent]]:
    out: dict[int, list[JobEvent]] = {}
    ids = list(job_ids)
    if not ids:
        return out
    for ev in session.scalars(select(JobEvent).where(JobEvent.job_id.in_(ids)).order_by(JobEvent.id)):
        out.setdefault(ev.job_id, []).append(ev)
    return out


def request_of(job: Job) -> ResourceRequest:
    return _parsed_request(job.request)


@lru_cache(maxsize=4096)
def _parsed_request(text: str) -> ResourceRequest:  # frozen: one object serves every job with this text
    return ResourceRequest.from_dict(json.loads(text))


# ----------------------------------------------------------------- slices
def present_slices(session: Session) -> list[Slice]:
    return list(session.scalars(select(Slice).where(Slice.present.is_(True)).order_by(Slice.uuid)))


def all_gpus(session: Session) -> list[Gpu]:
    return list(session.scalars(select(Gpu).order_by(Gpu.node, Gpu.index, Gpu.uuid)))


def inventory_events(session: Session, limit: int = 20) -> list[InventoryEvent]:
    """The newest inventory changes, oldest first."""
    rows = session.scalars(select(InventoryEvent).order_by(InventoryEvent.id.desc()).limit(max(0, min(limit, 1000))))
    return list(reversed(list(rows)))


def slice_info(s: Slice, gpu_drained: bool = False) -> SliceInfo:
    return SliceInfo(uuid=s.uuid, gpu_uuid=s.gpu_uuid, profile=s.profile, compute_slices=s.compute_slices,
                     gpu_compute_slices=s.gpu_compute_slices, memory_mb=s.memory_mb, node=s.node,
                     gpu_name=s.gpu_name, drained=s.drained or gpu_drained)


# ----------------------------------------------------------------- allocations
def active_allocations(session: Session) -> list[Allocation]:
    return list(session.scalars(select(Allocation).where(Allocation.released_at.is_(None)).order_by(Allocation.id)))


def held_slices(session: Session) -> dict[int, list[tuple[str, float]]]:
    """(slice uuid, GPU-equivalents) of every active allocation, by job, in allocation order."""
    out: dict[int, list[tuple[str, float]]] = {}
    for job_id, uuid, equiv in session.execute(_HELD):
        out.setdefault(job_id, []).append((uuid, equiv))
    return out


def allocations_of(session: Session, job_id: int, active_only: bool = True) -> list[Allocation]:
    return list(session.scalars(_ACTIVE_ALLOCS_OF if active_only else _ALLOCS_OF, {"job": job_id}))


def usable_slices(session: Session, uuids: Sequence[str]) -> list[Any] | None:
    """The rows of slices ``uuids`` (in that order; the attributes ``slice_info`` reads, and ``generation``),
    or None when one is gone or drained."""
    found = {r.uuid: r for r in session.execute(_SLICES_NAMED, {"uuids": list(uuids)})} if uuids else {}
    rows = [found.get(u) for u in uuids]
    return None if any(r is None or not r.present or r.drained for r in rows) else rows


def allocate(session: Session, job_id: int, slices: Sequence[Any], at: float) -> None:
    """Insert one active allocation per slice (``Slice`` objects, or the rows of ``usable_slices``) in one
    statement; the partial unique index refuses a slice that already has one (IntegrityError)."""
    if slices:
        session.execute(_ALLOCATE, [
            {"job_id": job_id, "slice_uuid": s.uuid, "slice_generation": s.generation, "profile": s.profile,
             "gpu_uuid": s.gpu_uuid, "gpu_equiv": slice_info(s).gpu_equiv, "memory_mb": s.memory_mb,
             "allocated_at": at} for s in slices])


def release(session: Session, job_id: int, at: float) -> int:
    res = session.execute(_RELEASE, {"job": job_id, "at": at})
    for obj in list(session.identity_map.values()):  # a Core update: what this session loaded reads it again
        if isinstance(obj, Allocation) and obj.job_id == job_id:
            session.expire(obj, ["released_at"])
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


def job_states(session: Session, job_ids: Iterable[int]) -> dict[int, str]:
    """The current state of each of ``job_ids`` that exists."""
    ids = list(job_ids)
    if not ids:
        return {}
    return {jid: st for jid, st in session.execute(_JOB_STATES, {"ids": ids})}


def slices_of(session: Session, job_ids: Iterable[int]) -> dict[int, list[str]]:
    """The slices of each job's latest allocation (its current run, or its last one)."""
    out: dict[int, list[str]] = {}
    ids = list(job_ids)
    if not ids:
        return out
    q = (select(Allocation.job_id, Allocation.slice_uuid, Allocation.allocated_at)
         .where(Allocation.job_id.in_(ids)).order_by(Allocation.id))
    latest: dict[int, float] = {}
    for jid, uuid, at in session.execute(q):  # only the latest run of a requeued job
        if at > latest.get(jid, -1.0):
            latest[jid] = at
            out[jid] = []
        if at == latest[jid]:
            out[jid].append(uuid)
    return out
