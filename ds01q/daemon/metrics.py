"""Prometheus exporter: a custom collector that reads the database at scrape time.

ds01-infra's names are kept where the meaning is the same:

    ds01_gpu_allocated{gpu_slot,container,user,profile}   1 per allocated slice
    ds01_user_gpu_equivalents{user}                         GPU-equivalents in use (2g of 7 = 0.286)
    ds01_user_gpus_allocated{user}                          slices in use
    ds01_containers_total{status}                           status: running | starting
    ds01_mig_slot_info{gpu,gpu_i_id,slot,mig_uuid,profile}  1 per MIG slice

``gpu_slot`` is ``<gpu index>`` for a whole GPU and ``<gpu index>.<n>`` for a MIG
slice, n its place among the GPU's slices in UUID order (ds01q does not know the
MIG device index; join on ``mig_uuid`` for exact matches). ``gpu_i_id`` is empty.

ds01q's own:

    ds01q_up                                  1 when the database could be read
    ds01q_queue_jobs{state,group}             PENDING | HELD | STARTING | RUNNING | STOPPING jobs
    ds01q_slices_allocated{profile}, ds01q_slices_free{profile}, ds01q_slices_drained{profile}
    ds01q_gpu_equivalents_capacity            present, undrained GPU-equivalents
    ds01q_group_gpu_equivalents{group}        in use per group
    ds01q_job_wait_seconds                    histogram: submit (or requeue) → RUNNING
    ds01q_rollup_done_until_timestamp{period} where the accounting rollup has got to

The wait histogram is fed from ``job_events``: each scrape reads the RUNNING events
added since the last one (by event id), so it counts every job start since the
exporter started, costs nothing when idle, and needs no call from the daemon. A
requeued run waits from its PREEMPTED/NODE_FAIL event, a first run from its submit.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from ds01q.accounting.models import RollupWatermark
from ds01q.types import ACTIVE_NAMES, HOLDING_NAMES
from ds01q.errors import Ds01qError
from ds01q.services import baremetal
from ds01q.db.models import Allocation, Gpu, Job, JobEvent, Slice

if TYPE_CHECKING:
    from ds01q.services.context import Context

__all__ = ["WAIT_BUCKETS", "DbCollector", "make_registry", "start_exporter"]

log = logging.getLogger("ds01q.daemon.metrics")
QUEUE_STATES = ACTIVE_NAMES
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
                86400.0, 259200.0)


class _WaitHistogram:
    """Cumulative wait-time histogram fed from new RUNNING events."""

    def __init__(self, start_after: int) -> None:
        self.cursor = start_after
        self.counts = [0] * (len(WAIT_BUCKETS) + 1)
        self.total = 0.0
        self.lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        i = next((n for n, le in enumerate(WAIT_BUCKETS) if seconds <= le), len(WAIT_BUCKETS))
        self.counts[i] += 1
        self.total += seconds

    def update(self, session: Session) -> None:
        prev = aliased(JobEvent)
        requeued = (select(func.max(prev.at)).where(prev.job_id == JobEvent.job_id, prev.id < JobEvent.id,
                                                    prev.state.in_(("PREEMPTED", "NODE_FAIL")))
                    .scalar_subquery())
        q = (select(JobEvent.id, JobEvent.at, Job.submitted_at, requeued)
             .join(Job, Job.id == JobEvent.job_id)
             .where(JobEvent.id > self.cursor, JobEvent.state == "RUNNING").order_by(JobEvent.id))
        for ev_id, at, submitted, requeue_at in session.execute(q):
            self.observe(at - (requeue_at if requeue_at is not None else submitted))
            self.cursor = ev_id

    def metric(self) -> HistogramMetricFamily:
        buckets, acc = [], 0
        for le, n in zip([*(repr(b) for b in WAIT_BUCKETS), "+Inf"], self.counts):
            acc += n
            buckets.append((le, acc))
        return HistogramMetricFamily("ds01q_job_wait_seconds", "Time from submit (or requeue) to RUNNING",
                                     buckets=buckets, sum_value=self.total)


def _slots(gpus: dict[str, Gpu], slices: list[Slice]) -> dict[str, str]:
    """gpu_slot per slice uuid: '<index>' for a whole GPU, '<index>.<n>' for a MIG slice."""
    out: dict[str, str] = {}
    per_gpu: dict[str, list[Slice]] = defaultdict(list)
    for s in slices:
        per_gpu[s.gpu_uuid].append(s)
    for gpu_uuid, ss in per_gpu.items():
        idx = gpus[gpu_uuid].index if gpu_uuid in gpus else -1
        for n, s in enumerate(sorted(ss, key=lambda s: s.uuid)):
            out[s.uuid] = str(idx) if s.profile == "full" else f"{idx}.{n}"
    return out


_LABEL_KEY = os.urandom(16)  # per process: a pseudonym cannot be reversed by hashing a list of usernames


def pseudonym(user: str) -> str:
    """The ``user`` label when ``security.metrics_show_users`` is off: stable for this daemon's lifetime."""
    return "u-" + hmac.new(_LABEL_KEY, user.encode(), hashlib.sha256).hexdigest()[:10]


