"""Reading and changing jobs: queue, show, history, cancel, logs, admin priority/hold/release/requeue."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from ds01q import accounting
from ds01q.db import store
from ds01q.errors import Conflict, RequestError
from ds01q.db.models import Gpu, Job
from ds01q.types import queue_order
from ds01q.inventory.sync import recorded_instances
from ds01q.mig.auto import target_of
from ds01q.mig.eta import Eta, recut_eta
from ds01q.mig.profiles import gpu_model
from ds01q.services.context import Caller, Context
from ds01q.services.validate import printable, strict_bool, strict_int
from ds01q.services.views import job_dict
from ds01q.db.jobstate import request_stop
from ds01q.types import JobState, RequestKind, StopOutcome
from ds01q.units import parse_duration

MAX_IDS = 1000
MAX_LOG_CHUNK = 1024 * 1024
CAS_TRIES = 5  # a cancel that loses the compare-and-set to the loop re-reads the job and tries again


def _ids(value: Any) -> list[int]:
    ids = value if isinstance(value, list) else [value]
    if not ids or len(ids) > MAX_IDS or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
        raise RequestError(f"job ids must be 1 to {MAX_IDS} positive whole numbers")
    return ids


def _views(ctx: Context, caller: Caller, session: Session, jobs: Sequence[Job],
           events: bool) -> list[dict[str, Any]]:
    """The jobs' views, their slices, events and usage read in ``session`` (a ``store.snapshot``:
    they agree with the jobs' rows)."""
    slices = store.slices_of(session, [j.id for j in jobs])
    evs = store.events_for(session, [j.id for j in jobs]) if events else {}
    finished = [j.id for j in jobs if JobState(j.state).is_final]
    usage = accounting.history_usage(session, finished, ctx.config.carbon_g_per_kwh) if finished else {}
    factors = ctx.last_cycle.factors if ctx.last_cycle else {}
    borrowing = ctx.last_cycle.borrowing if ctx.last_cycle else frozenset()
    out = []
    for j in jobs:
        d = job_dict(j, slices.get(j.id, []), evs.get(j.id, []) if events else None,
                     private=caller.admin or caller.user == j.user)
        d.update(usage.get(j.id, {}))
        d["borrowing"] = j.id in borrowing and JobState(j.state).holds_slices  # beyond max_gpus, may be preempted
        if j.id in factors:
            d["priority_factors"] = {k: round(v, 3) for k, v in factors[j.id].items()}
        out.append(d)
    return out


QUEUE_PAGE_MAX = 2000  # jobs per page: a page of full job views stays far below the 4 MiB line limit


def queue(ctx: Context, caller: Caller, a: dict[str, Any]) -> list[dict[str, Any]] | dict[str, Any]:
    """Active jobs. With ``limit``: one page, by job id after ``after``, as ``{"jobs": [...], "next": ID|None}``
    (``Client.queue`` pages through and sorts); without: all of them at once, sorted (small queues only:
    a reply must fit one protocol line)."""
    user = a.get("user")
    if user is not None and not isinstance(user, str):
        raise RequestError("user: must be a user name")
    paged = a.get("limit") is not None
    limit = strict_int(a, "limit", QUEUE_PAGE_MAX, 1, QUEUE_PAGE_MAX)
    after = strict_int(a, "after", 0, 0, 2**62)
    with store.snapshot(ctx.sessions) as session:
        q = select(Job).where(Job.state.in_(store.ACTIVE), Job.id > after)
        if user:
            q = q.where(Job.user == user)
        jobs = list(session.scalars(q.order_by(Job.id).limit(limit) if paged else q.order_by(Job.id)))
        if paged:
            return {"jobs": _views(ctx, caller, session, jobs, events=False),
                    "next": jobs[-1].id if len(jobs) == limit else None}
        jobs.sort(key=lambda j: queue_order(j.state, j.priority, j.id))
        return _views(ctx, caller, session, jobs, events=False)


