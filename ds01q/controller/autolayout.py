"""Automatic MIG layouts (``mig.auto``): after a pass in which jobs wait for slices, ask
``mig.auto.propose`` for the one re-cut of free instances that starts the most waiting work,
with the config's hysteresis (per-GPU minimum interval, minimum gain, re-cuts per day).

``propose-only`` writes each new proposal as a ``mig-proposal`` inventory event (shown by
``ds01q status``) and applies nothing. ``on`` applies it through ``inventory.recut.Recutter``
(the same MigController path as ``admin mig apply``) on the loop's worker pool; a MIG mode
change is proposed only for an idle GPU and applied by the same nvidia-smi commands. A
running job is never stopped: busy instances always stay (``placement.plan_recut``).
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ds01q.config import Config
from ds01q.db import store
from ds01q.db.models import InventoryEvent
from ds01q.inventory.nvml import GpuRecord
from ds01q.errors import InventoryError
from ds01q.inventory.recut import RESERVED, Recutter, busy_slices, instances
from ds01q.inventory.sync import recorded_instances, set_drain
from ds01q.mig.auto import GpuView, Proposal, propose
from ds01q.mig.placement import Instance
from ds01q.mig.planner import ANY
from ds01q.mig.profiles import gpu_model
from ds01q.mig.smi import MigController
from ds01q.scheduler.snapshot import CycleResult
from ds01q.types import FULL_PROFILE, JobState, Reason, RequestKind

log = logging.getLogger("ds01q.autolayout")
WAITING = (Reason.RESOURCES, Reason.NEVER_FITS, Reason.PRIORITY)
CHECK_EVERY_S = 30.0


def demand(session: Session, result: CycleResult) -> Counter[str]:
    """What the jobs waiting for slices ask for: profile, "any", or "full" per whole GPU."""
    out: Counter[str] = Counter()
    for job in store.jobs_in(session, (JobState.PENDING.value,)):
        info = result.pending.get(job.id)
        if info is None or info.reason not in WAITING:
            continue
        req = store.request_of(job)
        if req.kind == RequestKind.MIG and req.profile:
            out[req.profile] += 1
        elif req.kind == RequestKind.ANY:
            out[ANY] += 1
        elif req.kind == RequestKind.GPUS:
            out[FULL_PROFILE] += req.count
    return out


def views(records: Sequence[GpuRecord], busy: set[str], drained: set[str],
          recorded: Mapping[str, Sequence[Instance] | None] | None = None) -> list[GpuView]:
    """The proposer's view of each GPU; placements from the record, else the recorded ones."""
    out = []
    for rec in records:
        model = gpu_model(rec.name)
        if model is None or rec.uuid in drained:
            continue  # no MIG table, or drained by an admin
        try:
            found = instances(rec, busy, (recorded or {}).get(rec.uuid))
        except InventoryError:
            continue  # no placements anywhere (NVML without privileges, nothing recorded)
        insts = tuple(found)
        out.append(GpuView(rec.uuid, model.key, rec.mig_enabled, insts,
                           busy_full=not rec.mig_enabled and rec.uuid in busy, index=rec.index))
    return out


class AutoLayout:
    """Holds the re-cut history (for hysteresis) and the last proposal between passes."""

    def __init__(self, mig: MigController | None = None) -> None:
        self.mig = mig or MigController()
        self.history: dict[str, list[float]] = {}
        self.last: Proposal | None = None
        self.last_check = -1e18
        self.busy = threading.Lock()  # one re-cut at a time

    def step(self, cfg: Config, sessions: sessionmaker[Session], result: CycleResult, now: float,
             read: Callable[[], Sequence[GpuRecord]], run_async: Callable[..., None],
             wake: Callable[[], None], clock: Callable[[], float]) -> Proposal | None:
        if cfg.mig_auto == "off" or now - self.last_check < CHECK_EVERY_S or self.busy.locked():
            return None
        with sessions() as session:
            want = demand(session, result)
            if not want:
                return None
            self.last_check = now
            held = {a.slice_uuid for a in store.active_allocations(session)}
            held.update(u for p in result.placements for u in p.slices)  # this pass's starts are not free
            gpus = store.all_gpus(session)
            drained = {g.uuid for g in gpus if g.drained}
            recorded = {g.uuid: recorded_instances(session, g.uuid) for g in gpus if g.present and g.mig_enabled}
        records = list(read())
        proposal = propose(views(records, held, drained, recorded), want, self.history, now, cfg.mig_auto_params)
        if proposal is None:
            return None
        self.history.setdefault(proposal.gpu, []).append(now)
        self.last = proposal
        with sessions.begin() as session:
            kind = "mig-proposal" if cfg.mig_auto == "propose-only" else "mig-auto"
            session.add(InventoryEvent(at=now, kind=kind, uuid=proposal.gpu, detail=proposal.describe()[:400],
                                       by="ds01q"))
        if cfg.mig_auto == "on":
            rec = next(r for r in records if r.uuid == proposal.gpu)
            self.busy.acquire()
            run_async(self._apply, cfg, sessions, rec, proposal, read, wake, clock)
        return proposal

    def _apply(self, cfg: Config, sessions: sessionmaker[Session], rec: GpuRecord, proposal: Proposal,
               read: Callable[[], Sequence[GpuRecord]], wake: Callable[[], None],
               clock: Callable[[], float]) -> dict[str, Any] | None:
        try:
            recutter = Recutter(sessions, clock, cfg.node, read, self.mig)
            if proposal.plan is not None:
                return recutter.run(rec, proposal.plan, wake)
            return self._mode_change(sessions, rec, proposal, recutter, clock)
        except Exception as e:  # the loop goes on; the events say what happened
            log.warning("auto re-cut of %s failed: %s", rec.uuid, e)
            return None
        finally:
            self.busy.release()
            wake()

    def _mode_change(self, sessions: sessionmaker[Session], rec: GpuRecord, proposal: Proposal, recutter: Recutter,
                     clock: Callable[[], float]) -> dict[str, Any] | None:
        """MIG on or off for an idle GPU: drain it (checked idle in the same transaction), run the
        whole-GPU commands, sync, resume."""
        with sessions.begin() as session:
            if busy_slices(session, rec.uuid):
                log.info("auto re-cut of %s skipped: it got busy", rec.uuid)
                return None
            set_drain(session, rec.uuid, True, f"{RESERVED} to {' + '.join(proposal.target)}", at=clock(), by="ds01q")
        try:
            commands = self.mig.apply(rec.index, rec.layout, list(proposal.target), gpu_name=rec.name)
        finally:
            recutter.sync(rec.uuid, f"mode change to {' + '.join(proposal.target)}")
            with sessions.begin() as session:
                set_drain(session, rec.uuid, False, None, at=clock(), by="ds01q")
        return {"gpu": rec.uuid, "applied": True, "commands": commands}
