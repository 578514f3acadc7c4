"""The job state machine. Every change of ``jobs.state`` goes through ``transition()``: a
compare-and-set (``UPDATE … WHERE id = :id AND state = :old``) that checks the edge and
appends a ``job_events`` row, in the caller's transaction. A writer that lost the race
gets ``Conflict`` and its transaction rolls back.

::

    submit ─▶ PENDING ──assume──▶ STARTING ──launched──▶ RUNNING ──exit──▶ COMPLETED | FAILED
               ▲ │ ▲                 │  │                   │              OUT_OF_MEMORY | NODE_FAIL
               │ │ └──── forget ─────┘  │                   │
               │ └─ hold ─▶ HELD        └── request_stop ──▶ STOPPING ──exit──▶ CANCELLED | TIMEOUT
               │            │ release                         (outcome)        | NODE_FAIL | COMPLETED | FAILED
               │            ▼                                     │
               │         PENDING                                  └──exit──▶ PREEMPTED ─ requeue ─┐
               └──────────────────────────── requeue (NODE_FAIL, PREEMPTED) ◀──────────────────────┘
    PENDING | HELD | PREEMPTED ─ request_stop(cancelled) ─▶ CANCELLED

``request_stop`` is the one way to stop a job. Its ``StopOutcome`` (cancelled, timeout,
idle, preempted, layout change, admin requeue, shell exit) is stored with the job and
decides, in ``end_run``, the state the job ends in once its container has exited.

Assumptions: allocations are inserted in the same transaction that moves a job to
STARTING, and released in the one that ends its run (``end_run``) or forgets it. The
container is started only after STARTING has committed.
"""
from __future__ import annotations

from sqlalchemy import bindparam, func, insert, update
from sqlalchemy.orm import Session

from ds01q.db import store
from ds01q.db.models import Job, JobEvent
from ds01q.errors import Conflict, RequestError
from ds01q.types import FINAL_STATES, JobState, Reason, StopOutcome

S = JobState
_jobs = Job.__table__
# the compare-and-set of every state change, built once (it runs three times in each job's life)
_CAS = (update(_jobs).where(_jobs.c.id == bindparam("b_id"), _jobs.c.state == bindparam("b_from"))
        .values(state=bindparam("b_to")))

# what a job leaving the queue forgets (why it waited, when it was expected to start): ``transition``
# and the two statements below
OUT_OF_QUEUE: dict[str, None] = {"reason": None, "reason_detail": None, "estimated_start": None}
# the two moves on every job's path, each one compare-and-set that also writes what ``transition`` would
_ASSUMED = (update(_jobs).where(_jobs.c.id == bindparam("b_id"), _jobs.c.state == S.PENDING.value)
            .values(state=S.STARTING.value, launch_attempt=_jobs.c.launch_attempt + 1,
                    priority=func.coalesce(bindparam("b_prio"), _jobs.c.priority), node=bindparam("b_node"),
                    **OUT_OF_QUEUE))
_LAUNCHED = (update(_jobs).where(_jobs.c.id == bindparam("b_id"), _jobs.c.state == S.STARTING.value)
             .values(state=S.RUNNING.value, container=bindparam("b_ref"),
                     started_at=func.coalesce(_jobs.c.started_at, bindparam("b_at")), **OUT_OF_QUEUE))
_STOPPING_CONTAINER = (update(_jobs).where(_jobs.c.id == bindparam("b_id"), _jobs.c.state == S.STOPPING.value)
                       .values(container=bindparam("b_ref")))
_EVENT = insert(JobEvent.__table__)

EDGES: dict[JobState, frozenset[JobState]] = {
    S.PENDING: frozenset({S.STARTING, S.HELD, S.CANCELLED, S.FAILED, S.PENDING}),
    S.HELD: frozenset({S.PENDING, S.CANCELLED}),
    S.STARTING: frozenset({S.RUNNING, S.PENDING, S.STOPPING} | FINAL_STATES),
    S.RUNNING: frozenset(FINAL_STATES | {S.STOPPING, S.PREEMPTED}),
    S.STOPPING: frozenset(FINAL_STATES | {S.PREEMPTED}),
    S.PREEMPTED: frozenset({S.PENDING, S.CANCELLED}),
    S.NODE_FAIL: frozenset({S.PENDING}),  # requeue after a lost node or slice
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.TIMEOUT: frozenset(),
    S.OUT_OF_MEMORY: frozenset(),
}


def can_transition(frm: JobState, to: JobState) -> bool:
    return to in EDGES[frm]


def transition(session: Session, job: Job, to: JobState, *, at: float, by: str, reason: str | None = None) -> JobEvent:
    """Move ``job`` from the state it was read in to ``to`` and record the event.

    Raises RequestError for an illegal edge and Conflict when another writer changed
    the job's state since it was read. The caller owns the transaction."""
    frm = JobState(job.state)
    if not can_transition(frm, to):
        raise RequestError(f"job {job.id} cannot go from {frm.value} to {to.value}")
    session.flush()
    res = session.execute(_CAS, {"b_id": job.id, "b_from": frm.value, "b_to": to.value})
    if res.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"job {job.id} changed state while it was being moved to {to.value}")
    job.state = to.value
    if to not in (S.PENDING, S.HELD):
        for name, value in OUT_OF_QUEUE.items():
            setattr(job, name, value)
    if to in FINAL_STATES:
        job.ended_at = at
    if to == S.RUNNING and job.started_at is None:
        job.started_at = at
    if to == S.PENDING:
        job.started_at = None
        job.ended_at = None
        job.exit_code = None
        job.container = None
        job.stop_outcome = None
        job.reason = Reason.PRIORITY
    if to == S.HELD:
        job.reason = Reason.HELD
    event = JobEvent(job_id=job.id, at=at, state=to.value, reason=reason, by=by)
    session.add(event)
    return event


