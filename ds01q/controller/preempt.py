"""Reclaim: stop the borrowing jobs the scheduler named (``CycleResult.victims``).

Each victim gets ``jobstate.request_stop(..., StopOutcome.PREEMPTED)`` in one
transaction (a job submitted with ``--no-requeue`` gets CANCELLED with the reason
``NO_REQUEUE_REASON`` instead). The loop's ``enforce`` then asks ``Reclaim.step``
what to do with each such STOPPING job:

1. ``signal``: send the job's ``--signal`` (or SIGTERM) once, through ``executor.signal``;
2. ``wait``: until ``scheduler.preempt_grace`` has passed since the signal;
3. ``kill``: ``executor.stop`` with no further grace (SIGKILL), or with the executor's
   ``stop_grace`` when the signal could not be sent.

A job that exits on its signal is recorded at once (its exit wakes the loop); ``end_run``
records PREEMPTED, which is requeued. The kill time lives in memory: after a restart a
job still STOPPING is signalled again and gets a full grace. A victim that is no longer
running (it ended, or another writer moved it) is skipped.
"""
from __future__ import annotations

import logging
import math
import signal as _signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from ds01q.controller.signals import parse as parse_signal
from ds01q.db import jobstate
from ds01q.db.models import Job
from ds01q.errors import Conflict
from ds01q.scheduler.snapshot import Victim
from ds01q.types import JobState, StopOutcome

log = logging.getLogger("ds01q.preempt")

NO_REQUEUE_REASON = "preempted (--no-requeue)"


def preempt(sessions: sessionmaker[Session], victims: Sequence[Victim], now: float) -> list[int]:
    """Request the stop of every victim still RUNNING or STARTING; returns their ids."""
    if not victims:
        return []
    stopped: list[int] = []
    try:
        with sessions.begin() as session:
            for v in victims:
                job = session.get(Job, v.job_id)
                if job is None or job.state not in (JobState.RUNNING.value, JobState.STARTING.value):
                    continue
                requeue = bool(job.requeue_on_layout_change)
                outcome = StopOutcome.PREEMPTED if requeue else StopOutcome.CANCELLED
                detail = "preempted" if requeue else NO_REQUEUE_REASON
                jobstate.request_stop(session, job, outcome, at=now, by="ds01q", detail=detail,
                                      note=f"borrowed slice reclaimed for job {v.for_job} (within its quota)")
                stopped.append(v.job_id)
    except Conflict as e:  # another writer moved a victim: the next pass decides again
        log.info("preemption skipped: %s", e)
        return []
    if stopped:
        log.info("preempting borrowers %s", stopped)
    return stopped


def is_reclaim(job: Job) -> bool:
    """Is this STOPPING job a preempted borrower (rather than a cancel, a time limit, ...)?"""
    return job.stop_outcome == StopOutcome.PREEMPTED or (
        job.stop_outcome == StopOutcome.CANCELLED and job.end_reason == NO_REQUEUE_REASON)


def job_signal(job: Job) -> tuple[int, bool]:
    """The job's ``--signal`` (number, batch only), else SIGTERM to the main process."""
    sig = parse_signal(job)
    return (sig[0], sig[3]) if sig is not None else (int(_signal.SIGTERM), True)


@dataclass(frozen=True)
class Step:
    """What ``enforce`` does with a preempted job now: ``signal`` (with ``sig``), ``wait`` or
    ``kill`` (``executor.stop`` with ``grace_s``)."""

    action: str
    sig: int = 0
    batch_only: bool = True
    grace_s: float = 0.0


class Reclaim:
    """Preempted jobs between their signal and their kill, by job id. Thread-safe: the signal
    itself is sent on an executor thread, which reports back with ``signalled``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kill_at: dict[int, float] = {}  # absent: not signalled yet
        self._failed: set[int] = set()  # the signal could not be sent: stop the usual way

    def step(self, job: Job, now: float, grace_s: float, stop_grace_s: float) -> Step:
        with self._lock:
            kill_at = self._kill_at.get(job.id)
            if kill_at is None:
                self._kill_at[job.id] = math.inf  # until the signal is known to be sent
                sig, batch_only = job_signal(job)
                return Step("signal", sig=sig, batch_only=batch_only)
            if job.id in self._failed:
                return Step("kill", grace_s=stop_grace_s)
            if now < kill_at:
                return Step("wait")
            return Step("kill", grace_s=0.0)

    def signalled(self, job_id: int, ok: bool, now: float, grace_s: float) -> None:
        """The signal was sent (``ok``) at ``now``: the kill is due ``grace_s`` later; or it failed."""
        with self._lock:
            if job_id not in self._kill_at:
                return
            self._kill_at[job_id] = now + grace_s if ok else now
            if not ok:
                self._failed.add(job_id)

    def keep_only(self, stopping: set[int]) -> None:
        """Forget the jobs that are no longer STOPPING."""
        with self._lock:
            for job_id in [j for j in self._kill_at if j not in stopping]:
                del self._kill_at[job_id]
                self._failed.discard(job_id)
