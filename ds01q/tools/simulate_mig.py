"""Replay a trace on MIG GPUs through the daemon's scheduler, re-cut planner and reclaim.

``simulate_mig(trace, gpus, mig_policy, borrowing, ...)`` replays the ElasticFlow ITP
CSVs (see ``simulate.py``) on ``gpus`` A100-40GB GPUs (8 per node) with the same
``schedule()``, ``mig.placement.plan_recut`` and ``mig.auto.propose`` the daemon runs.

**The MIG mix** (seeded, documented, stable): each trace job gets a
``random.Random(seed * 1_000_003 + job index)`` draw. A job that asked for 2+ GPUs
asks for 2 whole GPUs (``clamped_jobs`` counts those that asked for more: a static
layout that keeps only some GPUs whole can then still serve every job). A 1-GPU job asks, by duration:

| duration | 1g.5gb | 2g.10gb | 3g.20gb | 4g.20gb | whole GPU |
|---|---:|---:|---:|---:|---:|
| < 1 h | 45 % | 30 % | 15 % | 5 % | 5 % |
| >= 1 h | 20 % | 30 % | 25 % | 10 % | 15 % |

A job runs for its trace duration on whatever it asked for.

**Layouts.** ``static:<L>`` cuts every GPU to ``L`` (profiles joined by ``+``, or
``full``; ``;`` separates layouts given to GPUs in turn, e.g.
``static:full;3g.20gb+2g.10gb+1g.5gb+1g.5gb``). ``best-static`` searches
4-GPU patterns (GPU g gets slot g mod 4; each slot one of the filled layouts made of
the mix's profiles, or full) by coordinate descent from
``full;3g+2g+1g+1g;4g+2g+1g;3g+2g+1g+1g``, replaying the trace for every pattern it
tries, and keeps the best mean JCT among patterns that serve every job (it reports
the pattern and how many it replayed). ``auto`` starts from ``all-balanced`` (3g+2g+1g+1g) and, whenever jobs
wait, asks ``propose`` for one re-cut of free instances (never a busy one); the
destroyed instances vanish at once and the new ones (or a GPU whose MIG mode
changes) appear after ``recut_cost_s``. ``static:full`` is a cluster without MIG:
every job that asked for a slice takes a whole GPU. ``scheduler`` picks the pass's
policy (``fifo`` or the default ``backfill``).

**Borrowing.** Users (CRC32 of the job id, ``users`` of them) each have a quota of
``quota`` GPU-equivalents. ``borrowing off``: jobs beyond it wait (UserLimit);
``on``: they borrow and are preempted (and requeued from the start) when a job
within quota needs the slice; a preempted job restarts after ``stop_grace_s``.

Results: ``simulate``'s figures plus ``recuts``, ``preemptions``,
``gpu_equiv_utilization`` (GPU-equivalent seconds of the jobs' runs, preempted
runs included, / (gpus x makespan)), ``within_quota_mean_wait_s`` (jobs whose last
start was within quota), ``jobs_by_request`` and ``mean_wait_by_request_s`` (per
requested profile, or ``gpus:N`` for whole GPUs: which requests a policy makes wait) and
``layout`` (best-static's choice).
"""
from __future__ import annotations

import heapq
import math
import random
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ds01q.mig.auto import AutoParams, GpuView, propose
from ds01q.mig.placement import Instance, creation_order
from ds01q.mig.planner import ANY, _candidates
from ds01q.mig.profiles import MODELS
from ds01q.scheduler import GroupPolicy, Limits, PendingJob, RunningJob, Snapshot, schedule
from ds01q.tools.simulate import TraceJob, _percentile, jain_index, load_trace
from ds01q.types import FULL_PROFILE, Reason, RequestKind, ResourceRequest, SliceInfo

MODEL = MODELS["A100-40GB"]
GPU_NAME = "NVIDIA A100-PCIE-40GB"
BALANCED = ("3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb")
GROUP = "sim"
MAX_WHOLE = 2  # multi-GPU jobs ask for at most this many whole GPUs (clamped_jobs counts them)
SHORT = (("1g.5gb", 0.45), ("2g.10gb", 0.30), ("3g.20gb", 0.15), ("4g.20gb", 0.05), (FULL_PROFILE, 0.05))
LONG = (("1g.5gb", 0.20), ("2g.10gb", 0.30), ("3g.20gb", 0.25), ("4g.20gb", 0.10), (FULL_PROFILE, 0.15))


