"""How the loop records a container's end: the executor's exit event, recorded at once on an exit thread
(``on_exit``), or by the reap of a pass (an exit flagged, or the sweep every ``SWEEP_EVERY_S``). An exit is
recorded once (``record_exit``: only while the job holds slices with that container); the container is
removed afterwards, apart from the launches (the slices are free already).

A part of ``Controller`` (controller/loop.py): its methods use the controller's state and helpers.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from ds01q import accounting
from ds01q.controller.health import Health
from ds01q.db import jobstate, store
from ds01q.db.models import Job
from ds01q.errors import Conflict, Ds01qError
from ds01q.executors.base import ExitInfo, Handle
from ds01q.faultpoints import crash_point
from ds01q.types import JobState

log = logging.getLogger("ds01q.controller")
S = JobState


def one_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text or type(e).__name__


class ExitRecording:
    """Records exits and removes ended containers (a part of ``Controller``)."""

    inline: bool
    executor: Any
    clock: Any
    health: Health
    lock: threading.Lock
    stop_event: threading.Event
    exited: set[int]  # exits seen, for the next pass's reap
    launching: set[int]
    stopping: set[int]
    removing: set[str]
    exits: ThreadPoolExecutor
    cleanup: ThreadPoolExecutor
    config: Any

    def on_exit(self, job_id: int) -> None:
        """A container of ``job_id`` exited (the executor's event). Recorded on an exit thread at once,
        several in parallel (the engine answers an inspect only after its clean-up of that container),
        then the loop is woken to use the freed slices; ``inline``: by the next tick's reap."""
        if self.inline or self.stop_event.is_set():
            self._flag_exit(job_id)
        else:
            self._submit_exit(job_id)

    def _submit_exit(self, job_id: int) -> None:
        try:
            self.exits.submit(self._exit_seen, job_id)
        except RuntimeError:  # shutting down: the reap (or recovery after a restart) does it
            self._flag_exit(job_id)

    def _flag_exit(self, job_id: int) -> None:
        with self.lock:
            self.exited.add(job_id)
        self.wake()

    def _exit_seen(self, job_id: int) -> None:
        """Record the exit of ``job_id``'s container if its job is RUNNING or STOPPING; what cannot be
        settled here (its launch is not recorded yet, the engine did not answer) is left to the reap."""
        try:
            with self.lock:
                launching = job_id in self.launching
            if launching:
                self._flag_exit(job_id)
                return
            with self.session() as session:
                found = store.state_and_container(session, job_id)
            ref = found[1] if found is not None and found[0] in (S.RUNNING.value, S.STOPPING.value) else None
            if ref is None:  # ended already, or not started: nothing of this job's to record
                with self.lock:
                    launching = job_id in self.launching
                if launching:  # relaunched meanwhile: the reap looks after the launch
                    self._flag_exit(job_id)
                return
            h = Handle(job_id=job_id, ref=ref)
            info = self.executor.poll(h)
            if info is not None:
                self.record_exit(job_id, h, info)
            self.wake()
        except Ds01qError:  # the engine did not answer: the reap retries it (and says so)
            self._flag_exit(job_id)
        except Exception as e:  # the reap retries it
            log.warning("exit of job %s not recorded yet: %s", job_id, one_line(e))
            self._flag_exit(job_id)

    def reap(self, full: bool) -> None:
        with self.lock:
            flagged, self.exited = self.exited, set()
        if not flagged and not full:  # nothing seen exit, no sweep due
            return
        with self.session() as session:
            rows = [j for j in store.jobs_in(session, (S.RUNNING.value, S.STOPPING.value)) if j.container]
        if full:
            self.last_sweep = self.clock.now()
        with self.lock:  # an exit may come before its launch is recorded: look again after the launch
            self.exited |= flagged & self.launching
        for job in rows:
            if job.id in self.launching or not (full or job.id in flagged):
                continue
            if job.id not in flagged and not self.inline:  # the sweep: polled on the exit threads, in parallel
                self._submit_exit(job.id)
                continue
            h = Handle(job_id=job.id, ref=job.container or "")
            try:
                info = self.executor.poll(h)
            except Ds01qError as e:
                log.warning("poll of job %s failed: %s", job.id, e)
                continue
            if info is not None:
                self.record_exit(job.id, h, info)

    def record_exit(self, job_id: int, h: Handle, info: ExitInfo) -> JobState | None:
        """Record how the container ``h`` of job ``job_id`` ended (once), then remove it."""
        crash_point("exit")  # container exited, exit not yet recorded (tests/faults)
        now = self.clock.now()
        try:
            with self.txn() as session:
                job = store.get_job(session, job_id)
                if job.container != h.ref or not JobState(job.state).holds_slices:
                    return None
                state = self._end(session, job, info, now)
        except Conflict as e:
            log.info("exit of job %s: %s", job_id, e)
            return None
        with self.lock:
            self.stopping.discard(job_id)
        if self.inline:
            self._remove(job_id, h.ref)
        else:  # the exit is committed and the slices are free: the next launch need not wait for the removal
            with self.lock:
                self.removing.add(h.ref)
            try:
                self.cleanup.submit(self._remove, job_id, h.ref)
            except RuntimeError:  # shutting down: the container sweep after a restart removes it
                with self.lock:
                    self.removing.discard(h.ref)
        return state

    def _remove(self, job_id: int, ref: str) -> None:
        """Remove a finished job's container; a failure is retried by the container sweep
        (``reconcile_containers`` removes every container whose job no longer holds slices)."""
        try:
            self.executor.remove(Handle(job_id=job_id, ref=ref))
        except Exception as e:  # Ds01qError, or anything else on the removal thread: the sweep retries
            log.warning("remove of job %s failed (the container sweep retries it): %s", job_id, one_line(e))
        finally:
            with self.lock:
                self.removing.discard(ref)

    def _end(self, session: Session, job: Job, info: ExitInfo, now: float) -> JobState:
        if job.stop_outcome is None and self.health.killed_in_outage(info.exit_code, info.finished_at):
            info = replace(info, exit_code=None, error="container stopped by a Docker engine restart")
        # charge the container's own start and finish times when the executor knows them
        begin = job.started_at if job.started_at is not None else job.submitted_at
        if info.started_at is not None and job.submitted_at <= info.started_at <= now:
            job.started_at = begin = info.started_at
        if info.finished_at is not None and begin <= info.finished_at <= now:
            now = info.finished_at
        state = jobstate.end_run(session, job, exit_code=info.exit_code, oom=info.oom_killed, at=now,
                                 error=info.error, cpu_s=info.cpu_s, max_rss_bytes=info.max_rss_bytes)
        self._account_end(session, job, now)
        if jobstate.wants_requeue(job, state):
            jobstate.requeue(session, job, at=now, why=f"requeued: {job.end_reason or state.value}")
        return state

    def _account_end(self, session: Session, job: Job, now: float) -> None:
        accounting.on_job_end(session, job, store.allocations_of(session, job.id, active_only=False), now,
                              cgroup_root=self.config.executor.cgroup_root)
