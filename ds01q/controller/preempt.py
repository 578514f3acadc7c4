"""Reclaim: stop the borrowing jobs the scheduler named (``CycleResult.victims``).

Each victim gets ``jobstate.request_stop(..., StopOutcome.PREEMPTED)`` in one
transaction; the loop's usual stop path then sends SIGTERM, waits the
executor's ``stop_grace`` and kills, and ``end_run`` records PREEMPTED, which is
requeued. A job submitted with ``--no-requeue`` is cancelled instead. A victim
that is no longer running (it ended, or another writer moved it) is skipped.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from ds01q.db import jobstate
from ds01q.db.models import Job
from ds01q.errors import Conflict
from ds01q.scheduler.snapshot import Victim
from ds01q.types import JobState, StopOutcome

log = logging.getLogger("ds01q.preempt")


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
                detail = "preempted" if requeue else "preempted (--no-requeue)"
                jobstate.request_stop(session, job, outcome, at=now, by="ds01q", detail=detail,
                                      note=f"borrowed slice reclaimed for job {v.for_job} (within its quota)")
                stopped.append(v.job_id)
    except Conflict as e:  # another writer moved a victim: the next pass decides again
        log.info("preemption skipped: %s", e)
        return []
    if stopped:
        log.info("preempting borrowers %s", stopped)
    return stopped