def mig_request(job: TraceJob, seed: int) -> ResourceRequest:
    """The documented seeded mix (module docstring)."""
    if job.gpus >= 2:
        return ResourceRequest(RequestKind.GPUS, count=min(job.gpus, MAX_WHOLE))
    table = SHORT if job.duration < 3600 else LONG
    x = random.Random(seed * 1_000_003 + job.id).random()
    for name, p in table:
        if x < p:
            break
        x -= p
    return ResourceRequest(RequestKind.GPUS, count=1) if name == FULL_PROFILE else ResourceRequest(RequestKind.MIG, name)


def request_name(req: ResourceRequest) -> str:
    """How the per-request figures name a request: its profile, ``gpus:N`` for whole GPUs, else the
    kind (``any``, ``none``)."""
    if req.kind == RequestKind.MIG and req.profile:
        return req.profile
    return f"gpus:{req.count}" if req.kind == RequestKind.GPUS else req.kind.value


def parse_static(spec: str) -> list[tuple[str, ...]]:
    layouts = []
    for part in spec.split(";"):
        layout = tuple(p.strip() for p in part.split("+") if p.strip())
        if layout != (FULL_PROFILE,) and creation_order(MODEL, [], layout) is None:
            raise ValueError(f"static layout {part!r} does not fit on an A100-40GB")
        layouts.append(layout)
    if not layouts:
        raise ValueError("static: give a layout, e.g. static:3g.20gb+2g.10gb+1g.5gb+1g.5gb")
    return layouts


def _equiv(req: ResourceRequest) -> float:
    if req.kind == RequestKind.GPUS:
        return float(req.count)
    p = MODEL.profile(req.profile or "")
    return p.compute_slices / 7 if p else 0.0


def _demand(req: ResourceRequest) -> tuple[str, int]:
    """A waiting job's demand for the proposer: (profile | "any" | "full", units)."""
    if req.kind == RequestKind.GPUS:
        return FULL_PROFILE, req.count
    return (req.profile or ANY, 1) if req.kind == RequestKind.MIG else (ANY, 1)


@dataclass
class _Gpu:
    index: int
    uuid: str
    node: str
    layout: tuple[str, ...]
    instances: list[Instance] = field(default_factory=list)  # empty when MIG is off
    ready_at: float = 0.0  # re-cut in progress until then: no slices

    @property
    def mig(self) -> bool:
        return self.layout != (FULL_PROFILE,)


