"""Replay a GPU job trace in simulated time through ``ds01q.scheduler.schedule``.

``simulate(trace_path, gpus, policy)`` reads a CSV with the columns
``job_id, submission_time, duration, num_gpu`` (the ElasticFlow ITP traces in
``shared/traces``) and replays it on a cluster of ``gpus`` whole GPUs (profile
``full``), with the same ``schedule()`` the daemon runs. Modelling choices:

- **Nodes.** GPUs are grouped into nodes of ``gpus_per_node`` (8; the last
  node may be smaller). A ``--gpus N`` request needs N GPUs on one node, so a
  job asking for more than a node holds is clamped to one full node and keeps
  its duration (its GPU-seconds shrink); ``clamped_jobs`` counts them.
- **Users.** Each job belongs to one of ``users`` synthetic users, chosen by
  a CRC32 of its job id (stable across runs), all in one group without limits.
- **Time limits.** ``exact``: the duration; ``2x``: twice it; ``user``: the
  duration times a factor drawn uniformly from [1, 5] with ``random.Random(seed)``.
  Jobs always run for their trace duration, so they never hit the limit.
- **Fair share.** Each user's usage is their GPU-seconds decayed with the
  default half-life (7 days), integrated exactly between events, and passed as
  ``Snapshot.usage``; priority is the default weights' age + fair-share.
- **Events.** ``schedule()`` runs once per distinct event time (submissions
  and completions at the same second are batched), and only when some node
  has as many free GPUs as the smallest pending request; otherwise no job
  could start, whatever the policy.

Results: ``jobs``, ``mean_wait_s``, ``p50_wait_s``, ``p99_wait_s``,
``mean_jct_s`` (completion - submission), ``makespan_s`` (last completion -
first submission), ``utilization`` (clamped GPU-seconds / (gpus x makespan)),
``jain_fairness`` (Jain's index over the users' mean slowdown, slowdown =
completion time / duration; 1.0 means every user is slowed down equally), and
``clamped_jobs``, ``schedule_calls``, ``max_pending``.
"""
from __future__ import annotations

import csv
import heapq
import math
import random
import zlib
from collections import Counter
from dataclasses import dataclass

from ds01q.scheduler import POLICIES, GroupPolicy, PendingJob, RunningJob, Snapshot, Weights, schedule
from ds01q.types import FULL_PROFILE, RequestKind, ResourceRequest, SliceInfo

ESTIMATES = ("exact", "2x", "user")
GROUP = "sim"


@dataclass(frozen=True, slots=True)
class TraceJob:
    id: int
    submit: float
    duration: float
    gpus: int
    asked_gpus: int


def load_trace(trace_path: str, node_size: int) -> list[TraceJob]:
    """The trace's jobs in submission order, GPU counts clamped to ``node_size``."""
    jobs = []
    with open(trace_path, newline="") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            asked = int(row["num_gpu"])
            jobs.append(TraceJob(index + 1, float(row["submission_time"]), float(row["duration"]),
                                 max(1, min(asked, node_size)), asked))
    jobs.sort(key=lambda j: (j.submit, j.id))
    return jobs


def build_cluster(gpus: int, gpus_per_node: int) -> tuple[SliceInfo, ...]:
    return tuple(
        SliceInfo(uuid=f"GPU-{g:05d}", gpu_uuid=f"GPU-{g:05d}", profile=FULL_PROFILE, compute_slices=7,
                  gpu_compute_slices=7, memory_mb=81920, node=f"node{g // gpus_per_node:03d}")
        for g in range(gpus))


def time_limits(jobs: list[TraceJob], estimate: str, seed: int) -> dict[int, float]:
    if estimate == "exact":
        return {j.id: j.duration for j in jobs}
    if estimate == "2x":
        return {j.id: 2.0 * j.duration for j in jobs}
    rng = random.Random(seed)
    return {j.id: j.duration * rng.uniform(1.0, 5.0) for j in jobs}


class _Usage:
    """Per-user GPU-seconds with exponential decay, integrated exactly between events."""

    def __init__(self, halflife_s: float) -> None:
        self.halflife_s = halflife_s
        self.usage: dict[str, float] = {}
        self.rate: Counter[str] = Counter()  # GPUs each user holds now
        self.at = 0.0

    def advance(self, now: float) -> None:
        dt = now - self.at
        if dt > 0:
            keep = 2.0 ** (-dt / self.halflife_s)
            gained = self.halflife_s / math.log(2) * (1.0 - keep)
            for user in set(self.usage) | set(self.rate):
                self.usage[user] = self.usage.get(user, 0.0) * keep + self.rate[user] * gained
        self.at = now


