"""The one loop of ``ds01q server``: reconcile → reap → enforce → sample → schedule → dispatch.

Handlers (submit, cancel, a container's exit) only change the database and call
``wake()``; the loop does all the work, at least every ``tick_s``. A slice is
reserved (STARTING, allocation rows) in one transaction (``assume``), and the
container is launched only after that commits. A failed launch forgets the
reservation and requeues the job with backoff. A job in STOPPING has its
container stopped; its exit is recorded with the stop's outcome (``jobstate.end_run``).

Recording exits lives in controller/exits.py and launching in controller/launching.py, as parts
of the one ``Controller`` class. The controller is what services know as their ``LoopHandle``: ``wake()``,
``refresh_inventory()`` and ``last_cycle()``. It never imports a service.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from ds01q import accounting
from ds01q.controller.autolayout import AutoLayout
from ds01q.controller.deps import LoopDeps
from ds01q.controller.exits import ExitRecording, one_line
from ds01q.controller.health import Health, executor_down
from ds01q.controller.idle import IdleTracker, check_idle
from ds01q.controller.inventory import read_inventory, reconcile
from ds01q.controller.launching import Launching
from ds01q.controller.reconcile import Unstarted, reconcile_containers
from ds01q.controller.preempt import Reclaim, is_reclaim, preempt
from ds01q.controller.nodes import check_nodes
from ds01q.controller.notify import Notifier
from ds01q.controller.signals import send_due_signals
from ds01q.controller.snapshot import PendingCache, UsageCache, build_snapshot
from ds01q.db import jobstate, store
from ds01q.db.models import Job
from ds01q.errors import Ds01qError
from ds01q.faultpoints import crash_point
from ds01q.executors.base import ExitInfo, Handle
from ds01q.scheduler import schedule
from ds01q.scheduler.snapshot import CycleResult
from ds01q.types import JobState, StopOutcome

log = logging.getLogger("ds01q.controller")
SWEEP_EVERY_S = 5.0
MIN_PASS_GAP_S = 0.025  # from the start of one pass to the next: at most 40 passes a second
S = JobState
_PERSIST_REASONS = (update(Job.__table__)
                    .where(Job.__table__.c.id == bindparam("b_id"), Job.__table__.c.state == S.PENDING.value)
                    .values(reason=bindparam("b_reason"), reason_detail=bindparam("b_detail"),
                            priority=bindparam("b_prio"), estimated_start=bindparam("b_est")))
# built once: each pass asks whether a job is to be stopped (most passes: none)
_STOP_DUE = select(Job.id).where((Job.state == S.STOPPING.value) | (
    (Job.state == S.RUNNING.value) & (Job.started_at + Job.time_limit_s <= bindparam("now")))).limit(1)


def due(last: float, now: float, every_s: float) -> bool:
    """Has ``every_s`` passed since ``last``? Also when the clock went back past ``last``."""
    return now - last >= every_s or now < last


class Controller(ExitRecording, Launching):
    """``inline=True`` launches and stops on the caller's thread (tests: one ``tick()`` does it all)."""

    def __init__(self, deps: LoopDeps, *, inline: bool = False) -> None:
        self.deps = deps
        self.inline = inline
        self.executor = deps.executor
        self.clock = deps.clock
        self.wake_event = threading.Event()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.exited: set[int] = set()
        self.launching: set[int] = set()
        self.stopping: set[int] = set()
        self.refreshes: list[Future[dict[str, Any]]] = []
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ds01q-exec")
        # exits seen by the executor are recorded here, several at once (``on_exit``); removals of
        # finished containers run apart from launches and exits (the slices are free already)
        self.exits = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ds01q-exit")
        self.cleanup = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ds01q-remove")
        self.removing: set[str] = set()  # containers of ended jobs whose removal is queued or running
        self.usage = UsageCache()
        self.pending_jobs = PendingCache()
        self.persisted: dict[int, tuple[Any, ...]] = {}
        self.persisted_at: float | None = None  # when priorities and estimates were last all stored
        self.last_sweep = 0.0
        self.last_sample = 0.0
        self.last_timed = -1e18  # when the --signal and idle checks last ran
        self.idle = IdleTracker()
        self._last_cycle: CycleResult | None = None
        self.health = Health()
        self.stop_retry_at: dict[int, float] = {}  # a failed stop is retried from then (backoff)
        self.autolayout = AutoLayout()
        self.notifier = Notifier(inline=inline)
        self.reclaim = Reclaim()  # preempted borrowers: signal, grace, kill
        self.unstarted = Unstarted()  # containers of STARTING jobs seen created, not started (reconcile.py)

    @property
    def config(self) -> Any:
        return self.deps.config

    def session(self) -> Session:
        return self.deps.sessions()

    def txn(self) -> Any:
        return self.deps.sessions.begin()

    # ------------------------------------------------------------ the LoopHandle services see
    def wake(self) -> None:
        self.wake_event.set()

    def last_cycle(self) -> CycleResult | None:
        return self._last_cycle

    def refresh_inventory(self, wait: bool = True) -> dict[str, Any]:
        """Re-read the config and the inventory on the loop's thread; wait for the result."""
        fut: Future[dict[str, Any]] = Future()
        with self.lock:
            self.refreshes.append(fut)
        self.wake()
        return fut.result(timeout=60) if wait else {}

    def loop_health(self) -> dict[str, Any]:
        return self.health.to_dict(self.clock.now(), self.config.tick_s)

    def on_engine_lost(self, error: str) -> None:
        """The executor's event stream broke: the engine is down or restarting. Marked down at once (the
        container sweep marks it up again), so that a restart quicker than a sweep is still an outage: an
        engine without live-restore kills its containers, and those runs are lost, not failed."""
        self.health.executor_down(f"lost the engine: {error}", self.clock.now())
        self.wake()

    # ------------------------------------------------------------ loop
    def run(self) -> None:
        self.health.guard("watch", self.clock.now(), self.executor.watch, self.on_exit, self.on_engine_lost)
        self.health.guard("recover", self.clock.now(), self.recover)
        while not self.stop_event.is_set():
            self.wake_event.clear()
            began = time.monotonic()
            try:
                self.tick()
            except Exception:  # the loop must survive anything; the next tick retries
                log.exception("tick failed")
            self.wake_event.wait(self.config.tick_s)
            # wakes close together (a burst of submits, one request each) make one pass, not one each
            rest = MIN_PASS_GAP_S - (time.monotonic() - began)
            if rest > 0:
                self.stop_event.wait(rest)

    def close(self) -> None:
        self.stop_event.set()
        self.wake()
        self.exits.shutdown(wait=True)
        self.pool.shutdown(wait=True)
        self.cleanup.shutdown(wait=True)
        self.executor.close()

    def tick(self) -> CycleResult | None:
        """One pass; every step is guarded (``Health.guard``): a failing step never ends the loop."""
        now = self.clock.now()
        guard = self.health.guard
        guard("inventory", now, self.reconcile_inventory, now)
        guard("nodes", now, check_nodes, self.deps, now)  # several nodes: silent ones go DOWN, their jobs NODE_FAIL
        full = due(self.last_sweep, now, SWEEP_EVERY_S)
        guard("reap", now, self.reap, full)
        # containers against jobs, by label: adopt, record, requeue the vanished, remove strays; while the
        # executor is down every tick: the queue resumes within a tick of the engine's return, not a sweep
        if full or not self.health.executor_ok:
            guard("containers", now, reconcile_containers, self)
        guard("enforce", now, self.enforce, now)
        if due(self.last_timed, now, min(1.0, self.config.tick_s)):
            # checks of time alone, not of what woke the pass: at most once a second (a pass runs at each
            # submit, exit and launch)
            self.last_timed = now
            guard("signal", now, send_due_signals, self, now)  # --signal: SIG before the time limit, once per run
            guard("idle", now, check_idle, self.deps, self.idle, now)  # interactive idle limit: marks jobs STOPPING
        guard("sample", now, self.sample, now)
        result = guard("schedule", now, self.schedule_and_dispatch, self.clock.now())
        guard("notify", now, self.notifier.step, self, self.clock.now())  # --mail-type: the notify hook
        self.health.ticked(self.clock.now())
        return result

    # ------------------------------------------------------------ reconcile
    def reconcile_inventory(self, now: float) -> None:
        with self.lock:
            futs, self.refreshes = self.refreshes, []
        if not futs and self.config.inventory_source == "static":
            return
        try:
            if futs:
                self.deps.settings.reload()
            records = read_inventory(self.config)
            with self.txn() as session:
                res = reconcile(session, records, now, self.config.node)
            if res.added or res.removed:
                log.info("inventory: added %s removed %s", res.added, res.removed)
            out: dict[str, Any] = res.to_dict()
            for f in futs:
                f.set_result(out)
        except Exception as e:  # reported to whoever asked; the loop goes on
            for f in futs:
                f.set_exception(e)
            if not futs:
                log.warning("inventory refresh failed: %s", e)

    def recover(self) -> None:
        """After a restart: containers against jobs by label (``reconcile.reconcile_containers``).
        If the executor cannot be listed now, the next sweep does it."""
        reconcile_containers(self)
        self.last_sweep = 0.0

    # ------------------------------------------------------------ limits and stops
    def enforce(self, now: float) -> None:
        stop: list[tuple[int, str, float]] = []
        signals: list[tuple[int, str, int, bool]] = []
        grace, stop_grace = self.config.preempt_grace_s, self.config.executor.stop_grace_s
        with self.session() as session:  # most passes have nothing to stop: no write transaction for them
            due = session.scalar(_STOP_DUE, {"now": now})
        if due is None:
            self.reclaim.keep_only(set())
            return
        with self.txn() as session:
            for job in store.jobs_in(session, (S.RUNNING.value,)):
                if job.started_at is not None and now >= job.started_at + job.time_limit_s:
                    jobstate.request_stop(session, job, StopOutcome.TIMEOUT, at=now, by="ds01q")
            stopping = store.jobs_in(session, (S.STOPPING.value,))
            self.reclaim.keep_only({j.id for j in stopping})
            for job in stopping:
                if job.id in self.launching or now < self.stop_retry_at.get(job.id, 0.0):
                    continue
                if job.container is None:  # stopped before its container started: nothing runs
                    self._end(session, job, ExitInfo(None, False, None, None, None, "stopped before launch"), now)
                elif job.id not in self.stopping:
                    step = self.reclaim.step(job, now, grace, stop_grace) if is_reclaim(job) else None
                    if step is not None and step.action == "signal":
                        signals.append((job.id, job.container, step.sig, step.batch_only))
                    elif step is None or step.action == "kill":
                        stop.append((job.id, job.container, stop_grace if step is None else step.grace_s))
        for job_id, ref, sig, batch_only in signals:
            self.run_async(self._signal, job_id, ref, sig, batch_only, grace)
        for job_id, ref, grace_s in stop:
            crash_point("cancel")  # stop committed (STOPPING), not yet sent (tests/faults)
            self._stop_async(job_id, ref, remove=False, grace_s=grace_s)

    def _signal(self, job_id: int, ref: str, sig: int, batch_only: bool, grace_s: float) -> None:
        """A preempted borrower's signal; its kill is due ``grace_s`` after it was sent."""
        try:
            self.executor.signal(Handle(job_id=job_id, ref=ref), sig, batch_only)
            ok = True
        except Exception as e:  # not sent: the job is stopped the usual way on the next pass
            log.warning("signal %s to preempted job %s failed: %s", sig, job_id, one_line(e))
            ok = False
        self.reclaim.signalled(job_id, ok, self.clock.now(), grace_s)
        if not ok:
            self.wake()

    def _stop_async(self, job_id: int, ref: str, remove: bool, grace_s: float | None = None) -> None:
        with self.lock:
            self.stopping.add(job_id)
        grace = self.config.executor.stop_grace_s if grace_s is None else grace_s

        def run() -> None:
            h = Handle(job_id=job_id, ref=ref)
            try:
                self.executor.stop(h, grace)
                if remove:
                    self.executor.remove(h)
                self.stop_retry_at.pop(job_id, None)
            except Exception as e:  # retried: by enforce (after a backoff) or the next container sweep
                log.warning("stop of job %s failed, will retry: %s", job_id, one_line(e))
                self.stop_retry_at[job_id] = self.clock.now() + 2.0
                with self.lock:
                    self.stopping.discard(job_id)
            finally:
                if remove:
                    with self.lock:
                        self.stopping.discard(job_id)
                self.on_exit(job_id)

        self.run_async(run)

    def run_async(self, fn: Any, *args: Any) -> None:
        if self.inline:
            fn(*args)
        else:
            self.pool.submit(fn, *args)

    # ------------------------------------------------------------ schedule
    def schedule_and_dispatch(self, now: float) -> CycleResult:
        with self.session() as session:
            snap = build_snapshot(session, self.config, now, self.usage, self.pending_jobs)
        result = schedule(snap)
        if not self.health.executor_ok:  # place nothing while the executor is down: all wait, saying why
            result = executor_down(result, self.health.executor_error or "")
        self._last_cycle = result
        if preempt(self.deps.sessions, result.victims, now):
            self.enforce(now)  # start stopping the victims in this tick
        self.autolayout.step(self.config, self.deps.sessions, result, now, lambda: read_inventory(self.config),
                             self.run_async, self.wake, self.clock.now)
        for p in result.placements:
            if self.assume(p, now):
                crash_point("assume")  # placement committed, no launch yet (tests/faults)
                self._launch_async(p.job_id)
        self._persist_reasons(result, now)  # after the launches: what waits is told why, but launches come first
        return result

    def _persist_reasons(self, result: CycleResult, now: float) -> None:
        """Store why each job waits. A new reason is stored at once; its detail, priority and start
        estimate, at most once a tick (every start moves them for many waiting jobs, e.g. "waiting behind
        reserved job N", and a pass runs at each submit, exit and launch)."""
        last = self.persisted_at
        due = last is None or not last <= now < last + self.config.tick_s
        if due:
            self.persisted_at = now
        changed = {}
        for job_id, info in result.pending.items():
            key = (info.reason, info.detail, round(info.priority, 2), info.estimated_start)
            old = self.persisted.get(job_id)
            if old != key and (due or old is None or old[0] != key[0]):
                changed[job_id] = key
        if not changed:
            return
        rows = [{"b_id": job_id, "b_reason": reason, "b_detail": detail or None, "b_prio": prio, "b_est": est}
                for job_id, (reason, detail, prio, est) in changed.items()]
        with self.txn() as session:  # one statement, many rows; a job no longer PENDING is left alone
            session.execute(_PERSIST_REASONS, rows)
        self.persisted.update(changed)

    # ------------------------------------------------------------ usage samples
    def sample(self, now: float) -> None:
        """Every ``sample_interval_s``: cgroup CPU/memory of each running job (read outside any transaction)."""
        if not due(self.last_sample, now, self.config.sample_interval_s):
            return
        self.last_sample = now
        with self.session() as session:
            rows = [(j.id, j.container) for j in store.jobs_in(session, (S.RUNNING.value,)) if j.container]
        readings = []
        for job_id, ref in rows:
            try:
                readings.append((job_id, ref, self.executor.sample(Handle(job_id=job_id, ref=ref or ""))))
            except Ds01qError as e:
                log.debug("sample of job %s failed: %s", job_id, e)
        if not readings:
            return
        with self.txn() as session:
            for job_id, ref, usage in readings:
                job = session.get(Job, job_id)
                if job is not None and job.container == ref and job.state == S.RUNNING.value:
                    accounting.on_sample(session, job, usage, now)
