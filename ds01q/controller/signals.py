"""Slurm's ``--signal=[B:]SIG[@TIME]``: send SIG to a running job TIME seconds before its time limit.

Once per run: the controller first records a job event (``signal USR1 sent …``) in one transaction, then
asks the executor to deliver it; a run that already has that event (after the job's last move to RUNNING)
is skipped, so neither a second tick nor a daemon restart sends it twice. A requeued job starts a new
run and gets the signal again. With ``B:`` only the batch shell (the container's main process) gets
it; without, every process of the job (``Executor.signal(handle, signum, batch_only)``). An executor
that cannot signal, or a delivery that fails, is logged and recorded as a second event; the job runs
on to its time limit as it would without ``--signal``.
"""
from __future__ import annotations

import json
import logging
import signal as _signal
from typing import Any

from sqlalchemy import func, or_, select

from ds01q.db import store
from ds01q.db.models import Job, JobEvent
from ds01q.errors import Ds01qError
from ds01q.executors.base import Handle
from ds01q.types import JobState

log = logging.getLogger("ds01q.controller")
EVENT = "signal "  # every event this module writes starts with it


def parse(job: Job) -> tuple[int, str, float, bool] | None:
    """(signal number, name, seconds before the limit, batch only) of the job's ``--signal``, or None."""
    if not job.signal:
        return None
    try:
        d = json.loads(job.signal)
        name = str(d["signal"])
        num = int(_signal.Signals["SIG" + name])
        return num, name, float(d.get("seconds", 60)), bool(d.get("batch_only"))
    except (ValueError, KeyError, TypeError):
        log.warning("job %s: --signal %r is not understood; not sent", job.id, job.signal)
        return None


def due(job: Job, now: float) -> tuple[int, str, bool] | None:
    """The signal to send now (number, name, batch only), if the job's run has reached its moment."""
    sig = parse(job)
    if sig is None or job.started_at is None or not job.container:
        return None
    num, name, seconds, batch_only = sig
    if now < job.started_at + job.time_limit_s - seconds:
        return None
    return num, name, batch_only


def _sent_this_run(session: Any, job_id: int) -> bool:
    """Is there a signal event after the job's last move to RUNNING (the start of this run)?"""
    mine = JobEvent.reason.like(EVENT + "%")
    run = session.scalar(select(func.max(JobEvent.id)).where(
        JobEvent.job_id == job_id, JobEvent.state == JobState.RUNNING.value, or_(JobEvent.reason.is_(None), ~mine)))
    return session.scalar(select(JobEvent.id).where(JobEvent.job_id == job_id, JobEvent.id > (run or 0), mine)
                          .limit(1)) is not None


_RUNNING_WITH_SIGNAL = select(Job).where(Job.state == JobState.RUNNING.value, Job.signal.is_not(None))  # each pass


def _running_with_signal(session: Any) -> Any:
    return session.scalars(_RUNNING_WITH_SIGNAL)


def claim(ctl: Any, now: float) -> list[tuple[int, str, int, str, bool]]:
    """Record, once per run, a signal event for each running job whose moment came; return what to send
    as (job id, container, signal number, name, batch only)."""
    todo: list[tuple[int, str, int, str, bool]] = []
    with ctl.session() as session:  # most passes have nothing due: no write transaction for them
        if not any(due(job, now) for job in _running_with_signal(session)):
            return todo
    with ctl.txn() as session:
        for job in _running_with_signal(session):
            want = due(job, now)
            if want is None:
                continue
            if _sent_this_run(session, job.id):
                continue
            num, name, batch_only = want
            to = "the batch shell" if batch_only else "every process of the job"
            left = max(0.0, job.started_at + job.time_limit_s - now)
            session.add(JobEvent(job_id=job.id, at=now, state=job.state, by="ds01q",
                                 reason=f"{EVENT}{name} sent to {to}, {left:.0f}s before the time limit"))
            todo.append((job.id, job.container or "", num, name, batch_only))
    return todo


def deliver(ctl: Any, job_id: int, ref: str, num: int, name: str, batch_only: bool) -> None:
    send = getattr(ctl.executor, "signal", None)
    try:
        if send is None:
            raise Ds01qError("this executor cannot signal a job")
        send(Handle(job_id=job_id, ref=ref), num, batch_only)
    except Ds01qError as e:
        log.warning("job %s: --signal %s not delivered: %s", job_id, name, e)
        with ctl.txn() as session:
            job = store.get_job(session, job_id)
            session.add(JobEvent(job_id=job_id, at=ctl.clock.now(), state=job.state, by="ds01q",
                                 reason=f"{EVENT}{name} not delivered: {str(e)[:300]}"))


def send_due_signals(ctl: Any, now: float) -> None:
    """The loop's step: claim what is due in one transaction, then deliver each off the loop's thread."""
    for job_id, ref, num, name, batch_only in claim(ctl, now):
        ctl.run_async(deliver, ctl, job_id, ref, num, name, batch_only)
