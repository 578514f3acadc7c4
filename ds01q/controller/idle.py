"""Idle detection for interactive sessions (``ds01q shell``).

A session is *idle* while all three hold:

- no terminal is attached (``deps.terminals(job_id) == 0``; a detached shell
  that keeps running does not count as attached);
- its CPU use is below ``cpu_threshold`` cores, as a *rate* over the last
  ``window_s`` seconds (CPU-seconds delta / time delta between the oldest and
  the newest sample in the window), never a total since the start, so a burst
  an hour ago or a large download long past does not keep it alive forever;
- no GPU activity where NVML can tell: a whole GPU (MIG off) is busy at or
  above ``GPU_BUSY_PERCENT`` utilisation. NVML reports no utilisation for MIG
  slices, so there the GPU is *unknown* and only CPU and terminals decide.

The idle clock starts at the last sample where the session was active (or at
the first sample). A session idle for its group's ``idle_timeout`` is stopped:
``check_idle`` stops it through ``jobstate.request_stop`` with outcome IDLE: the
job goes STOPPING (its event says why) and ends CANCELLED with reason "idle timeout" (Slurm has no idle state; CANCELLED by ``ds01q``
says the system ended it, TIMEOUT stays for the time limit). While idle, the
job's ``reason_detail`` carries the warning ``idle: stops at <ISO time>``,
shown by ``ds01q show``/``queue --json`` and in the shell banner; it is
cleared as soon as the session is active again.

Because activity is a rate over ``window_s``, a session stops at most
``window_s`` plus one loop tick after its ``idle_timeout`` has passed since its
last real activity (30 s + 1 s with the defaults: within a minute).

Users in ``lifecycle.exempt_users`` (``Config.lifecycle_exempt``) and groups
without an ``idle_timeout`` are never stopped for idleness.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from dataclasses import dataclass

from sqlalchemy import select

from ds01q.controller.deps import LoopDeps
from ds01q.db import jobstate, store
from ds01q.errors import Ds01qError
from ds01q.executors.base import Handle
from ds01q.db.models import Job
from ds01q.types import JobState, StopOutcome
from ds01q.units import iso

__all__ = ["IDLE_PREFIX", "IDLE_REASON", "IdleTracker", "check_idle", "gpu_busy_by_uuid"]

log = logging.getLogger("ds01q.idle")

DEFAULT_WINDOW_S = 30.0
DEFAULT_CPU_THRESHOLD = 0.05  # cores: 5 % of one CPU
GPU_BUSY_PERCENT = 5.0
GPU_READ_EVERY_S = 5.0
MIN_RATE_SPAN_S = 0.5  # two samples closer than this give no rate
IDLE_PREFIX = "idle: "
IDLE_REASON = "idle timeout"


@dataclass(frozen=True)
class _Sample:
    at: float
    cpu_s: float
    attached: bool
    gpu_busy: bool | None


class IdleTracker:
    """Short per-job windows of (time, CPU-seconds, attached, GPU busy) samples. Pure: ``now`` is passed in."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, cpu_threshold: float = DEFAULT_CPU_THRESHOLD) -> None:
        if window_s <= 0 or cpu_threshold < 0:
            raise ValueError("window_s must be positive and cpu_threshold not negative")
        self.window_s = window_s
        self.cpu_threshold = cpu_threshold
        self._samples: dict[int, deque[_Sample]] = {}
        self._active_at: dict[int, float] = {}
        self.gpu_cache: tuple[float, dict[str, bool]] | None = None  # (read at, busy by GPU uuid), for check_idle

    def observe(self, job_id: int, cpu_s: float, attached: bool, gpu_busy: bool | None, now: float) -> None:
        q = self._samples.setdefault(job_id, deque())
        if q and (now < q[-1].at or cpu_s < q[-1].cpu_s):  # clock went back or the counter was reset
            q.clear()
        q.append(_Sample(now, cpu_s, attached, gpu_busy))
        while len(q) >= 2 and q[1].at <= now - self.window_s:  # keep one sample at the window's start
            q.popleft()
        if self.active(job_id):
            self._active_at[job_id] = now
        else:
            self._active_at.setdefault(job_id, now)

    def cpu_rate(self, job_id: int) -> float | None:
        """CPU cores used, averaged over the window; None until two samples span ``MIN_RATE_SPAN_S``."""
        q = self._samples.get(job_id)
        if not q or len(q) < 2:
            return None
        first, last = q[0], q[-1]
        span = last.at - first.at
        if span < MIN_RATE_SPAN_S:
            return None
        return (last.cpu_s - first.cpu_s) / span

    def active(self, job_id: int) -> bool:
        """Is the job active by its latest sample: a terminal, GPU use, or CPU at or above the threshold?"""
        q = self._samples.get(job_id)
        if not q:
            return False
        last = q[-1]
        rate = self.cpu_rate(job_id)
        return last.attached or last.gpu_busy is True or (rate is not None and rate >= self.cpu_threshold)

    def idle_since(self, job_id: int, now: float) -> float | None:
        """When the job's idle stretch began; None if it is active now or was never observed."""
        if job_id not in self._samples or self.active(job_id):
            return None
        return min(self._active_at.get(job_id, now), now)

    def stop_at(self, job_id: int, timeout_s: float) -> float | None:
        """When the job will be stopped if it stays idle; None while it is active."""
        q = self._samples.get(job_id)
        since = self.idle_since(job_id, q[-1].at) if q else None
        return None if since is None else since + timeout_s

    def should_stop(self, job_id: int, timeout_s: float, now: float) -> bool:
        since = self.idle_since(job_id, now)
        return since is not None and now - since >= timeout_s

    def forget(self, job_id: int) -> None:
        self._samples.pop(job_id, None)
        self._active_at.pop(job_id, None)

    def tracked(self) -> set[int]:
        return set(self._samples)


