"""`ds01q admin mig plan` and `mig apply`: layouts from demand (or --layout), applied
instance by instance when the busy instances can stay, through a whole-GPU drain otherwise.

Demand is every pending and running job's GPU request (a MIG profile, "any" slice,
or N whole GPUs); each GPU is planned for the whole demand on its own. Apply first
asks ``mig_recut`` for a partial re-cut (only free instances change; running jobs
keep their slices). When a busy instance stands in the way (or ``--whole-gpu``), it
drains the GPU, waits for its jobs (or requeues them with --force), runs the
nvidia-smi commands largest instance first, reads the inventory again and resumes.
"""
from __future__ import annotations

import time
from typing import Any

from ds01q.db import store
from ds01q.errors import InventoryError, NotFound, RequestError
from ds01q.mig.smi import MigController
from ds01q.mig.planner import ANY, Plan, make_plan, mig_commands
from ds01q.mig.profiles import require_model
from ds01q.services.mig_recut import Reader, apply_recut, default_reader, parse_layout, plan_gpu
from ds01q.services.context import Caller, Context
from ds01q.inventory.sync import set_drain
from ds01q.db.jobstate import request_stop
from ds01q.types import FULL_PROFILE, JobState, RequestKind, StopOutcome
from ds01q.units import parse_duration


def demand(session: Any) -> list[str]:
    out: list[str] = []
    for job in store.jobs_in(session, (JobState.PENDING.value, JobState.HELD.value)):
        req = store.request_of(job)
        if req.kind == RequestKind.MIG and req.profile:
            out.append(req.profile)
        elif req.kind == RequestKind.ANY:
            out.append(ANY)
        elif req.kind == RequestKind.GPUS:
            out.extend([FULL_PROFILE] * req.count)
    out.extend(a.profile for a in store.active_allocations(session))
    return out


def plans(ctx: Context, gpu: str | None) -> list[tuple[Plan, list[int]]]:
    with ctx.sessions() as session:
        gpus = [g for g in store.all_gpus(session) if g.present and (gpu is None or g.uuid == gpu)]
        if gpu is not None and not gpus:
            raise NotFound(f"{gpu} is not a GPU in the inventory (see `ds01q status`)")
        want = demand(session)
        slices = store.present_slices(session)
        allocs = store.active_allocations(session)
    out = []
    for g in gpus:
        current = [s.profile for s in slices if s.gpu_uuid == g.uuid]
        jobs = sorted({a.job_id for a in allocs if a.gpu_uuid == g.uuid})
        out.append((make_plan(g.index, g.uuid, g.name, current, want, cost=jobs), jobs))
    return out


def _partial(ctx: Context, p: Plan, read: Reader | None) -> dict[str, Any]:
    """The partial re-cut of a plan: keep/steps, or why it needs the whole GPU."""
    try:
        rplan, rec = plan_gpu(ctx, p.gpu_uuid, list(p.layout), read or default_reader(ctx.config))
    except (InventoryError, NotFound) as e:
        return {"full_drain": True, "why": str(e).splitlines()[0], "blocking": [], "commands": []}
    model = require_model(rec.name)
    d = rplan.to_json()
    d["commands"] = [c for step in rplan.steps for c in step.commands(rec.index, model)]
    return d


def plan(ctx: Context, caller: Caller, a: dict[str, Any], read: Reader | None = None) -> list[dict[str, Any]]:
    ctx.require_admin(caller, "ds01q admin mig plan")
    out = []
    for p, jobs in plans(ctx, a.get("gpu")):
        d = p.to_json()
        d["running_jobs"] = jobs
        d["changes"] = bool(p.commands)
        if p.commands and FULL_PROFILE not in p.layout:
            d["partial"] = _partial(ctx, p, read)
        out.append(d)
    return out


