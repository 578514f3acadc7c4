"""The daemon's accounting hooks. Each takes the caller's Session and never commits.

``on_job_end`` writes one ``job_usage`` row per *run*: a job that is requeued
(PREEMPTED, or NODE_FAIL and requeued) and runs again gets a second row, ``run`` 2,
and so on. A run is known by its ``started_at``; calling the hook again for the same
run rewrites its row, so the hook is idempotent.

Per run:

- ``wall_s`` = end − ``job.started_at`` (0 if the run never reached RUNNING);
- share = the sum of ``Allocation.gpu_equiv`` of the run's allocations (a 2g slice of
  an A100 is 2/7, a whole GPU 1.0); ``gpu_equiv_s`` = share × wall;
- ``gpu_mem_gb_h`` = the sum of ``Allocation.memory_mb`` / 1024 × wall in hours
  (NVML's MB are MiB, so these are GiB-hours);
- ``cpu_s`` and ``max_rss_bytes`` from the container's cgroup: ``job.cpu_s`` /
  ``job.max_rss_bytes`` as set at exit, else the last/highest sample of the run;
- ``energy_kwh``: the integral of the ``power_w`` samples over the run (trapezoids
  between samples, the first and last value held to the run's start and end); None
  when no sample of the run had a power reading. There is no estimate from TDP.
  ``power_w`` is what the caller attributes to the job: on a MIG slice, NVML only
  knows the whole GPU's power, and the caller passes its share (power × slice share).
- CO2 is not stored: reports multiply ``energy_kwh`` by the configured
  ``accounting.carbon_g_per_kwh`` when they are read.
"""
from __future__ import annotations

import math
from typing import Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ds01q.accounting.models import JobUsage, UsageSample
from ds01q.accounting.rollup import mark_dirty
from ds01q.errors import Ds01qError
from ds01q.cgroupnames import slice_name, slice_path
from ds01q.db.models import Allocation, Job
from ds01q.types import Usage

__all__ = ["DEFAULT_CGROUP_ROOT", "cgroup_of", "decayed_usage", "energy_kwh", "on_job_end", "on_sample"]

DEFAULT_CGROUP_ROOT = "ds01q"
_SAME_RUN_S = 1e-6
# built once: each job's end reads its samples and its earlier runs
_SAMPLES = (select(UsageSample.at, UsageSample.cpu_s, UsageSample.mem_bytes, UsageSample.max_rss_bytes,
                   UsageSample.power_w)
            .where(UsageSample.job_id == bindparam("job"), UsageSample.at >= bindparam("lo"),
                   UsageSample.at <= bindparam("hi"))
            .order_by(UsageSample.at))
_RUNS = select(JobUsage).where(JobUsage.job_id == bindparam("job"))


def cgroup_of(group: str, user: str, root: str = DEFAULT_CGROUP_ROOT) -> str:
    """The slice path of a user's jobs, e.g. ``ds01q.slice/ds01q-student.slice/ds01q-student-alice.slice``
    (the names ``executor.cgroup.root`` gives the containers' parent)."""
    try:
        return slice_path(slice_name(root, group, user)).lstrip("/")
    except Ds01qError:  # an invalid root: the executor refuses it too; account under the default
        return slice_path(slice_name(DEFAULT_CGROUP_ROOT, group, user)).lstrip("/")


def energy_kwh(points: Sequence[tuple[float, float | None]], start: float, end: float) -> float | None:
    """kWh from (time, watts) samples over [start, end]; None without a usable sample."""
    pts = sorted((t, w) for t, w in points
                 if w is not None and math.isfinite(w) and w >= 0 and start <= t <= end)
    if not pts or end <= start:
        return None
    joules = pts[0][1] * (pts[0][0] - start) + pts[-1][1] * (end - pts[-1][0])
    for (t0, w0), (t1, w1) in zip(pts, pts[1:]):
        joules += (w0 + w1) / 2 * (t1 - t0)
    return joules / 3.6e6


def _run_allocations(job: Job, allocations: Sequence[Allocation], start: float | None) -> list[Allocation]:
    """The allocations of the run that ends now: earlier runs' ones were released before it started."""
    allocs = [a for a in allocations if a.job_id == job.id]
    if start is not None:
        return [a for a in allocs if a.released_at is None or a.released_at >= start]
    if not allocs:
        return []
    latest = max(a.allocated_at for a in allocs)
    return [a for a in allocs if a.allocated_at == latest]