def show(ctx: Context, caller: Caller, a: dict[str, Any]) -> dict[str, Any]:
    (job_id,) = _ids(a.get("id"))[:1]
    with store.snapshot(ctx.sessions) as session:
        job = store.get_job(session, job_id)
        d = _views(ctx, caller, session, [job], events=True)[0]
    if ctx.last_cycle and job.id in ctx.last_cycle.pending:
        info = ctx.last_cycle.pending[job.id]
        d["explain"] = info.detail
    if job.state == JobState.PENDING.value:
        hint = _recut_hint(ctx, job)
        if hint:
            d["explain"] = "; ".join(x for x in (d.get("explain") or job.reason_detail, hint) if x)
    return d


RECUT_HINT_WINDOW_S = 900.0


def _recut_hint(ctx: Context, job: Job) -> str:
    """A re-cut proposed or under way (mig.auto) that adds the job's profile: say so, with its ETA
    (``mig.eta.recut_eta`` on the recorded placements: the jobs in the way end, then the steps)."""
    req = store.request_of(job)
    if req.kind != RequestKind.MIG or not req.profile:
        return ""
    now = ctx.clock.now()
    with ctx.sessions() as session:
        events = store.inventory_events(session, limit=50)
        stopped: set[str] = set()  # GPUs whose later re-cut stopped half-way: no promise for them
        for e in reversed(events):
            if e.kind == "recut" and (e.detail or "").startswith("stopped after"):
                stopped.add(e.uuid)
            target = target_of(e.detail or "")
            if now - e.at > RECUT_HINT_WINDOW_S or e.kind not in ("mig-auto", "mig-proposal") or \
                    target is None or req.profile not in target or (e.kind == "mig-auto" and e.uuid in stopped):
                continue
            known, eta = _eta(session, e.uuid, target, now)
            if known and eta is None:
                continue  # done already, or out of reach now: no promise to make
            when = ""
            if eta is not None:
                when = f" in about {_about(eta.total_s)}"
                if eta.waits_for:
                    when += f" (once job {', '.join(str(j) for j in eta.waits_for)} ends)"
            if e.kind == "mig-auto":
                return f"a re-cut of {e.uuid} adds {req.profile}: it should start{when}"
            return (f"a re-cut of {e.uuid} would add {req.profile}{when} (proposed; an admin can run "
                    f"`ds01q admin mig apply --gpu {e.uuid}`)")
    return ""


def _about(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, math.ceil(seconds))} s"
    if seconds < 5400:
        return f"{math.ceil(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _eta(session: Any, gpu_uuid: str, target: tuple[str, ...], now: float) -> tuple[bool, Eta | None]:
    """(placements known, the ETA of re-cutting the GPU to ``target``; None when nothing is left to do)."""
    gpu = session.get(Gpu, gpu_uuid)
    model = gpu_model(gpu.name) if gpu is not None else None
    insts = recorded_instances(session, gpu_uuid) if model is not None else None
    if model is None or insts is None:
        return False, None
    free_at, job_of = {}, {}
    for a in store.active_allocations(session):
        if a.gpu_uuid == gpu_uuid:
            holder = session.get(Job, a.job_id)
            begin = holder.started_at if holder is not None and holder.started_at is not None else a.allocated_at
            free_at[a.slice_uuid] = begin + (holder.time_limit_s if holder is not None else 0.0)
            job_of[a.slice_uuid] = a.job_id
    eta = recut_eta(model, insts, target, free_at, now)
    if eta is None or not eta.plan.steps:
        return True, None
    return True, replace(eta, waits_for=tuple(str(job_of[u]) for u in eta.waits_for))