class _MigReplay:
    def __init__(self, jobs: list[TraceJob], gpus: int, layouts: list[tuple[str, ...]], policy: str, auto: bool,
                 borrowing: bool, users: int, quota: float | None, recut_cost_s: float, seed: int,
                 params: AutoParams, stop_grace_s: float) -> None:
        self.jobs = {j.id: j for j in jobs}
        self.order = jobs
        self.requests = {j.id: mig_request(j, seed) for j in jobs}
        if not auto and all(layout == (FULL_PROFILE,) for layout in layouts):  # no MIG: a slice job takes a GPU
            self.requests = {k: r if r.kind == RequestKind.GPUS else ResourceRequest(RequestKind.GPUS, count=1)
                             for k, r in self.requests.items()}
        self.user_of = {j.id: f"user{zlib.crc32(str(j.id).encode()) % users:03d}" for j in jobs}
        self.policy, self.auto, self.params = policy, auto, params
        self.recut_cost_s, self.stop_grace_s = recut_cost_s, stop_grace_s
        self.groups = {GROUP: GroupPolicy(GROUP, limits=Limits(max_gpus=quota), borrowing=borrowing,
                                          borrow_interactive=borrowing)}  # quota None: no limit
        self.serial = 0
        self.gpus = [_Gpu(g, f"GPU-{g:04d}", f"node{g // 8:03d}", layouts[g % len(layouts)]) for g in range(gpus)]
        for g in self.gpus:
            self._cut(g, g.layout, 0.0)
        self.pending: dict[int, PendingJob] = {}
        self.running: dict[int, RunningJob] = {}
        self.runs: dict[int, int] = Counter()  # run number per job (a preempted run is cancelled)
        self.finishes: list[tuple[float, int, int]] = []  # (time, job id, run)
        self.wakeups: list[float] = []
        self.started: dict[int, float] = {}
        self.borrowed_start: dict[int, bool] = {}
        self.equiv_s = 0.0
        self.recuts = 0
        self.preemptions = 0
        self.history: dict[str, list[float]] = {}
        self.calls = 0
        self.not_ready: dict[str, float] = {}  # new instances of a re-cut: usable from then on
        self._slices: tuple[SliceInfo, ...] | None = None

    # ------------------------------------------------------------ layout
    def _uuid(self, g: _Gpu) -> str:
        self.serial += 1
        return f"MIG-{g.index:04d}-{self.serial}"

    def _cut(self, g: _Gpu, layout: tuple[str, ...], ready_at: float) -> None:
        g.layout, g.ready_at = layout, ready_at
        if layout == (FULL_PROFILE,):
            g.instances = []
            return
        made = creation_order(MODEL, [], layout)
        assert made is not None, layout
        g.instances = [Instance(i.profile, i.start, i.size, None, self._uuid(g)) for i in made]
        self._slices = None

    def slices(self, now: float) -> tuple[SliceInfo, ...]:
        if self._slices is None:
            out = []
            for g in self.gpus:
                if not g.mig:
                    out.append(SliceInfo(g.uuid, g.uuid, FULL_PROFILE, 7, 7, 40960, g.node, GPU_NAME,
                                         drained=g.ready_at > now))
                    continue
                for i in g.instances:
                    p = MODEL.profile(i.profile)
                    assert p is not None
                    late = g.ready_at > now or self.not_ready.get(i.uuid, 0.0) > now
                    out.append(SliceInfo(i.uuid, g.uuid, i.profile, p.compute_slices, 7, p.memory_mb, g.node,
                                         GPU_NAME, drained=late))
            self._slices = tuple(out)
        return self._slices

    # ------------------------------------------------------------ events
    def run(self) -> None:
        i, n = 0, len(self.order)
        while i < n or self.finishes or self.wakeups:
            now = min(self.order[i].submit if i < n else math.inf,
                      self.finishes[0][0] if self.finishes else math.inf,
                      self.wakeups[0] if self.wakeups else math.inf)
            while self.wakeups and self.wakeups[0] <= now:
                heapq.heappop(self.wakeups)
                self._slices = None
            while self.finishes and self.finishes[0][0] <= now:
                _, job_id, run = heapq.heappop(self.finishes)
                if self.runs[job_id] == run and job_id in self.running:
                    self._end(job_id)
            while i < n and self.order[i].submit <= now:
                j = self.order[i]
                self.pending[j.id] = PendingJob(id=j.id, user=self.user_of[j.id], group=GROUP,
                                                request=self.requests[j.id], submitted_at=j.submit,
                                                time_limit_s=max(j.duration, 1.0))
                i += 1
            if self.pending:
                self._pass(now)

    def _end(self, job_id: int) -> None:
        del self.running[job_id]
        self._slices = None

    def _pass(self, now: float) -> None:
        self.calls += 1
        snap = Snapshot(now=now, slices=self.slices(now), pending=tuple(self.pending.values()),
                        running=tuple(self.running.values()), groups=self.groups, policy=self.policy)
        result = schedule(snap)
        for p in result.placements:
            job = self.pending.pop(p.job_id)
            trace = self.jobs[job.id]
            self.runs[job.id] += 1
            equiv = _equiv(job.request)
            self.running[job.id] = RunningJob(job.id, job.user, GROUP, p.slices, now, job.time_limit_s,
                                              gpu_equiv=equiv)
            self.started[job.id] = now
            self.borrowed_start[job.id] = job.id in result.borrowing
            self.equiv_s += equiv * trace.duration
            heapq.heappush(self.finishes, (now + trace.duration, job.id, self.runs[job.id]))
        for v in result.victims:
            job = self.running.pop(v.job_id, None)
            if job is None:
                continue
            self.preemptions += 1
            trace = self.jobs[job.id]
            self.equiv_s -= job.gpu_equiv * max(0.0, job.started_at + trace.duration - now - self.stop_grace_s)
            self.runs[job.id] += 1  # its finish event is void
            self.pending[job.id] = PendingJob(id=job.id, user=job.user, group=GROUP, request=self.requests[job.id],
                                              submitted_at=trace.submit, time_limit_s=max(trace.duration, 1.0),
                                              requeue_count=1, eligible_at=now + self.stop_grace_s)
            heapq.heappush(self.wakeups, now + self.stop_grace_s)
        if result.placements or result.victims:
            self._slices = None
        if self.auto and self.pending:
            self._auto(now, result)

    def _auto(self, now: float, result: object) -> None:
        pending = getattr(result, "pending")
        demand: Counter[str] = Counter()
        for job_id, job in self.pending.items():
            info = pending.get(job_id)
            if info is not None and info.reason in (Reason.RESOURCES, Reason.NEVER_FITS, Reason.PRIORITY):
                key, units = _demand(job.request)
                demand[key] += units
        if not demand:
            return
        held = {u for j in self.running.values() for u in j.slices}
        views = []
        for g in self.gpus:
            if g.ready_at > now:
                continue
            insts = tuple(Instance(i.profile, i.start, i.size, None, i.uuid, i.uuid in held) for i in g.instances)
            views.append(GpuView(g.uuid, MODEL.key, g.mig, insts, busy_full=g.uuid in held, index=g.index))
        proposal = propose(views, demand, self.history, now, self.params)
        if proposal is None:
            return
        g = next(x for x in self.gpus if x.uuid == proposal.gpu)
        self.recuts += 1
        self.history.setdefault(g.uuid, []).append(now)
        ready = now + self.recut_cost_s
        if proposal.plan is None:  # MIG mode change of an idle GPU
            self._cut(g, proposal.target, ready)
        else:
            keep = {i.uuid for i in proposal.plan.keep}
            kept = [i for i in g.instances if i.uuid in keep]
            made = [Instance(s.profile, s.start, MODEL.profile(s.profile).memory_slices, None,  # type: ignore[union-attr]
                             self._uuid(g)) for s in proposal.plan.creates]
            g.layout, g.instances = proposal.target, kept + made
            for i in made:
                self.not_ready[i.uuid] = ready
        heapq.heappush(self.wakeups, ready)
        self._slices = None


