"""Insert a submitted job, or all the tasks of its ``--array``, in the caller's transaction.

An array is as many jobs as it has indices. Its first task is inserted alone and its id becomes the
array's id (Slurm's ``%A``, ``SLURM_ARRAY_JOB_ID``, ``array_id`` of every task). The other tasks take one
statement on SQLite (executemany) and one per 5,000 tasks on PostgreSQL (INSERT … SELECT copying the first
task's row), and their events one INSERT … SELECT by ``array_id`` (indexed): 10,000 tasks in a few
statements, not 10,000 round trips (``bench/bulk_submit.py``). A held array's tasks are inserted HELD, each
with both events (PENDING submitted, then HELD), as ``jobstate.transition`` records a hold.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from sqlalchemy import Connection, Table, insert, literal, select, update
from sqlalchemy.orm import Session

from ds01q.db.jobstate import transition
from ds01q.db.models import Job, JobEvent
from ds01q.services import slurm
from ds01q.services.slurm import SlurmFields
from ds01q.types import JobState

HELD_REASON = "submitted held"
BATCH = 5000  # rows per INSERT on a database server (5000 x 4 parameters: under PostgreSQL's 65535)


def _row(job: Job) -> dict[str, Any]:
    """A task's column values, copied from the first task (without its id), by column name."""
    return {c.columns[0].name: getattr(job, c.key) for c in Job.__mapper__.column_attrs if c.key != "id"}


def _insert_tasks(conn: Connection, table: Table, first_id: int, same: dict[str, Any], varying: Sequence[str],
                  rows: list[dict[str, Any]]) -> None:
    """Insert the other tasks, bypassing SQLAlchemy's per-row parameter processing (3/4 of a 10,000-task array's
    time otherwise). SQLite: the driver's in-process executemany, the columns in ``same`` converted once (each
    type's ``bind_processor``). A database server: INSERT … SELECT that copies ``same`` from the first task's
    row and takes only ``varying`` from a VALUES list, BATCH rows per statement."""
    dialect = conn.dialect
    quote = dialect.identifier_preparer.quote
    procs = [table.c[k].type.bind_processor(dialect) for k in varying]
    data = [tuple(p(r[k]) if p and r[k] is not None else r[k] for p, k in zip(procs, varying)) for r in rows]
    names = [*same, *varying]
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
    if dialect.paramstyle == "qmark":
        fixed = []
        for name, value in same.items():
            proc = table.c[name].type.bind_processor(dialect)
            fixed.append(proc(value) if proc and value is not None else value)
        conn.exec_driver_sql(head + f"VALUES ({', '.join(['?'] * len(names))})", [(*fixed, *row) for row in data])
        return
    copied = ", ".join(f"j.{quote(n)}" for n in same)
    taken = ", ".join(f"v.column{i + 1}" for i in range(len(varying)))
    one = f"({', '.join(['%s'] * len(varying))})"
    for i in range(0, len(data), BATCH):
        chunk = data[i:i + BATCH]
        sql = (f"{head}SELECT {copied}, {taken} FROM {quote(table.name)} AS j, (VALUES {', '.join([one] * len(chunk))})"
               f" AS v WHERE j.id = %s")
        conn.exec_driver_sql(sql, (*(v for row in chunk for v in row), first_id))


def insert_jobs(session: Session, fields: dict[str, Any], f: SlurmFields, *, now: float, by: str, hold: bool,
                check_workdir: Callable[[str], str], discard_output: bool = False) -> tuple[Job, int]:
    """Insert the job (or its array's tasks) with its first events; return the first job and the number of jobs.
    ``check_workdir`` validates a --chdir directory (its realpath, or a one-line RequestError);
    ``discard_output`` (``--output none``) keeps no output file."""
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
        return wd, (None if job.interactive or discard_output else out), err

    if indices:
        job.array_id = job.id
    job.workdir, job.output_path, job.error_path = place(job.id, indices[0] if indices else None)
    session.add(JobEvent(job_id=job.id, at=now, state=JobState.PENDING.value, reason="submitted", by=by))
    if hold:
        transition(session, job, JobState.HELD, at=now, by=by, reason=HELD_REASON)
    if not indices or len(indices) == 1:
        return job, 1
    session.flush()
    own_id = slurm.needs_id(f)
    varying = ("array_task_id", "workdir", "output_path", "error_path")
    same = {k: v for k, v in _row(job).items() if k not in varying}  # bound once, not per row
    same["submit_key"] = None  # the array's idempotency key stays on its first task (one transaction)
    rows = []
    for task in indices[1:]:
        wd, out, err = (job.workdir, job.output_path, job.error_path) if own_id else place(0, task)
        rows.append({"array_task_id": task, "workdir": wd, "output_path": out, "error_path": err})
    jobs, conn = Job.__table__, session.connection()
    _insert_tasks(conn, jobs, job.id, same, varying, rows)
    if own_id:
        by_task = dict(conn.execute(select(jobs.c.array_task_id, jobs.c.id).where(jobs.c.array_id == job.id)).all())
        updates = []
        for task in indices[1:]:
            job_id = by_task[task]
            wd, out, err = place(job_id, task)
            updates.append({"id": job_id, "workdir": wd, "output_path": out, "error_path": err})
        session.execute(update(Job), updates)
    events = JobEvent.__table__
    tasks = select(jobs.c.id).where(jobs.c.array_id == job.id, jobs.c.id != job.id).subquery()
    for state, reason in [(JobState.PENDING, "submitted"), *([(JobState.HELD, HELD_REASON)] if hold else [])]:
        rows_from = select(tasks.c.id, literal(now), literal(state.value), literal(reason), literal(by))
        conn.execute(insert(events).from_select(["job_id", "at", "state", "reason", "by"], rows_from))
    return job, len(indices)

