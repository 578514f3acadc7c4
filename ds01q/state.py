"""The job state machine. Every change goes through ``transition()``, which
checks the edge and appends a ``job_events`` row in the caller's transaction.

::

    submit ─▶ PENDING ──allocate──▶ STARTING ──launched──▶ RUNNING ──exit──▶ COMPLETED | FAILED
               ▲ │ ▲                    │                     │               OUT_OF_MEMORY | TIMEOUT
               │ │ └──── forget ────────┘                     │               CANCELLED | NODE_FAIL
               │ └─ hold ─▶ HELD ─ release ─▶ PENDING         │
               │                                              ├─ layout change ─▶ NODE_FAIL ─ requeue ─▶ PENDING
               └──────── requeue ◀── PREEMPTED ◀──────────────┘
    PENDING/HELD ─ cancel ─▶ CANCELLED

Assumptions: allocations are inserted in the same transaction that moves a job
to STARTING, and released in the one that moves it to a final state or back to
PENDING. The container is started only after STARTING has committed.
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from ds01q.errors import RequestError
from ds01q.models import Job, JobEvent
from ds01q.types import JobState

S = JobState
FINALS = {S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMEOUT, S.OUT_OF_MEMORY, S.NODE_FAIL}

EDGES: dict[JobState, frozenset[JobState]] = {
    S.PENDING: frozenset({S.STARTING, S.HELD, S.CANCELLED, S.FAILED, S.PENDING}),
    S.HELD: frozenset({S.PENDING, S.CANCELLED}),
    S.STARTING: frozenset({S.RUNNING, S.PENDING} | FINALS),
    S.RUNNING: frozenset(FINALS | {S.PREEMPTED}),
    S.PREEMPTED: frozenset({S.PENDING, S.CANCELLED}),
    S.NODE_FAIL: frozenset({S.PENDING}),  # requeue after a layout change
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.TIMEOUT: frozenset(),
    S.OUT_OF_MEMORY: frozenset(),
}


def can_transition(frm: JobState, to: JobState) -> bool:
    return to in EDGES[frm]


def transition(session: Session, job: Job, to: JobState, *, at: float, by: str, reason: str | None = None) -> JobEvent:
    """Move ``job`` to ``to`` and record the event. The caller owns the transaction."""
    frm = JobState(job.state)
    if not can_transition(frm, to):
        raise RequestError(f"job {job.id} cannot go from {frm.value} to {to.value}")
    job.state = to.value
    if to in FINALS:
        job.ended_at = at
        job.reason = None if to == S.COMPLETED else job.reason
    if to == S.RUNNING and job.started_at is None:
        job.started_at = at
    if to == S.PENDING:
        job.started_at = None
        job.ended_at = None
        job.exit_code = None
        job.container = None
        job.end_state = None
        job.cancel_requested = False
    event = JobEvent(job_id=job.id, at=at, state=to.value, reason=reason, by=by)
    session.add(event)
    return event
