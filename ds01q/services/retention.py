"""Finished jobs keep their payload (script, --env, arguments) only for ``security.payload_retention``.

After that the columns are emptied (the job's row, events and usage stay for history and
accounting), the spooled script is deleted as soon as the job is final, and SQLite's WAL is
truncated so the space really goes. Run on a schedule by ``ds01q.daemon.janitor``.
"""
from __future__ import annotations

import logging
import os

from sqlalchemy import or_, select, text

from ds01q.db.models import Job
from ds01q.services.context import Context
from ds01q.types import FINAL_NAMES

log = logging.getLogger(__name__)
BATCH = 500


def prune_payloads(ctx: Context) -> int:
    """Empty the payload of jobs final for longer than the retention; returns how many were pruned."""
    cfg = ctx.config
    cutoff = ctx.clock.now() - cfg.security.payload_retention_s
    pruned = 0
    while True:
        with ctx.sessions.begin() as session:
            jobs = list(session.scalars(
                select(Job).where(Job.state.in_(FINAL_NAMES), Job.ended_at.is_not(None), Job.ended_at < cutoff,
                                  or_(Job.script.is_not(None), Job.env != "{}", Job.args != "[]"))
                .limit(BATCH)))
            for job in jobs:
                job.script, job.env, job.args = None, "{}", "[]"
        pruned += len(jobs)
        if len(jobs) < BATCH:
            break
    drop_spooled(ctx)
    if pruned and cfg.database.startswith("sqlite"):
        with ctx.sessions() as session:
            session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    return pruned


def drop_spooled(ctx: Context) -> int:
    """Delete the spooled scripts of jobs that are final (a script is only needed to launch)."""
    d = os.path.join(ctx.config.executor.state_dir, "scripts")
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return 0
    ids = {int(n[:-3]): n for n in names if n.endswith(".sh") and n[:-3].isdigit()}
    if not ids:
        return 0
    with ctx.sessions() as session:
        final = set(session.scalars(select(Job.id).where(Job.id.in_(list(ids)), Job.state.in_(FINAL_NAMES))))
    for job_id in final:
        try:
            os.unlink(os.path.join(d, ids[job_id]))
        except FileNotFoundError:
            pass
    return len(final)
