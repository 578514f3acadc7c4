"""Holds as in Slurm: a user holds and releases their own pending jobs (``ds01q hold``/``release``, sbatch's
``--hold``); an admin hold (``ds01q admin hold``) is released only by an admin. An id that names an array
(its first task's id) stands for all of its tasks, as in ``scontrol hold``."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ds01q.db import store
from ds01q.db.jobstate import transition
from ds01q.db.models import Job
from ds01q.errors import PermissionDenied, RequestError
from ds01q.services.context import Caller, Context
from ds01q.services.jobs import _ids
from ds01q.types import JobState


def _jobs(session: Any, job_id: int) -> list[Job]:
    """The job, or every task of the array it is the first task of."""
    tasks = list(session.scalars(select(Job).where(Job.array_id == job_id).order_by(Job.id)))
    return tasks or [store.get_job(session, job_id)]


def hold(ctx: Context, caller: Caller, a: dict[str, Any], *, release: bool, admin: bool) -> list[dict[str, Any]]:
    if admin:
        ctx.require_admin(caller, "ds01q admin release" if release else "ds01q admin hold")
    frm, to = (JobState.HELD, JobState.PENDING) if release else (JobState.PENDING, JobState.HELD)
    verb = "release" if release else "hold"
    out = []
    for job_id in _ids(a.get("ids")):
        with ctx.sessions.begin() as session:
            jobs = _jobs(session, job_id)
            for job in jobs:
                ctx.require_owner(caller, job.user, f"{verb} job {job.id}")
                if job.state != frm.value:
                    if len(jobs) > 1:
                        continue  # the array's other tasks: only those that can be
                    raise RequestError(f"job {job.id} is {job.state}; only {frm.value} jobs can be "
                                       f"{'released' if release else 'held'}")
                if release and job.held_by_admin and not caller.admin:
                    raise PermissionDenied(f"job {job.id} was held by an admin; only an admin can release it")
                by_admin = admin and caller.admin
                transition(session, job, to, at=ctx.clock.now(), by=caller.user,
                           reason=f"{'released' if release else 'held'} by {'admin' if by_admin else 'user'}")
                job.held_by_admin = by_admin and not release
                out.append({"id": job.id, "state": job.state})
    ctx.wake()
    return out
