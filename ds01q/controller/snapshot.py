"""Build the scheduler's frozen Snapshot from the database (read-only)."""
from __future__ import annotations

import json
from typing import Any, Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ds01q import accounting
from ds01q.db import nodes, store
from ds01q.config import Config
from ds01q.controller.dependencies import DepJob, Lookup, evaluate, job_ids, spec_of
from ds01q.db.models import Job
from ds01q.scheduler.snapshot import PendingJob, RunningJob, Snapshot
from ds01q.inventory.sync import possible_profiles, slice_infos
from ds01q.types import JobState


class PendingCache:
    """The PendingJob of each pending job without dependencies (and of a configured group), kept while its row
    and the config are the same (a pass runs at each submit and exit and reads every pending job; most of
    them did not change)."""

    def __init__(self) -> None:
        self.jobs: dict[int, tuple[Any, Config, PendingJob]] = {}

    def build(self, cfg: Config, rows: Sequence[Any], make: Any) -> tuple[PendingJob, ...]:
        """``make(row)`` for each row not kept; forgets the jobs no longer pending."""
        old, self.jobs = self.jobs, {}
        out = []
        for j in rows:
            hit = old.get(j.id)
            job = hit[2] if hit is not None and hit[1] is cfg and hit[0] == j else make(j)
            if (not j.depends_on or j.depends_on == "[]") and j.group in cfg.groups:  # else: read anew each pass
                self.jobs[j.id] = (j, cfg, job)
            out.append(job)
        return tuple(out)


class UsageCache:
    """Decayed per-user usage for fair-share, recomputed at most every ``ttl_s``."""

    def __init__(self, ttl_s: float = 30.0) -> None:
        self.ttl_s = ttl_s
        self.at = -1e18
        self.value: dict[str, float] = {}

    def get(self, session: Session, now: float, halflife_s: float) -> dict[str, float]:
        if now - self.at > self.ttl_s or now < self.at:
            self.value = accounting.decayed_usage(session, now, halflife_s)
            self.at = now
        return self.value


def dependency(deps: list[int], states: dict[int, str]) -> str:
    """afterok semantics: "none" once every dependency COMPLETED, "never" if one ended any
    other way or does not exist, else "waiting" (``dependencies.evaluate`` for every Slurm type)."""
    lookup = Lookup(DepJob(id=i, state=s) for i, s in states.items())
    return evaluate(spec_of(json.dumps(deps)), lookup, 0.0)


def _dep_jobs(session: Session, ids: set[int]) -> Lookup:
    """The jobs (and array tasks) that dependencies name."""
    if not ids:
        return Lookup(())
    q = select(Job.id, Job.state, Job.started_at, Job.ended_at, Job.array_id, Job.array_task_id).where(
        or_(Job.id.in_(ids), Job.array_id.in_(ids)))
    return Lookup(DepJob(*row) for row in session.execute(q))


def _singletons(pending: list[Any], running: list[Any]) -> set[int]:
    """Pending jobs with a singleton dependency that an earlier active job of the same user and name holds back."""
    first: dict[tuple[str, str], int] = {}
    for j in [*running, *pending]:
        key = (j.user, j.name)
        first[key] = min(first.get(key, j.id), j.id)
    return {j.id for j in pending if first[(j.user, j.name)] < j.id}


def build_snapshot(session: Session, cfg: Config, now: float, usage: UsageCache,
                   cache: PendingCache | None = None) -> Snapshot:
    pending_rows = store.job_rows_in(session, (JobState.PENDING.value,))
    running_rows = store.job_rows_in(session, store.HOLDING)
    held = store.held_slices(session)  # a job holding slices holds them through its active allocations
    specs = {j.id: spec_of(j.depends_on) for j in pending_rows if j.depends_on and j.depends_on != "[]"}
    lookup = _dep_jobs(session, {d for spec in specs.values() for d in job_ids(spec)})
    held_back = _singletons(pending_rows, running_rows) if any(
        it["type"] == "singleton" for spec in specs.values() if spec for it in spec["items"]) else set()

    def make(j: Any) -> PendingJob:
        return PendingJob(id=j.id, user=j.user, group=_group(cfg, j), request=store.request_of(j),
                          submitted_at=j.submitted_at, time_limit_s=j.time_limit_s, interactive=j.interactive,
                          nice=j.nice, boost=j.boost, held=j.state == JobState.HELD.value,
                          dependency=evaluate(specs.get(j.id), lookup, now, j.id in held_back), array_id=j.array_id,
                          requeue_count=j.requeue_count, eligible_at=j.eligible_at or 0.0)

    pending = (cache or PendingCache()).build(cfg, pending_rows, make)
    running = tuple(
        RunningJob(id=j.id, user=j.user, group=_group(cfg, j), slices=tuple(u for u, _ in held.get(j.id, ())),
                   started_at=j.started_at or now, time_limit_s=j.time_limit_s, interactive=j.interactive,
                   gpu_equiv=sum(e for _, e in held.get(j.id, ())),
                   stopping=j.state == JobState.STOPPING.value, array_id=j.array_id, node=j.node)
        for j in running_rows
    )
    users = {j.user for j in pending_rows} | {j.user for j in running_rows}
    infos = slice_infos(session)
    return Snapshot(
        now=now,
        slices=tuple(infos),
        pending=pending,
        running=running,
        groups={name: g.policy() for name, g in cfg.groups.items()},
        user_limits=_user_limits(cfg, users),
        usage=usage.get(session, now, cfg.weights.halflife_s),
        weights=cfg.weights,
        policy=cfg.policy,
        possible_profiles=possible_profiles(infos),
        unavailable_nodes=nodes.unavailable(session),
        nodes=(tuple(n.name for n in nodes.all_nodes(session) if n.state == nodes.UP)
               if cfg.dispatch.kind == "rq" else None),
        array_throttle={j.array_id: j.array_throttle for j in pending_rows if j.array_id and j.array_throttle},
    )


def _group(cfg: Config, job: Any) -> str:
    return job.group if job.group in cfg.groups else cfg.group_of(job.user).name


def _user_limits(cfg: Config, users: Sequence[str] | set[str]) -> dict:
    return {u: cfg.user_limits[u] for u in users if u in cfg.user_limits}

