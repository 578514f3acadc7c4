"""Partial MIG re-cut: change only a GPU's free instances while its busy ones keep running.

``apply_recut`` (called by ``admin mig apply`` and by the automatic mode):
  1. reads the GPU's instances with their placements (NVML) and marks the ones
     that hold an active allocation busy; ``placement.plan_recut`` says what stays,
     what goes and what is created. A plan that needs the whole GPU is returned
     unapplied (``full_drain``): the caller drains the GPU instead.
  2. reserves the slices to be destroyed (a slice drain with reason ``mig re-cut``,
     checked free in the same transaction: no new job may land there);
  3. runs each step's nvidia-smi commands through the ``MigController`` one
     instance at a time, re-reads the inventory after each step and syncs it
     (each step writes a ``recut`` inventory event); a slice that became busy
     since is refused by the driver ("In use by another client") and the re-cut
     stops there, releasing what it reserved;
  4. releases the reservations and wakes the loop.

A crash between steps leaves instances that NVML reports (the next start's
inventory sync records them) and reserved slices: ``release_stale_reservations``
(called when the daemon starts) frees those.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ds01q.config import Config
from ds01q.db import store
from ds01q.db.jobstate import request_stop
from ds01q.db.models import InventoryEvent, Slice
from ds01q.errors import InventoryError, NotFound, RequestError
from ds01q.inventory.nvml import GpuRecord
from ds01q.inventory.sync import sync
from ds01q.mig.placement import Instance, RecutPlan, plan_recut
from ds01q.mig.profiles import is_valid_layout, require_model
from ds01q.mig.smi import MigController
from ds01q.services.context import Context
from ds01q.types import StopOutcome

__all__ = ["RESERVED", "Reader", "default_reader", "plan_gpu", "apply_recut", "release_stale_reservations"]

RESERVED = "mig re-cut"
Reader = Callable[[], Sequence[GpuRecord]]


def default_reader(cfg: Config) -> Reader:
    """Read this node's GPUs the way the loop does: NVML, or the declared ones for a static inventory."""
    def read() -> Sequence[GpuRecord]:
        from ds01q.inventory.static import static_inventory

        if cfg.inventory_source == "static":
            return static_inventory(list(cfg.inventory_gpus), node=cfg.node)
        from ds01q.inventory.nvml import read_nvml

        return read_nvml(node=cfg.node)

    return read


def _record(records: Sequence[GpuRecord], gpu: str) -> GpuRecord:
    for rec in records:
        if rec.uuid == gpu:
            return rec
    raise NotFound(f"{gpu} is not a GPU of this node (see `ds01q status`)")


def _busy(session: Session, gpu: str) -> dict[str, int]:
    return {a.slice_uuid: a.job_id for a in store.active_allocations(session) if a.gpu_uuid == gpu}


def instances(rec: GpuRecord, busy: dict[str, int] | set[str]) -> list[Instance]:
    """The GPU's instances with busy flags; InventoryError when the inventory has no placements."""
    if rec.mig_enabled and rec.slices and not rec.instances:
        raise InventoryError(f"no MIG placements for GPU {rec.uuid}: NVML needs root for GPU instance handles "
                             "(a static inventory must declare start for every instance)")
    return [Instance(i.profile, i.start, i.size, i.gi_id, i.uuid, i.uuid in busy) for i in rec.instances]


def plan_gpu(ctx: Context, gpu: str, target: Sequence[str], read: Reader) -> tuple[RecutPlan, GpuRecord]:
    rec = _record(read(), gpu)
    model = require_model(rec.name)
    if not is_valid_layout(model, list(target)):
        raise RequestError(f"layout {', '.join(target) or '(empty)'} does not fit on {rec.name} "
                           f"(profiles: {', '.join(model.profile_names)}; or full)")
    with ctx.sessions() as session:
        busy = _busy(session, gpu)
    return plan_recut(model, instances(rec, busy), list(target),
                      mig_enabled=rec.mig_enabled), rec


def _event(session: Session, gpu: str, detail: str, now: float, by: str) -> None:
    session.add(InventoryEvent(at=now, kind="recut", uuid=gpu, detail=detail[:400], by=by))