def _event(session: Session, job_id: int, at: float, to: JobState, reason: str | None, by: str) -> None:
    session.execute(_EVENT, {"job_id": job_id, "at": at, "state": to.value, "reason": reason, "by": by})


def assumed(session: Session, job_id: int, *, priority: float | None, node: str | None, at: float, reason: str) -> bool:
    """PENDING → STARTING, as ``transition`` does it (its launch attempt counted, ``priority`` stored unless
    None), without loading the job; False, and nothing written, when the job is no longer PENDING."""
    res = session.execute(_ASSUMED, {"b_id": job_id, "b_prio": priority, "b_node": node})
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    _event(session, job_id, at, S.STARTING, reason, "scheduler")
    return True


def launched(session: Session, job_id: int, ref: str, *, at: float, by: str) -> JobState | None:
    """Record the started container ``ref``: a STARTING job goes RUNNING (as ``transition`` does it), a job
    stopped meanwhile (STOPPING) keeps its state; returns that state, or None when the job is in neither
    (it moved on, or is gone: its container must not run)."""
    if session.execute(_LAUNCHED, {"b_id": job_id, "b_ref": ref, "b_at": at}).rowcount == 1:  # type: ignore[attr-defined]
        _event(session, job_id, at, S.RUNNING, f"started {ref[:12]}", by)
        return S.RUNNING
    if session.execute(_STOPPING_CONTAINER, {"b_id": job_id, "b_ref": ref}).rowcount == 1:  # type: ignore[attr-defined]
        return S.STOPPING
    return None


def request_stop(session: Session, job: Job, outcome: StopOutcome, *, at: float, by: str,
                 detail: str | None = None, note: str | None = None) -> JobState:
    """Stop ``job`` for ``outcome``: the one stop path.

    A queued job (PENDING, HELD, PREEMPTED) is cancelled at once; requeue outcomes are
    refused for it. A job that holds slices goes to STOPPING with its outcome; the
    controller stops its container and ``end_run`` records the outcome's state. A job
    already stopping keeps its first outcome; a finished job is left as it is.
    ``detail`` is the end reason (default: the outcome's); ``note`` a longer explanation
    for the STOPPING event. Returns the job's state afterwards."""
    state = JobState(job.state)
    why = detail or outcome.default_reason
    if state.is_final or state == S.STOPPING:
        return state
    if state in (S.PENDING, S.HELD, S.PREEMPTED):
        if outcome.end_state != S.CANCELLED:
            raise RequestError(f"job {job.id} is {state.value}; only running jobs can be "
                               f"{'requeued' if outcome.end_state == S.PREEMPTED else 'stopped this way'}")
        job.end_reason = why
        transition(session, job, S.CANCELLED, at=at, by=by, reason=why)
        return S.CANCELLED
    job.stop_outcome = outcome
    job.end_reason = why
    transition(session, job, S.STOPPING, at=at, by=by, reason=f"stop requested: {note or why}")
    return S.STOPPING


def outcome_of(job: Job, exit_code: int | None, oom: bool, error: str = "") -> tuple[JobState, str | None]:
    """The state a run ends in and why: the stop outcome if one was requested, else the exit."""
    outcome = job.stop_outcome
    if outcome == StopOutcome.SHELL_EXIT:  # the relay recorded the shell's code in job.exit_code
        code = job.exit_code
        return (S.COMPLETED, None) if code == 0 else (S.FAILED, f"shell exit code {code if code is not None else '?'}")
    if outcome is not None:
        return outcome.end_state, job.end_reason or outcome.default_reason
    if oom:
        return S.OUT_OF_MEMORY, "out of memory (container memory limit)"
    if exit_code == 0:
        return S.COMPLETED, None
    if exit_code is None:
        return S.NODE_FAIL, error or "container lost"
    return S.FAILED, f"exit code {exit_code}"


def end_run(session: Session, job: Job, *, exit_code: int | None, oom: bool, at: float, by: str = "ds01q",
            error: str = "", cpu_s: float | None = None, max_rss_bytes: int | None = None) -> JobState:
    """Record how a run ended: release its slices and move the job to its final state (or
    PREEMPTED), in one transaction with the caller's accounting. Returns that state."""
    state, why = outcome_of(job, exit_code, oom, error)
    store.release(session, job.id, at)
    if job.stop_outcome != StopOutcome.SHELL_EXIT:
        job.exit_code = exit_code
    job.cpu_s, job.max_rss_bytes = cpu_s, max_rss_bytes
    job.end_reason = why
    transition(session, job, state, at=at, by=by, reason=why)
    return state


def wants_requeue(job: Job, state: JobState) -> bool:
    """PREEMPTED always goes back to the queue; NODE_FAIL if the job allows a requeue."""
    return state == S.PREEMPTED or (state == S.NODE_FAIL and job.requeue_on_layout_change)


def requeue(session: Session, job: Job, *, at: float, by: str = "ds01q", why: str = "requeued") -> None:
    job.requeue_count += 1
    transition(session, job, S.PENDING, at=at, by=by, reason=why)


def hold(session: Session, job: Job, *, at: float, by: str, why: str) -> None:
    transition(session, job, S.HELD, at=at, by=by, reason=why)


def release_hold(session: Session, job: Job, *, at: float, by: str, why: str) -> None:
    transition(session, job, S.PENDING, at=at, by=by, reason=why)