def on_job_end(session: Session, job: Job, allocations: list[Allocation], now: float, *,
               cgroup_root: str = DEFAULT_CGROUP_ROOT) -> None:
    """Write (or rewrite) the ``job_usage`` row of the run that ends at ``now`` and mark its periods
    for the rollup. Call it after the allocations were released and the job's final fields were set,
    before a requeue moves the job back to PENDING (which clears ``started_at``)."""
    started = job.started_at if job.started_at is not None and job.started_at <= now else None
    start = started if started is not None else now
    wall = now - start
    allocs = _run_allocations(job, allocations, started)
    share = sum(a.gpu_equiv for a in allocs)
    mem_mb = sum(a.memory_mb for a in allocs)
    samples = list(session.execute(_SAMPLES, {"job": job.id, "lo": start, "hi": now}))
    cpu = job.cpu_s
    if cpu is None:
        cpus = [s.cpu_s for s in samples if s.cpu_s is not None]
        cpu = max(cpus) if cpus else None
    peaks = [v for v in [job.max_rss_bytes] + [s.max_rss_bytes for s in samples] + [s.mem_bytes for s in samples]
             if v is not None]
    values = dict(
        user=job.user, group=job.group, cgroup=cgroup_of(job.group, job.user, cgroup_root), state=job.state,
        exit_code=job.exit_code, started_at=start, ended_at=now, wall_s=wall, gpu_share=share, gpu_mem_mb=mem_mb,
        profiles=",".join(sorted({a.profile for a in allocs}))[:200], gpu_equiv_s=share * wall,
        gpu_mem_gb_h=mem_mb / 1024 * wall / 3600, cpu_s=cpu, max_rss_bytes=max(peaks) if peaks else None,
        energy_kwh=energy_kwh([(s.at, s.power_w) for s in samples], start, now), recorded_at=now,
    )
    runs = list(session.scalars(_RUNS, {"job": job.id}))
    same = [r for r in runs if abs(r.started_at - start) < _SAME_RUN_S and (wall > 0 or r.wall_s == 0)]
    if same:
        for k, v in values.items():
            setattr(same[0], k, v)
    else:
        session.add(JobUsage(job_id=job.id, run=max((r.run for r in runs), default=0) + 1, **values))
    mark_dirty(session, start, now)


def _clean(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def on_sample(session: Session, job: Job, usage: Usage | None, now: float, gpu_util: float | None = None,
              power_w: float | None = None) -> None:
    """Store one sample of a running job; nothing when there is nothing to store."""
    gpu_util, power_w = _clean(gpu_util), _clean(power_w)
    if usage is None and gpu_util is None and power_w is None:
        return
    session.add(UsageSample(
        job_id=job.id, at=now, cpu_s=_clean(usage.cpu_s) if usage else None,
        mem_bytes=usage.mem_bytes if usage else None, max_rss_bytes=usage.max_rss_bytes if usage else None,
        gpu_util=gpu_util, power_w=power_w if power_w is None or power_w >= 0 else None))


def _decayed(equiv: float, start: float, end: float, now: float, k: float) -> float:
    """equiv × ∫_start^end 2^-((now−t)/h) dt, with k = ln 2 / h."""
    return equiv * (math.exp(-k * (now - end)) - math.exp(-k * (now - start))) / k


def decayed_usage(session: Session, now: float, halflife_s: float) -> dict[str, float]:
    """Decayed GPU-equivalent seconds per user for fair-share: finished runs from ``job_usage``
    (share × their RUNNING interval) plus running jobs (their active allocations since
    ``started_at``). Usage older than 10 half-lives is ignored."""
    if halflife_s <= 0:
        raise ValueError("halflife_s must be > 0")
    k = math.log(2) / halflife_s
    horizon = now - 10 * halflife_s
    out: dict[str, float] = {}
    q = (select(JobUsage.user, JobUsage.gpu_share, JobUsage.started_at, JobUsage.ended_at)
         .where(JobUsage.ended_at > horizon, JobUsage.gpu_share > 0, JobUsage.started_at < now))
    for user, share, start, end in session.execute(q):
        a, b = max(start, horizon), min(end, now)
        if b > a:
            out[user] = out.get(user, 0.0) + _decayed(share, a, b, now, k)
    running = (select(Job.user, Job.started_at, Allocation.gpu_equiv)
               .join(Job, Job.id == Allocation.job_id)
               .where(Allocation.released_at.is_(None), Job.started_at.is_not(None)))
    for user, start, equiv in session.execute(running):
        a = max(start, horizon)
        if now > a:
            out[user] = out.get(user, 0.0) + _decayed(equiv, a, now, now, k)
    return out
