"""How the loop starts a placed job: ``assume`` reserves its slices and moves it to STARTING in one
transaction; the container is launched after that commits (on a launch thread), and recorded RUNNING
only while the job is still STARTING. A failed launch forgets the reservation (``_forget``): the job
waits again with backoff, or ends FAILED after ``MAX_LAUNCH_TRIES``. A launch whose container started
although the engine's answer was lost adopts that container: the job never runs twice.

A part of ``Controller`` (controller/loop.py): its methods use the controller's state and helpers.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ds01q.controller.exits import one_line
from ds01q.controller.health import Health
from ds01q.controller.launch import launch_spec
from ds01q.controller.reconcile import Unstarted
from ds01q.db import jobstate, store
from ds01q.db.models import Job
from ds01q.errors import Conflict, Ds01qError
from ds01q.executors.base import ExitInfo, Found, Handle
from ds01q.faultpoints import crash_point
from ds01q.scheduler.snapshot import CycleResult, Placement
from ds01q.types import JobState, Reason

log = logging.getLogger("ds01q.controller")
MAX_LAUNCH_TRIES = 3
S = JobState


class Launching:
    """Reserves, launches and forgets reservations (a part of ``Controller``)."""

    inline: bool
    executor: Any
    clock: Any
    health: Health
    lock: threading.Lock
    exited: set[int]
    launching: set[int]
    persisted: dict[int, tuple[Any, ...]]
    _last_cycle: CycleResult | None
    unstarted: Unstarted
    deps: Any
    config: Any

    def assume(self, p: Placement, now: float) -> bool:
        """Reserve ``p``'s slices and move its job to STARTING, in one transaction."""
        try:
            with self.txn() as session:  # Core statements: this runs for every job
                slices = store.usable_slices(session, p.slices)
                if slices is None:
                    return False
                last = self._last_cycle
                # the CAS counts the launch attempt, which names this attempt's container: a relaunch finds it
                if not jobstate.assumed(session, p.job_id, priority=last.priorities.get(p.job_id) if last else None,
                                        node=slices[0].node if slices else (p.node or self.config.node), at=now,
                                        reason="allocated " + (",".join(p.slices) or "no GPU")):
                    return False
                store.allocate(session, p.job_id, slices, now)  # a slice held already: IntegrityError
            self.persisted.pop(p.job_id, None)
            return True
        except IntegrityError:
            log.error("database refused a double allocation for job %s on %s", p.job_id, p.slices)
            return False
        except Conflict as e:
            log.info("assume of job %s: %s", p.job_id, e)
            return False

    def _launch_async(self, job_id: int) -> None:
        with self.lock:
            self.launching.add(job_id)
        self.run_async(self.launch, job_id)

    def launch(self, job_id: int) -> None:
        """Start the container of a STARTING job; any failure forgets the reservation. The loop is woken
        afterwards unless the job simply went RUNNING: a pass then has nothing new to do (the slices were
        reserved at the assume)."""
        running = False
        try:
            with self.session() as session:
                job = store.get_job(session, job_id)
                if job.state != S.STARTING.value:  # cancelled meanwhile: nothing to start
                    return
                allocs = store.allocations_of(session, job_id)
            try:  # building the spec (spooling the script, parsing its #!) is part of the launch
                h = self.executor.launch(launch_spec(self.config, job, allocs, self._cgroup_driver()))
            except Exception as e:  # ExecutorError, OSError while spooling, a bad #! line, ...
                reachable, found = self._after_failed_launch(job)
                if found is None:
                    self._launch_failed(job_id, one_line(e), count=reachable)
                    return
                if not found.started:  # the job stays STARTING: the sweep adopts the container or forgets it
                    self.unstarted.failed.add(job_id)
                    log.warning("launch of job %s failed (%s); its container %s is created, not started (yet?)",
                                job_id, one_line(e), found.handle.ref[:12])
                    return
                log.warning("launch of job %s failed (%s), yet its container %s started: adopted", job_id,
                            one_line(e), found.handle.ref[:12])
                h = found.handle
            crash_point("start")  # container started, RUNNING not yet recorded (tests/faults)
            running = self._launched(job_id, h)
        except OperationalError as e:  # the database locked, full or read-only: the container sweep adopts it
            log.warning("launch of job %s: the database refused its record (%s); the container sweep adopts it",
                        job_id, " ".join(str(e.orig).split())[:200])
        except Exception:
            log.exception("launch of job %s failed", job_id)
        finally:
            with self.lock:
                self.launching.discard(job_id)
                exited = not self.inline and job_id in self.exited
                if exited:
                    self.exited.discard(job_id)
            if exited:  # its container exited before the launch was recorded (a short job): record it now
                self.on_exit(job_id)
            elif not running:  # failed, cancelled meanwhile, or skipped: a pass looks at it now
                self.wake()

    def _launched(self, job_id: int, h: Handle) -> bool:
        """Record the started container; True when the job went from STARTING to RUNNING."""
        with self.txn() as session:
            state = jobstate.launched(session, job_id, h.ref, at=self.clock.now(), by="ds01q")
        if state is None:  # the job moved on while its container started: never let it run
            self._stop_async(job_id, h.ref, remove=True)
        return state == S.RUNNING

    def _after_failed_launch(self, job: Job) -> tuple[bool, Found | None]:
        """After a failed launch: is the executor there at all (a launch that failed because the
        engine is down does not count against the job's tries, and marks the executor down)? And
        does this attempt's container exist anyway? Started (the engine started it, its answer was
        lost), it is adopted: forgetting the job would start it a second time. Created and not
        started, the engine may still be starting it: the container sweep settles that."""
        try:
            found = self.executor.containers()
        except Ds01qError as e:
            self.health.executor_down(str(e), self.clock.now())
            return False, None
        mine = [f for f in found if f.handle.job_id == job.id and f.attempt == job.launch_attempt]
        return True, next((f for f in mine if f.started), None) or next(iter(mine), None)

    def _cgroup_driver(self) -> str | None:
        """The configured driver; "auto" (the engine was down when the daemon started): the engine's."""
        driver = self.deps.cgroup_driver
        return self.executor.cgroup_driver() if driver == "auto" else driver  # type: ignore[attr-defined]

    def _launch_failed(self, job_id: int, msg: str, count: bool = True) -> None:
        with self.txn() as session:
            job = store.get_job(session, job_id)
            now = self.clock.now()
            if job.state == S.STARTING.value:
                self._forget(session, job, now, f"launch failed: {msg}", count=count)
            elif job.state == S.STOPPING.value:
                self._end(session, job, ExitInfo(None, False, None, None, None, f"launch failed: {msg}"), now)

    def _forget(self, session: Session, job: Job, now: float, why: str, count: bool = True) -> None:
        """Undo a reservation: release the slices, back to PENDING with backoff, or FAILED after retries."""
        store.release(session, job.id, now)
        if count:
            job.requeue_count += 1
        if count and job.requeue_count >= MAX_LAUNCH_TRIES:
            job.end_reason = why
            jobstate.transition(session, job, S.FAILED, at=now, by="ds01q", reason=why)
            self._account_end(session, job, now)
            return
        jobstate.transition(session, job, S.PENDING, at=now, by="ds01q", reason=why)
        backoff = self.config.executor.launch_backoff_s * 2 ** job.requeue_count
        job.eligible_at = now + min(300.0, backoff) if count else 0.0
        job.reason = Reason.RESOURCES