UsageReader = Callable[[], Iterable[Any]]  # returns ds01q.inventory.GpuUsage-like objects


def gpu_busy_by_uuid(readings: Iterable[Any]) -> dict[str, bool]:
    """Whole-GPU UUID -> busy, for the GPUs whose utilisation NVML reports (never MIG slices)."""
    return {r.uuid: r.utilization >= GPU_BUSY_PERCENT for r in readings if r.utilization is not None}


def _gpu_readings(deps: LoopDeps, tracker: IdleTracker, reader: UsageReader | None, now: float) -> dict[str, bool]:
    """Busy flags of whole GPUs from NVML, read at most every ``GPU_READ_EVERY_S``; none for a static inventory."""
    if reader is None:
        if deps.config.inventory_source == "static":
            return {}
        from ds01q.inventory import read_utilization

        reader = read_utilization
    cached = tracker.gpu_cache
    if cached is not None and 0 <= now - cached[0] < GPU_READ_EVERY_S:
        return cached[1]
    try:
        busy = gpu_busy_by_uuid(reader())
    except Ds01qError as e:
        log.debug("no GPU utilisation for idle checks: %s", e)
        busy = {}
    tracker.gpu_cache = (now, busy)
    return busy


def _job_gpu_busy(slices: list[str], busy: dict[str, bool]) -> bool | None:
    known = [busy[u] for u in slices if u in busy]
    return any(known) if known else None


def _timeout_of(deps: LoopDeps, job: Job) -> float | None:
    if job.user in deps.config.lifecycle_exempt:
        return None
    group = deps.config.groups.get(job.group) or deps.config.group_of(job.user)
    return group.idle_timeout_s or None


_INTERACTIVE_RUNNING = select(Job).where(  # built once: each pass runs it
    Job.state == JobState.RUNNING.value, Job.interactive.is_(True), Job.container.is_not(None)).order_by(Job.id)


def check_idle(deps: LoopDeps, tracker: IdleTracker, now: float,
               gpu_reader: UsageReader | None = None) -> list[int]:
    """Sample the RUNNING interactive jobs, warn the idle ones, stop the expired ones.

    Returns the ids of the jobs it stopped (STOPPING, outcome IDLE); the loop stops their
    containers like any other STOPPING job's.
    """
    with deps.sessions() as session:
        jobs = list(session.scalars(_INTERACTIVE_RUNNING))  # most passes have none: no batch job loaded
        slices = store.slices_of(session, [j.id for j in jobs])
    for gone in tracker.tracked() - {j.id for j in jobs}:
        tracker.forget(gone)
    watched = [(j, t) for j in jobs if (t := _timeout_of(deps, j))]
    gpus = _gpu_readings(deps, tracker, gpu_reader, now) if watched else {}
    watched_ids = {j.id for j, _ in watched}
    details: dict[int, str | None] = {j.id: None for j in jobs if j.id not in watched_ids}  # clear stale warnings
    expired: dict[int, str] = {}
    for job, timeout in watched:
        try:
            usage = deps.executor.sample(Handle(job_id=job.id, ref=job.container or ""))
        except Ds01qError as e:
            log.warning("idle check of job %s: %s", job.id, e)
            continue
        if usage is None:  # the container is gone; the reaper records the exit
            continue
        attached = deps.terminals(job.id) > 0
        tracker.observe(job.id, usage.cpu_s, attached, _job_gpu_busy(slices.get(job.id, []), gpus), now)
        if tracker.should_stop(job.id, timeout, now):
            expired[job.id] = f"idle timeout: no terminal, CPU < {tracker.cpu_threshold:g} cores and no GPU use " \
                              f"since {iso(tracker.idle_since(job.id, now))}"
            continue
        stop_at = tracker.stop_at(job.id, timeout)
        details[job.id] = None if stop_at is None else f"{IDLE_PREFIX}stops at {iso(stop_at)}"
    return _apply(deps, jobs, details, expired, tracker, now)


def _apply(deps: LoopDeps, jobs: list[Job], details: dict[int, str | None], expired: dict[int, str],
           tracker: IdleTracker, now: float) -> list[int]:
    """Write changed warnings and the stop marks in one transaction; touch no other reason_detail."""
    def ours(detail: str | None) -> bool:
        return detail is None or detail.startswith(IDLE_PREFIX)

    changed = {j.id for j in jobs if j.id in details and ours(j.reason_detail) and j.reason_detail != details[j.id]}
    if not changed and not expired:
        return []
    stopped: list[int] = []
    with deps.sessions.begin() as session:
        for job_id in changed | set(expired):
            job = session.get(Job, job_id)
            if job is None or job.state != JobState.RUNNING.value or not job.container:
                continue
            if job_id in expired:
                if deps.terminals(job_id) > 0:  # a terminal attached meanwhile: not idle after all
                    continue
                jobstate.request_stop(session, job, StopOutcome.IDLE, at=now, by="ds01q", detail=IDLE_REASON,
                                      note=expired[job_id])
                stopped.append(job_id)
            elif ours(job.reason_detail):
                job.reason_detail = details[job_id]
    for job_id in stopped:
        tracker.forget(job_id)
        log.info("job %s: %s", job_id, expired[job_id])
    return stopped
