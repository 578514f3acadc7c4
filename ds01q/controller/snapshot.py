"""Build the scheduler's frozen Snapshot from the database (read-only)."""
from __future__ import annotations

import json
from typing import Sequence

from sqlalchemy.orm import Session

from ds01q import accounting
from ds01q.db import nodes, store
from ds01q.config import Config
from ds01q.db.models import Job
from ds01q.scheduler.snapshot import PendingJob, RunningJob, Snapshot
from ds01q.inventory.sync import possible_profiles, slice_infos
from ds01q.types import FINAL_NAMES, JobState


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


def _depends_on(job: Job) -> list[int]:
    return [int(d) for d in json.loads(job.depends_on or "[]")]


def dependency(deps: list[int], states: dict[int, str]) -> str:
    """afterok semantics: "none" once every dependency COMPLETED, "never" if one ended any
    other way or does not exist, else "waiting"."""
    if not deps:
        return "none"
    st = [states.get(d) for d in deps]
    if any(s is None or (s in FINAL_NAMES and s != JobState.COMPLETED.value) for s in st):
        return "never"
    return "none" if all(s == JobState.COMPLETED.value for s in st) else "waiting"


def build_snapshot(session: Session, cfg: Config, now: float, usage: UsageCache) -> Snapshot:
    pending_rows = store.jobs_in(session, (JobState.PENDING.value,))
    running_rows = store.jobs_in(session, store.HOLDING)
    slices_by_job = store.slices_of(session, [j.id for j in running_rows])
    equiv = {a.slice_uuid: a.gpu_equiv for a in store.active_allocations(session)}
    wanted = {d for j in pending_rows for d in _depends_on(j)}
    states = store.job_states(session, wanted)
    pending = tuple(
        PendingJob(id=j.id, user=j.user, group=_group(cfg, j), request=store.request_of(j), submitted_at=j.submitted_at,
                   time_limit_s=j.time_limit_s, interactive=j.interactive, nice=j.nice, boost=j.boost, held=j.state == JobState.HELD.value,
                   dependency=dependency(_depends_on(j), states), array_id=j.array_id, requeue_count=j.requeue_count,
                   eligible_at=j.eligible_at or 0.0)
        for j in pending_rows
    )
    running = tuple(
        RunningJob(id=j.id, user=j.user, group=_group(cfg, j), slices=tuple(slices_by_job.get(j.id, ())),
                   started_at=j.started_at or now, time_limit_s=j.time_limit_s, interactive=j.interactive,
                   gpu_equiv=sum(equiv.get(u, 0.0) for u in slices_by_job.get(j.id, ())),
                   stopping=j.state == JobState.STOPPING.value)
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
    )


def _group(cfg: Config, job: Job) -> str:
    return job.group if job.group in cfg.groups else cfg.group_of(job.user).name


def _user_limits(cfg: Config, users: Sequence[str] | set[str]) -> dict:
    return {u: cfg.user_limits[u] for u in users if u in cfg.user_limits}

