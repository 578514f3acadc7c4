"""`ds01q status` (GPUs, slices, who runs where) and `ds01q limits` (my group, limits, use)."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ds01q.db import nodes, store
from ds01q.errors import RequestError
from ds01q.services import baremetal
from ds01q.services.context import Caller, Context, NoLoop
from ds01q.inventory.sync import set_drain
from ds01q.units import iso
from ds01q.types import JobState
from ds01q.units import format_duration


def status(ctx: Context, caller: Caller, a: dict[str, Any]) -> dict[str, Any]:
    with ctx.sessions() as session:
        gpus = [g for g in store.all_gpus(session) if g.present]
        slices = store.present_slices(session)
        allocs = {al.slice_uuid: al for al in store.active_allocations(session)}
        jobs = {j.id: j for j in store.jobs_in(session, store.HOLDING)}
    out = []
    for g in gpus:
        entry = {"uuid": g.uuid, "name": g.name, "node": g.node, "index": g.index, "mig": g.mig_enabled,
                 "drained": g.drained, "drain_reason": g.drain_reason, "utilization": g.utilization, "slices": []}
        for s in (s for s in slices if s.gpu_uuid == g.uuid):
            al = allocs.get(s.uuid)
            job = jobs.get(al.job_id) if al else None
            state = "drained" if (s.drained or g.drained) else ("busy" if al else "free")
            entry["slices"].append({
                "uuid": s.uuid, "profile": s.profile, "compute_slices": s.compute_slices,
                "gpu_compute_slices": s.gpu_compute_slices, "memory_mb": s.memory_mb, "state": state,
                "drain_reason": s.drain_reason, "job": job.id if job else None, "user": job.user if job else None,
                "placement": None if s.placement_start is None else
                {"start": s.placement_start, "size": s.placement_size, "gi_id": s.gi_id},
            })
        out.append(entry)
    with ctx.sessions() as session:
        events = store.inventory_events(session, limit=int(a.get("events", 20)))
        node_rows = [{"name": n.name, "state": n.state, "reason": n.reason, "last_heartbeat": iso(n.last_heartbeat),
                      "running": len(nodes.running_of(n))} for n in nodes.all_nodes(session)]
    health = ctx.loop.loop_health()
    result = {"gpus": out, "nodes": node_rows, "pending": _count(ctx, JobState.PENDING), "daemon": health,
              "events": [{"at": iso(e.at), "kind": e.kind, "uuid": e.uuid, "detail": e.detail, "by": e.by}
                         for e in events]}
    watch = baremetal.watch_for(ctx)
    if watch is not None:  # GPU processes of no ds01q job, with their users
        result["foreign_gpu_processes"] = watch.latest()["processes"]
    return result


def _count(ctx: Context, state: JobState) -> int:
    with ctx.sessions() as session:
        return len(store.jobs_in(session, (state.value,)))


def limits(ctx: Context, caller: Caller, a: dict[str, Any]) -> dict[str, Any]:
    user = a.get("user") or caller.user
    if user != caller.user and not caller.admin:
        raise RequestError("you may see only your own limits; admins may see anyone's")
    cfg = ctx.config
    group = cfg.group_of(user)
    lim = cfg.limits_for(user)
    with ctx.sessions() as session:
        running = [j for j in store.jobs_in(session, store.HOLDING) if j.user == user]
        pending = store.count_jobs(session, user, (JobState.PENDING.value, JobState.HELD.value))
        allocs = [al for al in store.active_allocations(session) if al.job_id in {j.id for j in running}]
    d = asdict(lim)
    d["allowed_profiles"] = sorted(lim.allowed_profiles) if lim.allowed_profiles is not None else None
    d["max_runtime"] = format_duration(d.pop("max_runtime_s"))
    return {
        "user": user, "group": group.name, "priority": group.priority, "admin": cfg.is_admin(user, -1),
        "limits": d, "idle_timeout": format_duration(group.idle_timeout_s) if group.idle_timeout_s else None,
        "use": {"gpus": round(sum(al.gpu_equiv for al in allocs), 3), "slices": len(allocs),
                "running_jobs": len(running), "queued_jobs": pending,
                "interactive": sum(1 for j in running if j.interactive)},
    }


def drain(ctx: Context, caller: Caller, a: dict[str, Any], on: bool) -> dict[str, Any]:
    ctx.require_admin(caller, "ds01q admin drain" if on else "ds01q admin resume")
    uuid = a.get("uuid")
    if not isinstance(uuid, str) or not uuid:
        raise RequestError("give a node name or the UUID of a GPU or slice (see `ds01q status`)")
    with ctx.sessions.begin() as session:
        node = nodes.get(session, uuid)
        if node is not None:  # `ds01q admin drain NODE`: the scheduler places nothing there
            if on:
                nodes.set_state(session, node, nodes.DRAINED, a.get("reason") or ("drained by " + caller.user))
            elif node.state == nodes.DRAINED:
                nodes.set_state(session, node, nodes.UP, None)  # a silent node goes DOWN at the next tick
            kind = "node"
        else:
            kind = set_drain(session, uuid, on, a.get("reason") or ("drained by " + caller.user),
                             at=ctx.clock.now(), by=caller.user)
    ctx.wake()
    return {"uuid": uuid, "kind": kind, "drained": on}


def refresh(ctx: Context, caller: Caller, a: dict[str, Any]) -> dict[str, Any]:
    ctx.require_admin(caller, "ds01q admin inventory refresh")
    if isinstance(ctx.loop, NoLoop):
        raise RequestError("the inventory cannot be refreshed: no controller is running")
    return ctx.loop.refresh_inventory()