def history(ctx: Context, caller: Caller, a: dict[str, Any]) -> list[dict[str, Any]]:
    user = a.get("user")
    if user is not None and not isinstance(user, str):
        raise RequestError("user: must be a user name")
    if not caller.admin:
        if user not in (None, caller.user) or strict_bool(a, "all_users", False):
            raise RequestError("you may list only your own history; admins may list anyone's")
        user = caller.user
    states = a.get("states")
    if states is not None and (not isinstance(states, list) or not all(isinstance(s, str) for s in states)):
        raise RequestError("states: must be a list of job state names")
    if states:
        bad = [s for s in states if s not in JobState.__members__]
        if bad:
            raise RequestError(f"--state {bad[0]!r} is not a job state (allowed: {', '.join(JobState.__members__)})")
    now = ctx.clock.now()
    since_s = parse_duration(a["since"]) if isinstance(a.get("since"), str) and a["since"] else None
    if a.get("since") is not None and since_s is None:
        raise RequestError(f"--since {printable(str(a['since']))[:40]!r} is not a duration like 2d or 12h")
    since = now - since_s if since_s is not None else None
    limit = strict_int(a, "limit", 1000, 1, 100000)
    with store.snapshot(ctx.sessions) as session:
        jobs = store.history(session, user=user, states=states, since=since, limit=limit)
        return _views(ctx, caller, session, jobs, events=False)


def cancel(ctx: Context, caller: Caller, a: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    for job_id in _ids(a.get("ids")):
        for tries_left in range(CAS_TRIES - 1, -1, -1):  # the loop moved the job meanwhile: read it again
            try:
                with ctx.sessions.begin() as session:
                    job = store.get_job(session, job_id)
                    ctx.require_owner(caller, job.user, f"cancel job {job_id}")
                    state = request_stop(session, job, StopOutcome.CANCELLED, at=ctx.clock.now(), by=caller.user,
                                         detail=f"cancelled by {caller.user}")
                break
            except Conflict:
                if not tries_left:
                    raise
        results.append({"id": job_id, "state": state.value, "cancel_requested": state == JobState.STOPPING})
    ctx.wake()
    return results


def logs(ctx: Context, caller: Caller, a: dict[str, Any]) -> dict[str, Any]:
    (job_id,) = _ids(a.get("id"))[:1]
    offset = strict_int(a, "offset", 0, 0, 2**62)
    error = a.get("error", False)
    if not isinstance(error, bool):
        raise RequestError(f"logs: error {error!r} must be true or false")
    with ctx.sessions() as session:
        job = store.get_job(session, job_id)
    ctx.require_owner(caller, job.user, f"read the logs of job {job_id}")
    data = ctx.read_output(job, offset, MAX_LOG_CHUNK, error)
    return {"data": data.decode("utf-8", "replace"), "offset": offset + len(data), "state": job.state,
            "final": JobState(job.state).is_final}


def set_priority(ctx: Context, caller: Caller, a: dict[str, Any]) -> dict[str, Any]:
    ctx.require_admin(caller, "ds01q admin priority")
    boost = a.get("boost")
    if not isinstance(boost, int) or isinstance(boost, bool) or abs(boost) > 1_000_000:
        raise RequestError(f"priority {boost!r} must be a whole number from -1000000 to 1000000")
    (job_id,) = _ids(a.get("id"))[:1]
    with ctx.sessions.begin() as session:
        job = store.get_job(session, job_id)
        job.boost = boost
        session.add(job)
    ctx.wake()
    return {"id": job_id, "boost": boost}


def requeue(ctx: Context, caller: Caller, a: dict[str, Any]) -> list[dict[str, Any]]:
    """Stop a running job and put it back in the queue (Slurm's scontrol requeue)."""
    ctx.require_admin(caller, "ds01q admin requeue")
    out = []
    for job_id in _ids(a.get("ids")):
        with ctx.sessions.begin() as session:
            job = store.get_job(session, job_id)
            if not JobState(job.state).holds_slices:
                raise RequestError(f"job {job_id} is {job.state}; only running jobs can be requeued")
            state = request_stop(session, job, StopOutcome.ADMIN_REQUEUE, at=ctx.clock.now(), by=caller.user)
            out.append({"id": job_id, "state": state.value})
    ctx.wake()
    return out