def _sync(ctx: Context, read: Reader, gpu: str, detail: str, by: str) -> list[int]:
    records = read()
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        res = sync(session, records, now, node=ctx.config.node, by=by)
        for job_id in res.failed_jobs:  # never a job of ours; another change under the daemon
            request_stop(session, store.get_job(session, job_id), StopOutcome.LAYOUT_CHANGE, at=now, by=by,
                         detail="mig layout changed", note="mig layout changed: its slice is gone")
        _event(session, gpu, detail, now, by)
    return res.failed_jobs


def _release(session: Session, gpu: str | None) -> list[str]:
    q = select(Slice).where(Slice.drained.is_(True))
    freed = []
    for row in session.scalars(q):
        if (row.drain_reason or "").startswith(RESERVED) and (gpu is None or row.gpu_uuid == gpu):
            row.drained, row.drain_reason = False, None
            freed.append(row.uuid)
    return freed


def release_stale_reservations(ctx: Context) -> list[str]:
    """Free the slices a re-cut reserved and did not finish (the daemon died between steps)."""
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        freed = _release(session, None)
        for uuid in freed:
            session.add(InventoryEvent(at=now, kind="resumed", uuid=uuid, by="ds01q",
                                       detail=f"{RESERVED} did not finish (daemon restarted)"))
    return freed


def _reserve(ctx: Context, gpu: str, plan: RecutPlan, by: str) -> None:
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        busy = _busy(session, gpu)
        taken = [s for s in plan.destroys if s.uuid in busy]
        if taken:
            s = taken[0]
            raise InventoryError(f"slice {s.uuid} was taken by job {busy[s.uuid]} meanwhile; plan again")
        for step in plan.destroys:
            row = session.get(Slice, step.uuid)
            if row is None or not row.present:
                raise InventoryError(f"slice {step.uuid} is no longer in the inventory; plan again")
            row.drained, row.drain_reason = True, f"{RESERVED} to {' + '.join(plan.target)}"
            session.add(InventoryEvent(at=now, kind="drained", uuid=step.uuid, by=by, detail=row.drain_reason))
        _event(session, gpu, f"begin: keep {len(plan.keep)}, " + "; ".join(s.describe() for s in plan.steps),
               now, by)


def apply_recut(ctx: Context, gpu: str, target: Sequence[str], *, mig: MigController | None = None,
                read: Reader | None = None, by: str = "ds01q") -> dict[str, Any]:
    """Re-cut ``gpu`` to ``target`` touching only free instances; see the module docstring.

    Returns ``{"applied", "full_drain", "plan", "steps_done", "inventory"}``; ``full_drain``
    True (and nothing applied) when busy instances stand in the way.
    """
    mig = mig or MigController()
    read = read or default_reader(ctx.config)
    plan, rec = plan_gpu(ctx, gpu, target, read)
    out: dict[str, Any] = {"gpu": gpu, "plan": plan.to_json(), "full_drain": plan.full_drain, "applied": False,
                           "steps_done": 0, "commands": []}
    if plan.full_drain or not plan.steps:
        return out
    model = require_model(rec.name)
    _reserve(ctx, gpu, plan, by)
    ctx.wake()
    done = 0
    try:
        for step in plan.steps:
            if step.action == "destroy":
                with ctx.sessions() as session:
                    job = _busy(session, gpu).get(step.uuid)
                if job is not None:  # the reservation came too late for a job assumed before it
                    raise InventoryError(f"slice {step.uuid} is busy (job {job}); not destroyed")
            commands = step.commands(rec.index, model)
            mig.run_commands(commands)
            out["commands"] += commands
            done += 1
            _sync(ctx, read, gpu, f"step {done}/{len(plan.steps)}: {step.describe()}", by)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        with ctx.sessions.begin() as session:
            _release(session, gpu)
        _sync(ctx, read, gpu, f"stopped after {done}/{len(plan.steps)} steps: {first}", by)
        ctx.wake()
        raise InventoryError(f"mig re-cut of {gpu} stopped after {done} of {len(plan.steps)} steps: {first}") \
            from None
    with ctx.sessions.begin() as session:
        _release(session, gpu)
        _event(session, gpu, f"done: {' + '.join(plan.target)}", ctx.clock.now(), by)
    ctx.wake()
    out.update(applied=True, steps_done=done)
    return out


def parse_layout(value: object) -> list[str] | None:
    """``--layout 2g.10gb,1g.5gb,...`` (a string or a list); None when not given."""
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        raise RequestError("--layout: expected profile names separated by commas, e.g. 2g.10gb,1g.5gb")
    return [x.strip() for x in items]