def _metrics(r: _MigReplay, gpus: int) -> dict[str, object]:
    unstarted = sum(1 for j in r.order if j.id not in r.started)
    jobs = [j for j in r.order if j.id in r.started]
    waits = sorted(r.started[j.id] - j.submit for j in jobs)
    ends = {j.id: r.started[j.id] + j.duration for j in jobs}
    first, last = min(j.submit for j in jobs), max(ends.values())
    makespan = last - first
    slowdowns: dict[str, list[float]] = {}
    for j in jobs:
        slowdowns.setdefault(r.user_of[j.id], []).append((ends[j.id] - j.submit) / max(j.duration, 1.0))
    within = [r.started[j.id] - j.submit for j in jobs if not r.borrowed_start.get(j.id)]
    by_request: dict[str, list[float]] = {}
    for j in jobs:
        by_request.setdefault(request_name(r.requests[j.id]), []).append(r.started[j.id] - j.submit)
    return {
        "jobs": len(jobs),
        "clamped_jobs": sum(1 for j in jobs if j.asked_gpus > MAX_WHOLE),
        "unstarted": unstarted,  # jobs the layout never served (a static layout without their profile)
        "mean_wait_s": sum(waits) / len(waits),
        "p50_wait_s": _percentile(waits, 0.50),
        "p99_wait_s": _percentile(waits, 0.99),
        "mean_jct_s": sum(ends[j.id] - j.submit for j in jobs) / len(jobs),
        "makespan_s": makespan,
        "gpu_equiv_utilization": r.equiv_s / (gpus * makespan) if makespan > 0 else 0.0,
        "jain_fairness": jain_index([sum(v) / len(v) for v in slowdowns.values()]),
        "within_quota_mean_wait_s": sum(within) / len(within) if within else 0.0,
        "jobs_by_request": {k: len(v) for k, v in sorted(by_request.items())},
        "mean_wait_by_request_s": {k: round(sum(v) / len(v), 1) for k, v in sorted(by_request.items())},
        "recuts": r.recuts,
        "preemptions": r.preemptions,
        "schedule_calls": r.calls,
    }


