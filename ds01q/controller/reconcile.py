"""Containers against the database, by label: run after a restart and on every sweep.

``executor.containers()`` lists every job container of this instance, running or exited,
with its launch attempt. Against the jobs that hold slices:

- a STARTING job (not being launched now) whose container of the current attempt exists is
  adopted (running: RUNNING) or its exit is recorded (exited); without a container its
  reservation is forgotten and it waits again. One created but not started is given
  ``SETTLE_S`` first: a daemon killed while it asked the engine to start it leaves a start the
  engine is still carrying out, and forgetting the job then would run it twice (that start, and
  the next attempt's). It is adopted if it starts meanwhile, else removed with the reservation;
- a RUNNING or STOPPING job whose container vanished ends NODE_FAIL ("container vanished")
  and is requeued per policy; one whose container exited has the exit recorded;
- any other container (no job holding slices, an old attempt, a job that ended and whose
  removal failed) is stopped and removed, and reported in the log;
- an allocation still held by a job that no longer holds slices (a leak) is released.

A listing that fails marks the executor down (``Health.executor_error``); the next
successful one clears it. The controller places nothing while the executor is down.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ds01q.db import jobstate, store
from ds01q.errors import Conflict, Ds01qError
from ds01q.executors.base import ExitInfo, Found, Handle
from ds01q.types import JobState

if TYPE_CHECKING:
    from ds01q.controller.loop import Controller

log = logging.getLogger("ds01q.controller")
S = JobState
VANISHED = "container vanished"
NEVER_STARTED = "container created but never started"
SETTLE_S = 10.0  # how long a container seen created, not started, may still be starting (see above)


class Unstarted:
    """Containers of a STARTING job's current attempt seen created, not started: since when (their creation,
    which a restart does not reset, else when this daemon first saw them)."""

    def __init__(self) -> None:
        self.since: dict[str, float] = {}
        self.failed: set[int] = set()  # jobs whose launch failed here with the container created, not started

    def settling(self, found: Found, now: float) -> bool:
        """Is ``found`` still within ``SETTLE_S`` of its creation (a start may be in flight)?"""
        ref = found.handle.ref
        if ref not in self.since:
            self.since[ref] = found.created_at if found.created_at is not None else now
            log.info("container %s is created, not started: a start may be in flight; waiting up to %.0f s",
                     ref[:12], SETTLE_S)
        first = self.since[ref]
        return first <= now < first + SETTLE_S  # (a clock set back past ``first`` ends the wait)

    def keep_only(self, settling: dict[str, int], launching: set[int]) -> None:
        """Forget all but the containers still settling (by ref, with their job ids), and the jobs being launched."""
        self.since = {r: t for r, t in self.since.items() if r in settling}
        self.failed &= set(settling.values()) | launching


@dataclass
class Report:
    adopted: list[int] = field(default_factory=list)
    recorded: list[int] = field(default_factory=list)
    forgotten: list[int] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)
    leaks: list[int] = field(default_factory=list)


def reconcile_containers(ctl: Controller) -> Report | None:
    """One pass; None when the executor could not be listed (it is then marked down)."""
    if getattr(ctl.executor, "reconciles_itself", False):  # several nodes: each agent does it
        ctl.health.executor_up(ctl.clock.now())
        return Report()
    with ctl.lock:
        busy = set(ctl.launching)
        removing = set(ctl.removing)  # ended jobs' containers whose removal is under way (``record_exit``)
    try:
        found = ctl.executor.containers()
    except Ds01qError as e:
        ctl.health.executor_down(str(e), ctl.clock.now())
        return None
    ctl.health.executor_up(ctl.clock.now())
    with ctl.lock:
        busy |= ctl.launching
    by_job: dict[int, list[Found]] = {}
    for f in found:
        by_job.setdefault(f.handle.job_id, []).append(f)
    report = Report()
    exits: list[tuple[int, Handle, ExitInfo]] = []
    keep: set[str] = set()
    settling: dict[str, int] = {}
    now = ctl.clock.now()
    with ctl.txn() as session:
        holding = store.jobs_in(session, store.HOLDING)
        holders = {j.id for j in holding}
        for job_id in sorted({a.job_id for a in store.active_allocations(session)} - holders):
            log.warning("job %s no longer holds slices but its allocation was still active: released", job_id)
            store.release(session, job_id, now)
            report.leaks.append(job_id)
        for job in holding:
            mine = by_job.get(job.id, [])
            if job.id in busy:
                keep.update(f.handle.ref for f in mine)
                continue
            if job.container is not None:
                cur = next((f for f in mine if f.handle.ref == job.container), None)
            else:
                cur = next((f for f in mine if f.attempt == job.launch_attempt and f.started), None)
            if cur is not None:
                keep.add(cur.handle.ref)
            if job.state == S.STARTING.value:
                unstarted = next((f for f in mine if f.attempt == job.launch_attempt and not f.started),
                                 None) if cur is None and job.container is None else None
                if unstarted is not None:
                    if ctl.unstarted.settling(unstarted, now):
                        keep.add(unstarted.handle.ref)
                        settling[unstarted.handle.ref] = job.id
                        continue
                    # never started: forgotten, the container removed below; a try of its own when a launch
                    # of this daemon failed so (``launching.py``), not after a restart (the daemon's doing)
                    ctl._forget(session, job, now, NEVER_STARTED, count=job.id in ctl.unstarted.failed)
                    ctl.unstarted.failed.discard(job.id)
                    report.forgotten.append(job.id)
                    continue
                if cur is None:
                    ctl._forget(session, job, now, "no container after the launch (daemon restarted?)", count=False)
                    report.forgotten.append(job.id)
                    continue
                job.container = cur.handle.ref
                if cur.exit is None:
                    jobstate.transition(session, job, S.RUNNING, at=now, by="ds01q",
                                        reason=f"adopted {cur.handle.ref[:12]}")
                    report.adopted.append(job.id)
                else:
                    exits.append((job.id, cur.handle, cur.exit))
            elif job.container is None:
                continue  # STOPPING before its container started: enforce ends it
            elif cur is None:
                exits.append((job.id, Handle(job.id, job.container), None))  # type: ignore[arg-type]
            elif cur.exit is not None:
                exits.append((job.id, cur.handle, cur.exit))
    for job_id, h, info in exits:
        if info is None:  # not listed: look once more by its id before calling it lost
            try:
                info = ctl.executor.poll(h)
            except Ds01qError as e:
                log.warning("poll of job %s failed: %s", job_id, e)
                continue
            if info is None:
                continue
            if info.exit_code is None:
                info = ExitInfo(None, info.oom_killed, info.finished_at, info.cpu_s, info.max_rss_bytes,
                                error=VANISHED)
                report.vanished.append(job_id)
        try:
            if ctl.record_exit(job_id, h, info) is not None:
                report.recorded.append(job_id)
        except Conflict as e:
            log.info("exit of job %s: %s", job_id, e)
    ctl.unstarted.keep_only(settling, busy)
    with ctl.lock:
        keep |= removing | ctl.removing
    for f in found:
        if f.handle.ref in keep or f.handle.job_id in busy:
            continue
        report.strays.append(f.handle.ref)
        log.warning("container %s (job %s, attempt %s) belongs to no running job: stopping and removing it",
                    f.handle.ref[:12], f.handle.job_id, f.attempt)
        ctl._stop_async(f.handle.job_id, f.handle.ref, remove=True)
    if report.adopted or report.forgotten or report.vanished or report.recorded or report.leaks:
        log.info("reconciled containers: %s", report)
    return report
