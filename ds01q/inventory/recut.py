"""The partial MIG re-cut engine: reserve the slices to go, change one instance at a time through
the ``MigController``, re-read and sync the inventory after each step, release. Used by
``admin mig apply`` (``services/mig_recut.py``) and the automatic mode (``controller/autolayout.py``).

  1. ``instances`` marks the GPU's instances that hold an active allocation busy;
     ``placement.plan_recut`` says what stays, what goes and what is created;
  2. ``run_recut`` reserves the slices to be destroyed (a slice drain with reason
     ``mig re-cut``, checked free in the same transaction: no new job may land there);
  3. runs each step's nvidia-smi commands one instance at a time, re-reads the
     inventory after each step and syncs it (each step writes a ``recut`` inventory
     event); a slice that became busy since is refused by the driver ("In use by
     another client") and the re-cut stops there, releasing what it reserved;
  4. releases the reservations.

A crash between steps leaves instances that NVML reports (the next start's
inventory sync records them) and reserved slices: ``release_stale_reservations``
(called when the daemon starts) frees those.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ds01q.db import store
from ds01q.db.jobstate import request_stop
from ds01q.db.models import InventoryEvent, Slice
from ds01q.errors import InventoryError, NotFound
from ds01q.inventory.nvml import GpuRecord
from ds01q.inventory.sync import sync
from ds01q.mig.placement import Instance, RecutPlan
from ds01q.mig.profiles import require_model
from ds01q.mig.smi import MigController
from ds01q.types import StopOutcome

__all__ = ["RESERVED", "Reader", "Recutter", "record_of", "busy_slices", "instances", "release_stale_reservations"]

RESERVED = "mig re-cut"
Reader = Callable[[], Sequence[GpuRecord]]


def record_of(records: Sequence[GpuRecord], gpu: str) -> GpuRecord:
    for rec in records:
        if rec.uuid == gpu:
            return rec
    raise NotFound(f"{gpu} is not a GPU of this node (see `ds01q status`)")


def busy_slices(session: Session, gpu: str) -> dict[str, int]:
    """Slice uuid -> job id of the GPU's active allocations."""
    return {a.slice_uuid: a.job_id for a in store.active_allocations(session) if a.gpu_uuid == gpu}


def instances(rec: GpuRecord, busy: dict[str, int] | set[str],
              recorded: Sequence[Instance] | None = None) -> list[Instance]:
    """The GPU's instances with busy flags. Where the record has no placements (NVML without root),
    the ones the inventory recorded (``sync.recorded_instances``) for exactly these slices; else
    InventoryError."""
    insts: Sequence[Instance] = rec.instances
    if rec.mig_enabled and rec.slices and not insts:
        if recorded is None or {i.uuid for i in recorded} != {s.uuid for s in rec.slices}:
            raise InventoryError(f"no MIG placements for GPU {rec.uuid}: NVML needs root for GPU instance handles "
                                 "(a static inventory must declare start for every instance)")
        insts = recorded
    return [Instance(i.profile, i.start, i.size, i.gi_id, i.uuid, i.uuid in busy) for i in insts]


def _event(session: Session, gpu: str, detail: str, now: float, by: str) -> None:
    session.add(InventoryEvent(at=now, kind="recut", uuid=gpu, detail=detail[:400], by=by))


def _release(session: Session, gpu: str | None) -> list[str]:
    freed = []
    for row in session.scalars(select(Slice).where(Slice.drained.is_(True))):
        if (row.drain_reason or "").startswith(RESERVED) and (gpu is None or row.gpu_uuid == gpu):
            row.drained, row.drain_reason = False, None
            freed.append(row.uuid)
    return freed


def release_stale_reservations(sessions: sessionmaker[Session], now: float) -> list[str]:
    """Free the slices a re-cut reserved and did not finish (the daemon died between steps)."""
    with sessions.begin() as session:
        freed = _release(session, None)
        for uuid in freed:
            session.add(InventoryEvent(at=now, kind="resumed", uuid=uuid, by="ds01q",
                                       detail=f"{RESERVED} did not finish (daemon restarted)"))
    return freed


class Recutter:
    """Runs one ``RecutPlan`` on one node: ``sessions`` and ``now`` from the caller, ``read`` the inventory."""

    def __init__(self, sessions: sessionmaker[Session], now: Callable[[], float], node: str, read: Reader,
                 mig: MigController | None = None, by: str = "ds01q") -> None:
        self.sessions, self.now, self.node, self.read = sessions, now, node, read
        self.mig = mig or MigController()
        self.by = by

    def sync(self, gpu: str, detail: str) -> None:
        """Re-read the inventory, sync this node, and write a ``recut`` event."""
        records = self.read()
        now = self.now()
        with self.sessions.begin() as session:
            res = sync(session, records, now, node=self.node, by=self.by)
            for job_id in res.failed_jobs:  # never a job of ours; another change under the daemon
                request_stop(session, store.get_job(session, job_id), StopOutcome.LAYOUT_CHANGE, at=now,
                             by=self.by, detail="mig layout changed", note="mig layout changed: its slice is gone")
            _event(session, gpu, detail, now, self.by)

    def _reserve(self, gpu: str, plan: RecutPlan) -> None:
        now = self.now()
        with self.sessions.begin() as session:
            busy = busy_slices(session, gpu)
            taken = [s for s in plan.destroys if s.uuid in busy]
            if taken:
                s = taken[0]
                raise InventoryError(f"slice {s.uuid} was taken by job {busy[s.uuid]} meanwhile; plan again")
            for step in plan.destroys:
                row = session.get(Slice, step.uuid)
                if row is None or not row.present:
                    raise InventoryError(f"slice {step.uuid} is no longer in the inventory; plan again")
                row.drained, row.drain_reason = True, f"{RESERVED} to {' + '.join(plan.target)}"
                session.add(InventoryEvent(at=now, kind="drained", uuid=step.uuid, by=self.by,
                                           detail=row.drain_reason))
            _event(session, gpu, f"begin: keep {len(plan.keep)}, " + "; ".join(s.describe() for s in plan.steps),
                   now, self.by)

    def run(self, rec: GpuRecord, plan: RecutPlan, wake: Callable[[], None] = lambda: None) -> dict[str, Any]:
        """Apply ``plan`` (not a full drain) to ``rec``'s GPU; see the module docstring."""
        gpu, model = rec.uuid, require_model(rec.name)
        self._reserve(gpu, plan)
        wake()
        done, commands = 0, []
        try:
            for step in plan.steps:
                if step.action == "destroy":
                    with self.sessions() as session:
                        job = busy_slices(session, gpu).get(step.uuid)
                    if job is not None:  # the reservation came too late for a job assumed before it
                        raise InventoryError(f"slice {step.uuid} is busy (job {job}); not destroyed")
                cmds = step.commands(rec.index, model)
                self.mig.run_commands(cmds)
                commands += cmds
                done += 1
                self.sync(gpu, f"step {done}/{len(plan.steps)}: {step.describe()}")
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            with self.sessions.begin() as session:
                _release(session, gpu)
            self.sync(gpu, f"stopped after {done}/{len(plan.steps)} steps: {first}")
            wake()
            raise InventoryError(f"mig re-cut of {gpu} stopped after {done} of {len(plan.steps)} steps: {first}") \
                from None
        with self.sessions.begin() as session:
            _release(session, gpu)
            _event(session, gpu, f"done: {' + '.join(plan.target)}", self.now(), self.by)
        wake()
        return {"gpu": gpu, "applied": True, "steps_done": done, "commands": commands}