class _Replay:
    def __init__(self, jobs: list[TraceJob], gpus: int, gpus_per_node: int, policy: str, users: int,
                 limits: dict[int, float]) -> None:
        self.jobs = jobs
        self.slices = build_cluster(gpus, gpus_per_node)
        self.node_of = {s.uuid: s.node for s in self.slices}
        self.free_per_node: Counter[str] = Counter(self.node_of.values())
        self.policy = policy
        self.user_of = {j.id: f"user{zlib.crc32(str(j.id).encode()) % users:03d}" for j in jobs}
        self.limits = limits
        self.requests = {n: ResourceRequest(RequestKind.GPUS, count=n) for n in {j.gpus for j in jobs}}
        self.groups = {GROUP: GroupPolicy(GROUP)}
        self.weights = Weights()
        self.usage = _Usage(self.weights.halflife_s)
        self.pending: dict[int, PendingJob] = {}
        self.pending_sizes: Counter[int] = Counter()
        self.running: dict[int, RunningJob] = {}
        self.finishes: list[tuple[float, int]] = []
        self.started: dict[int, float] = {}
        self.calls = 0
        self.max_pending = 0

    def run(self) -> None:
        by_id = {j.id: j for j in self.jobs}
        i, n = 0, len(self.jobs)
        while i < n or self.finishes:
            now = min(self.jobs[i].submit if i < n else math.inf, self.finishes[0][0] if self.finishes else math.inf)
            self.usage.advance(now)
            while self.finishes and self.finishes[0][0] <= now:
                self._finish(heapq.heappop(self.finishes)[1])
            while i < n and self.jobs[i].submit <= now:
                self._submit(self.jobs[i])
                i += 1
            self.max_pending = max(self.max_pending, len(self.pending))
            if self._could_start():
                self._schedule(now, by_id)

    def _submit(self, job: TraceJob) -> None:
        user = self.user_of[job.id]
        self.pending[job.id] = PendingJob(id=job.id, user=user, group=GROUP, request=self.requests[job.gpus],
                                          submitted_at=job.submit, time_limit_s=self.limits[job.id])
        self.pending_sizes[job.gpus] += 1

    def _finish(self, job_id: int) -> None:
        job = self.running.pop(job_id)
        for uuid in job.slices:
            self.free_per_node[self.node_of[uuid]] += 1
        self.usage.rate[job.user] -= len(job.slices)

    def _could_start(self) -> bool:
        if not self.pending:
            return False
        smallest = min(size for size, count in self.pending_sizes.items() if count > 0)
        return max(self.free_per_node.values()) >= smallest

    def _schedule(self, now: float, by_id: dict[int, TraceJob]) -> None:
        self.calls += 1
        snapshot = Snapshot(now=now, slices=self.slices, pending=tuple(self.pending.values()),
                            running=tuple(self.running.values()), groups=self.groups, usage=self.usage.usage,
                            weights=self.weights, policy=self.policy)
        for placement in schedule(snapshot).placements:
            job = self.pending.pop(placement.job_id)
            trace = by_id[job.id]
            self.pending_sizes[trace.gpus] -= 1
            self.running[job.id] = RunningJob(job.id, job.user, GROUP, placement.slices, now, job.time_limit_s,
                                              gpu_equiv=float(len(placement.slices)))
            for uuid in placement.slices:
                self.free_per_node[self.node_of[uuid]] -= 1
            self.usage.rate[job.user] += len(placement.slices)
            self.started[job.id] = now
            heapq.heappush(self.finishes, (now + trace.duration, job.id))


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def jain_index(values: list[float]) -> float:
    """(sum x)^2 / (n * sum x^2): 1.0 when all equal, 1/n when one takes everything."""
    squares = sum(v * v for v in values)
    return 1.0 if squares == 0 else sum(values) ** 2 / (len(values) * squares)


def _metrics(replay: _Replay, gpus: int) -> dict[str, float | int]:
    jobs = replay.jobs
    waits = sorted(replay.started[j.id] - j.submit for j in jobs)
    ends = {j.id: replay.started[j.id] + j.duration for j in jobs}
    first, last = min(j.submit for j in jobs), max(ends.values())
    makespan = last - first
    slowdowns: dict[str, list[float]] = {}
    for j in jobs:
        slowdowns.setdefault(replay.user_of[j.id], []).append((ends[j.id] - j.submit) / max(j.duration, 1.0))
    return {
        "jobs": len(jobs),
        "mean_wait_s": sum(waits) / len(waits),
        "p50_wait_s": _percentile(waits, 0.50),
        "p99_wait_s": _percentile(waits, 0.99),
        "mean_jct_s": sum(ends[j.id] - j.submit for j in jobs) / len(jobs),
        "makespan_s": makespan,
        "utilization": sum(j.gpus * j.duration for j in jobs) / (gpus * makespan) if makespan > 0 else 0.0,
        "jain_fairness": jain_index([sum(v) / len(v) for v in slowdowns.values()]),
        "clamped_jobs": sum(1 for j in jobs if j.gpus != j.asked_gpus),
        "schedule_calls": replay.calls,
        "max_pending": replay.max_pending,
    }


def simulate(trace_path: str, gpus: int, policy: str = "backfill", users: int = 16, estimate: str = "exact",
             seed: int = 0, gpus_per_node: int = 8, max_jobs: int | None = None) -> dict[str, object]:
    """Replay the trace on ``gpus`` whole GPUs under ``policy`` (fifo | priority | backfill).

    ``max_jobs`` replays only the first jobs of the trace. See the module docstring for the model.
    """
    if gpus < 1:
        raise ValueError("gpus must be at least 1")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    if estimate not in ESTIMATES:
        raise ValueError(f"estimate must be one of {', '.join(ESTIMATES)}, not {estimate!r}")
    if users < 1:
        raise ValueError("users must be at least 1")
    node_size = min(gpus_per_node, gpus)
    jobs = load_trace(trace_path, node_size)[:max_jobs]
    if not jobs:
        raise ValueError(f"{trace_path}: no jobs")
    replay = _Replay(jobs, gpus, node_size, policy, users, time_limits(jobs, estimate, seed))
    replay.run()
    result: dict[str, object] = {"trace": trace_path, "gpus": gpus, "policy": policy, "users": users,
                                 "estimate": estimate, "seed": seed}
    result.update(_metrics(replay, gpus))
    return result