def _slot_layouts() -> list[str]:
    """Per-GPU candidates: every filled layout made of profiles the mix asks for (no 1g.10gb, no +me), and full."""
    asked = {name for name, _ in SHORT + LONG}
    return ["+".join(layout) for layout, _ in _candidates(MODEL.key) if set(layout) <= asked] + [FULL_PROFILE]


PATTERN_START = (FULL_PROFILE, "+".join(BALANCED), "1g.5gb+2g.10gb+4g.20gb", "+".join(BALANCED))


def _search_static(run: Callable[[str], dict[str, object]], sweeps: int = 2) -> tuple[str, dict[str, object], int]:
    """Coordinate descent over 4-GPU patterns (GPU g gets slot g mod 4): each slot in turn tries every
    candidate layout, keeping the best mean JCT (a layout that leaves jobs unserved scores infinite)."""
    seen: dict[str, dict[str, object]] = {}

    def score(pattern: list[str]) -> float:
        spec = ";".join(pattern)
        if spec not in seen:
            seen[spec] = run(spec)
        res = seen[spec]
        return math.inf if res["unstarted"] else float(res["mean_jct_s"])  # type: ignore[arg-type]

    best = list(PATTERN_START)
    best_score = score(best)
    for _ in range(sweeps):
        improved = False
        for slot in range(len(best)):
            for cand in _slot_layouts():
                trial = best[:slot] + [cand] + best[slot + 1:]
                value = score(trial)
                if value < best_score:
                    best, best_score, improved = trial, value, True
        if not improved:
            break
    spec = ";".join(best)
    return spec, seen[spec], len(seen)


def simulate_mig(trace_path: str, gpus: int, mig_policy: str = "auto", borrowing: bool = False, users: int = 16,
                 quota: float | None = None, recut_cost_s: float = 30.0, seed: int = 0, max_jobs: int | None = None,
                 scheduler: str = "backfill", params: AutoParams = AutoParams(), stop_grace_s: float = 30.0,
                 ) -> dict[str, object]:
    """Replay on ``gpus`` A100-40GB GPUs; see the module docstring."""
    if gpus < 1:
        raise ValueError("gpus must be at least 1")
    if scheduler not in ("fifo", "backfill", "priority"):
        raise ValueError(f"scheduler must be fifo, backfill or priority, not {scheduler!r}")
    node = min(8, gpus) if quota is None else max(1, min(8, gpus, int(quota)))  # a job fits its quota
    jobs = load_trace(trace_path, node)[:max_jobs]
    if not jobs:
        raise ValueError(f"{trace_path}: no jobs")
    found = None
    if mig_policy == "best-static":
        spec, res, searched = _search_static(lambda spec: simulate_mig(
            trace_path, gpus, f"static:{spec}", borrowing, users, quota, recut_cost_s, seed, max_jobs, scheduler,
            params, stop_grace_s))
        out = dict(res)
        out.update(mig_policy="best-static", layout=spec, searched=searched)
        return out
    if mig_policy == "auto":
        layouts, auto = [BALANCED], True
    elif mig_policy.startswith("static:"):
        layouts, auto = parse_static(mig_policy[len("static:"):]), False
        found = mig_policy[len("static:"):]
    else:
        raise ValueError(f"--mig-policy must be static:<layout>, best-static or auto, not {mig_policy!r}")
    replay = _MigReplay(jobs, gpus, layouts, scheduler, auto, borrowing, users, quota, recut_cost_s, seed, params,
                        stop_grace_s)
    replay.run()
    result: dict[str, object] = {"trace": trace_path, "gpus": gpus, "mig_policy": mig_policy, "scheduler": scheduler,
                                 "borrowing": borrowing, "users": users, "quota": quota, "seed": seed,
                                 "recut_cost_s": recut_cost_s}
    if found is not None:
        result["layout"] = found
    result.update(_metrics(replay, gpus))
    return result