class DbCollector(Collector):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        with ctx.sessions() as s:
            start = s.scalar(select(func.max(JobEvent.id))) or 0
        self.waits = _WaitHistogram(start)

    def collect(self) -> Iterator[Metric]:
        try:
            with self.ctx.sessions() as s, self.waits.lock:
                metrics = list(self._metrics(s))
                self.waits.update(s)
                metrics.append(self.waits.metric())
        except Exception as e:  # a scrape must answer; ds01q_up tells Prometheus what happened
            log.warning("metrics: cannot read the database: %s", e)
            yield GaugeMetricFamily("ds01q_up", "1 when the ds01q database could be read", value=0)
            return
        yield GaugeMetricFamily("ds01q_up", "1 when the ds01q database could be read", value=1)
        yield from metrics

    def _metrics(self, s: Session) -> Iterator[Metric]:
        yield self._queue(s)
        gpus = {g.uuid: g for g in s.scalars(select(Gpu).where(Gpu.present.is_(True)))}
        slices = list(s.scalars(select(Slice).where(Slice.present.is_(True)).order_by(Slice.uuid)))
        allocs = list(s.execute(select(Allocation, Job.user, Job.group, Job.container, Job.state)
                                .join(Job, Job.id == Allocation.job_id).where(Allocation.released_at.is_(None))))
        slots = _slots(gpus, slices)
        yield from self._slices(gpus, slices, {a.slice_uuid for a, *_ in allocs})
        yield from self._allocations(allocs, slots)
        yield self._slot_info(gpus, slices, slots)
        yield self._containers(s)
        yield self._foreign()
        wm = GaugeMetricFamily("ds01q_rollup_done_until_timestamp",
                               "Every accounting period ending by this time has been rolled up", labels=["period"])
        for w in s.scalars(select(RollupWatermark)):
            if w.done_until is not None:
                wm.add_metric([w.period], w.done_until)
        yield wm

    def _foreign(self) -> Metric:
        m = GaugeMetricFamily("ds01q_foreign_gpu_processes", "GPU processes of no ds01q job, by user and slice",
                              labels=["user", "slice"])
        watch = baremetal.watch_for(self.ctx)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        show = self.ctx.config.security.metrics_show_users
        for p in (watch.latest()["processes"] if watch else []):
            counts[(p["user"] if show else pseudonym(p["user"]), p["slice_uuid"])] += 1
        for (user, sl), n in sorted(counts.items()):
            m.add_metric([user, sl], n)
        return m

    def _queue(self, s: Session) -> Metric:
        m = GaugeMetricFamily("ds01q_queue_jobs", "Jobs in the queue by state and group", labels=["state", "group"])
        counts = {(st, g): n for st, g, n in s.execute(
            select(Job.state, Job.group, func.count()).where(Job.state.in_(QUEUE_STATES)).group_by(Job.state, Job.group))}
        groups = sorted(set(self.ctx.config.groups) | {g for _, g in counts})
        for st in QUEUE_STATES:
            for g in groups:
                m.add_metric([st, g], counts.get((st, g), 0))
        return m

    def _slices(self, gpus: dict[str, Gpu], slices: list[Slice], busy: set[str]) -> Iterator[Metric]:
        names = ("allocated", "free", "drained")
        ms = {n: GaugeMetricFamily(f"ds01q_slices_{n}", f"Slices {n} by profile", labels=["profile"]) for n in names}
        counts: dict[tuple[str, str], int] = defaultdict(int)
        capacity = 0.0
        for sl in slices:
            drained = sl.drained or (sl.gpu_uuid in gpus and gpus[sl.gpu_uuid].drained)
            state = "allocated" if sl.uuid in busy else ("drained" if drained else "free")
            counts[(state, sl.profile)] += 1
            if not drained:
                capacity += 1.0 if sl.profile == "full" else sl.compute_slices / max(sl.gpu_compute_slices, 1)
        for prof in sorted({sl.profile for sl in slices}):
            for n in names:
                ms[n].add_metric([prof], counts[(n, prof)])
        yield from ms.values()
        yield GaugeMetricFamily("ds01q_gpu_equivalents_capacity", "GPU-equivalents present and not drained",
                                value=round(capacity, 6))

    def _allocations(self, allocs: list[Any], slots: dict[str, str]) -> Iterator[Metric]:
        alloc = GaugeMetricFamily("ds01_gpu_allocated", "GPU/MIG slot allocation status (1=allocated)",
                                  labels=["gpu_slot", "container", "user", "profile"])
        equiv = GaugeMetricFamily("ds01_user_gpu_equivalents", "GPU-equivalents allocated to user", labels=["user"])
        count = GaugeMetricFamily("ds01_user_gpus_allocated", "GPUs/MIG slices allocated to user", labels=["user"])
        group = GaugeMetricFamily("ds01q_group_gpu_equivalents", "GPU-equivalents allocated to group",
                                  labels=["group"])
        per_user: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        per_group: dict[str, float] = defaultdict(float)
        show = self.ctx.config.security.metrics_show_users
        for a, user, grp, container, _state in allocs:
            user = user if show else pseudonym(user)
            name = (container or "")[:12] or f"ds01q-job-{a.job_id}"
            alloc.add_metric([slots.get(a.slice_uuid, a.slice_uuid), name, user, a.profile], 1)
            per_user[user][0] += a.gpu_equiv
            per_user[user][1] += 1
            per_group[grp] += a.gpu_equiv
        for user, (eq, n) in sorted(per_user.items()):
            equiv.add_metric([user], round(eq, 6))
            count.add_metric([user], n)
        for grp in sorted(set(self.ctx.config.groups) | set(per_group)):
            group.add_metric([grp], round(per_group.get(grp, 0.0), 6))
        yield from (alloc, equiv, count, group)

    def _slot_info(self, gpus: dict[str, Gpu], slices: list[Slice], slots: dict[str, str]) -> Metric:
        m = GaugeMetricFamily("ds01_mig_slot_info", "MIG slot mapping for DCGM metric joins",
                              labels=["gpu", "gpu_i_id", "slot", "mig_uuid", "profile"])
        for sl in slices:
            if sl.profile != "full":
                idx = str(gpus[sl.gpu_uuid].index) if sl.gpu_uuid in gpus else ""
                m.add_metric([idx, "", slots[sl.uuid], sl.uuid, sl.profile], 1)
        return m

    def _containers(self, s: Session) -> Metric:
        m = GaugeMetricFamily("ds01_containers_total", "ds01q job containers by status", labels=["status"])
        counts = dict(s.execute(select(Job.state, func.count()).where(Job.state.in_(HOLDING_NAMES))
                                .group_by(Job.state)).all())
        for state in HOLDING_NAMES:
            m.add_metric([state.lower()], counts.get(state, 0))
        return m


def make_registry(ctx: Context) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one) holding the database collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DbCollector(ctx))
    return registry


def start_exporter(ctx: Context, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve /metrics on ``addr:port`` from a daemon thread; returns the server (``.shutdown()`` stops it).
    The default address is local only, like ds01-infra's exporter. The port is bound before anything
    is announced; if another process already holds it (a squatter serving forged metrics), the
    daemon refuses to start with a one-line error instead of running beside it."""
    try:
        server, _thread = start_http_server(port, addr=addr, registry=make_registry(ctx))
    except OSError as e:
        raise Ds01qError(f"metrics port {addr}:{port} cannot be bound ({e.strerror}): another process holds "
                            "it; find and stop it (ss -ltnp) before starting ds01q") from None
    log.info("metrics on http://%s:%s/metrics", addr, server.server_port)
    return server
