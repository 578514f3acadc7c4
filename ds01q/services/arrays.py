"""Insert a submitted job, or all the tasks of its ``--array``, in the caller's transaction.

An array is as many jobs as it has indices. Its first task is inserted alone and its id becomes the
array's id (Slurm's ``%A``, ``SLURM_ARRAY_JOB_ID``, ``array_id`` of every task); the other tasks go in one
multi-row INSERT … RETURNING, their ``PENDING submitted`` events in another, so 10,000 tasks take a few
statements, not 10,000 round trips. A held array's tasks are inserted HELD, each with both events
(PENDING submitted, then HELD), as ``jobstate.transition`` records a hold.
"""
from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from ds01q.db.jobstate import transition
from ds01q.db.models import Job, JobEvent
from ds01q.services import slurm
from ds01q.services.slurm import SlurmFields
from ds01q.types import JobState

HELD_REASON = "submitted held"


def _row(job: Job) -> dict[str, Any]:
    """A task's column values, copied from the first task (without its id)."""
    return {c.key: getattr(job, c.key) for c in Job.__mapper__.column_attrs if c.key != "id"}


def insert_jobs(session: Session, fields: dict[str, Any], f: SlurmFields, *, now: float, by: str, hold: bool,
                check_workdir: Callable[[str], str]) -> tuple[Job, int]:
    """Insert the job (or its array's tasks) with its first events; return the first job and the number of jobs.
    ``check_workdir`` validates a --chdir directory (its realpath, or a one-line RequestError)."""
    job = Job(**fields, **slurm.columns(f), eligible_at=slurm.begin_at(f.begin, now))
    indices = f.array["indices"] if f.array else None
    if indices:
        job.array_task_id, job.array_throttle = indices[0], f.array["throttle"]  # type: ignore[index]
    session.add(job)
    session.flush()
    submit_dir = job.workdir
    checked: dict[str, str] = {}

    def place(job_id: int, task: int | None) -> tuple[str, str | None, str | None]:
        wd, out, err = slurm.paths(f, submit_dir, job_id=job_id, name=job.name, user=job.user,
                                   array_job_id=job.id if task is not None else None, task=task)
        if wd != submit_dir:
            if wd not in checked:
                checked[wd] = check_workdir(wd)
            wd = checked[wd]
        return wd, (None if job.interactive else out), err

    if indices:
        job.array_id = job.id
    job.workdir, job.output_path, job.error_path = place(job.id, indices[0] if indices else None)
    session.add(JobEvent(job_id=job.id, at=now, state=JobState.PENDING.value, reason="submitted", by=by))
    if hold:
        transition(session, job, JobState.HELD, at=now, by=by, reason=HELD_REASON)
    if not indices or len(indices) == 1:
        return job, 1
    session.flush()
    base = _row(job)
    own_id = slurm.needs_id(f)
    rows = []
    for task in indices[1:]:
        row = dict(base, array_task_id=task)
        if not own_id:
            row["workdir"], row["output_path"], row["error_path"] = place(0, task)
        rows.append(row)
    ids = list(session.scalars(insert(Job).returning(Job.id, sort_by_parameter_order=True), rows))
    if own_id:
        updates = []
        for job_id, task in zip(ids, indices[1:]):
            wd, out, err = place(job_id, task)
            updates.append({"id": job_id, "workdir": wd, "output_path": out, "error_path": err})
        session.execute(update(Job), updates)
    events = [{"job_id": i, "at": now, "state": JobState.PENDING.value, "reason": "submitted", "by": by}
              for i in ids]
    if hold:
        events += [{"job_id": i, "at": now, "state": JobState.HELD.value, "reason": HELD_REASON, "by": by}
                   for i in ids]
    session.execute(insert(JobEvent), events)
    return job, len(indices)