def apply(ctx: Context, caller: Caller, a: dict[str, Any], *, mig: MigController | None = None,
          read: Reader | None = None) -> dict[str, Any]:
    """``mig``/``read``: the nvidia-smi runner and the inventory reader (tests pass the fake's)."""
    ctx.require_admin(caller, "ds01q admin mig apply")
    gpu = a.get("gpu")
    if not isinstance(gpu, str) or not gpu:
        raise RequestError("mig apply needs --gpu UUID (see `ds01q admin mig plan`)")
    timeout = parse_duration(a.get("timeout") or "1h")
    if timeout is None:
        raise RequestError(f"--timeout {a.get('timeout')!r} is not a duration like 30m, 24h, 2d")
    layout = parse_layout(a.get("layout"))
    (p, jobs), = plans(ctx, gpu)
    if layout is not None:
        with ctx.sessions() as session:
            current = [s.profile for s in store.present_slices(session) if s.gpu_uuid == gpu]
        p = Plan(p.gpu_uuid, p.name, tuple(layout), tuple(mig_commands(_index(ctx, gpu), current, layout, p.name)),
                 p.cost)
    why_whole = "--whole-gpu" if a.get("whole_gpu") else ""
    if p.commands and not a.get("whole_gpu") and FULL_PROFILE not in p.layout:
        part = _partial(ctx, p, read)
        if not part["full_drain"]:
            if a.get("dry_run"):
                return {"gpu": gpu, "layout": list(p.layout), "commands": part["commands"], "applied": False,
                        "running_jobs": jobs, "partial": part}
            r = apply_recut(ctx, gpu, list(p.layout), mig=mig, read=read, by=caller.user)
            return {"gpu": gpu, "layout": list(p.layout), "commands": r["commands"], "applied": r["applied"],
                    "running_jobs": jobs, "partial": part}
        why_whole = f"whole-GPU drain: {part['why']}" + (
            f" (busy: {', '.join(part['blocking'])})" if part["blocking"] else "")
    if a.get("dry_run") or not p.commands:
        return {"gpu": gpu, "layout": list(p.layout), "commands": list(p.commands), "applied": False,
                "running_jobs": jobs, "whole_gpu": why_whole}
    with ctx.sessions.begin() as session:
        set_drain(session, gpu, True, f"mig apply by {caller.user}", at=ctx.clock.now(), by=caller.user)
    ctx.wake()
    try:
        _empty_gpu(ctx, gpu, bool(a.get("force")), timeout)
        (mig or MigController()).apply_plan(p)
    except Exception as e:
        with ctx.sessions.begin() as session:
            set_drain(session, gpu, True, f"mig apply failed: {str(e).splitlines()[0] if str(e) else e}",
                      at=ctx.clock.now(), by=caller.user)
        raise
    result = ctx.loop.refresh_inventory()
    with ctx.sessions.begin() as session:
        set_drain(session, gpu, False, None, at=ctx.clock.now(), by=caller.user)
    ctx.wake()
    return {"gpu": gpu, "layout": list(p.layout), "commands": list(p.commands), "applied": True,
            "inventory": result, "whole_gpu": why_whole}


def _index(ctx: Context, gpu: str) -> int:
    with ctx.sessions() as session:
        g = next((g for g in store.all_gpus(session) if g.uuid == gpu), None)
    if g is None:
        raise NotFound(f"{gpu} is not a GPU in the inventory (see `ds01q status`)")
    return int(g.index)


def _empty_gpu(ctx: Context, gpu: str, force: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    requeued = False
    while True:
        with ctx.sessions.begin() as session:
            ids = sorted({al.job_id for al in store.active_allocations(session) if al.gpu_uuid == gpu})
            if force and ids and not requeued:
                for job_id in ids:
                    request_stop(session, store.get_job(session, job_id), StopOutcome.LAYOUT_CHANGE,
                                 at=ctx.clock.now(), by="ds01q", detail=f"mig apply --force on {gpu}")
                requeued = True
        if not ids:
            return
        ctx.wake()
        if time.monotonic() > deadline:
            raise InventoryError(f"GPU {gpu} still runs jobs {ids} after the timeout; it stays drained "
                                 "(use --force to requeue them)")
        time.sleep(0.5)
