"""The one loop of ``ds01q server``: reconcile → enforce → schedule → dispatch.

Handlers (submit, cancel, a container's exit) only change the database and call
``wake()``; the loop does all the work, at least every ``tick_s``. A slice is
reserved (STARTING, allocation rows) in one transaction, and the container is
launched only after that commits. A failed launch forgets the reservation and
requeues the job with backoff.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy.exc import IntegrityError

from ds01q import accounting, store
from ds01q.controller.dispatch import final_state, launch_spec
from ds01q.controller.idle import IdleTracker, check_idle
from ds01q.controller.snapshot import UsageCache, build_snapshot
from ds01q.errors import Ds01qError
from ds01q.executors.base import Executor, Handle
from ds01q.models import Job, Slice
from ds01q.scheduler import schedule
from ds01q.scheduler.snapshot import CycleResult, Placement
from ds01q.services.context import Context
from ds01q.services.inventory import read_inventory, sync
from ds01q.state import transition
from ds01q.types import JobState

log = logging.getLogger("ds01q.controller")
MAX_LAUNCH_TRIES = 3
SWEEP_EVERY_S = 5.0


class Controller:
    def __init__(self, ctx: Context, executor: Executor, cgroup_driver: str | None = None) -> None:
        self.ctx = ctx
        self.executor = executor
        self.cgroup_driver = cgroup_driver
        self.wake_event = threading.Event()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.exited: set[int] = set()
        self.launching: set[int] = set()
        self.stopping: set[int] = set()
        self.refreshes: list[Future[dict[str, Any]]] = []
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ds01q-exec")
        self.usage = UsageCache()
        self.persisted: dict[int, tuple[Any, ...]] = {}
        self.last_sweep = 0.0
        self.last_sample = 0.0
        self.idle = IdleTracker()
        ctx.wake = self.wake
        ctx.refresh_inventory = self.refresh
        ctx.executor = executor

    # ------------------------------------------------------------ wake-ups
    def wake(self) -> None:
        self.wake_event.set()

    def on_exit(self, job_id: int) -> None:
        with self.lock:
            self.exited.add(job_id)
        self.wake()

    def refresh(self, wait: bool = True) -> dict[str, Any]:
        fut: Future[dict[str, Any]] = Future()
        with self.lock:
            self.refreshes.append(fut)
        self.wake()
        return fut.result(timeout=60) if wait else {}

    # ------------------------------------------------------------ loop
    def run(self) -> None:
        self.executor.watch(self.on_exit)
        self.recover()
        while not self.stop_event.is_set():
            self.wake_event.clear()
            try:
                self.tick()
            except Exception:  # the loop must survive anything; the next tick retries
                log.exception("tick failed")
            self.wake_event.wait(self.ctx.config.tick_s)

    def close(self) -> None:
        self.stop_event.set()
        self.wake()
        self.pool.shutdown(wait=True)
        self.executor.close()

    def tick(self) -> CycleResult:
        now = self.ctx.clock.now()
        self.reconcile_inventory(now)
        self.reap(full=now - self.last_sweep >= SWEEP_EVERY_S or now < self.last_sweep)
        self.enforce(now)
        for job_id, ref in check_idle(self.ctx, self.executor, self.idle, now):  # interactive idle limit
            self._stop_async(job_id, ref, remove=False)
        self.sample(now)
        return self.schedule_and_dispatch(self.ctx.clock.now())

    # ------------------------------------------------------------ reconcile
    def reconcile_inventory(self, now: float) -> None:
        with self.lock:
            futs, self.refreshes = self.refreshes, []
        if not futs and self.ctx.config.inventory_source == "static":
            return
        try:
            if futs:
                self._reload_config()
            records = read_inventory(self.ctx.config)
            with self.ctx.sessions.begin() as session:
                res = sync(session, records, now)
            for job_id, ref in res.to_stop:
                self._stop_async(job_id, ref, remove=True)
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

    def _reload_config(self) -> None:
        from ds01q.config import load

        self.ctx.config = load(self.ctx.config.path) if self.ctx.config.path != "<config>" else self.ctx.config

    def recover(self) -> None:
        """After a restart: adopt containers that still run, forget reservations that never launched,
        and remove containers whose job already ended."""
        alive = self.executor.running()
        now = self.ctx.clock.now()
        with self.ctx.sessions.begin() as session:
            for job in store.jobs_in(session, (JobState.STARTING.value,)):
                h = alive.get(job.id)
                if h is not None:
                    job.container = h.ref
                    transition(session, job, JobState.RUNNING, at=now, by="ds01q", reason="adopted after restart")
                else:
                    self._forget(session, job, now, "daemon restarted before launch", count=False)
            known = {j.id: j for j in store.jobs_in(session, store.HOLDING)}
        for job_id, h in alive.items():
            job = known.get(job_id)
            if job is None or job.container not in (None, h.ref):
                self._stop_async(job_id, h.ref, remove=True)
        self.last_sweep = 0.0

    # ------------------------------------------------------------ exits
    def reap(self, full: bool) -> None:
        with self.lock:
            flagged, self.exited = self.exited, set()
        with self.ctx.sessions() as session:
            rows = [j for j in store.jobs_in(session, (JobState.RUNNING.value,)) if j.container]
        if full:
            self.last_sweep = self.ctx.clock.now()
        with self.lock:  # an exit may come before its launch is recorded: look again after the launch
            self.exited |= flagged & self.launching
        for job in rows:
            if job.id in self.launching or not (full or job.id in flagged):
                continue
            h = Handle(job_id=job.id, ref=job.container or "")
            try:
                info = self.executor.poll(h)
            except Ds01qError as e:
                log.warning("poll of job %s failed: %s", job.id, e)
                continue
            if info is not None:
                self._record_exit(job.id, h, info)

    def _record_exit(self, job_id: int, h: Handle, info: Any) -> None:
        now = self.ctx.clock.now()
        with self.ctx.sessions.begin() as session:
            job = store.get_job(session, job_id)
            if job.container != h.ref or not JobState(job.state).holds_slices:
                return
            state, reason = final_state(job, info)
            store.release(session, job.id, now)
            job.exit_code = info.exit_code
            job.cpu_s = info.cpu_s
            job.max_rss_bytes = info.max_rss_bytes
            job.reason = reason
            transition(session, job, state, at=now, by="ds01q", reason=reason)
            self._account_end(session, job, now)
            if state == JobState.PREEMPTED:
                job.requeue_count += 1
                transition(session, job, JobState.PENDING, at=now, by="ds01q", reason="requeued")
                job.reason = "Priority"
        with self.lock:
            self.stopping.discard(job_id)
        try:
            self.executor.remove(h)
        except Ds01qError as e:
            log.warning("remove of job %s failed: %s", job_id, e)

    # ------------------------------------------------------------ limits
    def enforce(self, now: float) -> None:
        with self.ctx.sessions.begin() as session:
            for job in store.jobs_in(session, (JobState.RUNNING.value,)):
                if job.started_at is not None and now >= job.started_at + job.time_limit_s and not job.end_state:
                    job.end_state = JobState.TIMEOUT.value
                    job.cancel_requested = True
                if job.cancel_requested and job.container and job.id not in self.stopping:
                    self._stop_async(job.id, job.container, remove=False)

    def _stop_async(self, job_id: int, ref: str, remove: bool) -> None:
        with self.lock:
            self.stopping.add(job_id)

        def run() -> None:
            h = Handle(job_id=job_id, ref=ref)
            try:
                self.executor.stop(h, self.ctx.config.executor.stop_grace_s)
                if remove:
                    self.executor.remove(h)
            except Exception:
                log.exception("stop of job %s failed", job_id)
            finally:
                if remove:
                    with self.lock:
                        self.stopping.discard(job_id)
                self.on_exit(job_id)

        self.pool.submit(run)

    # ------------------------------------------------------------ schedule
    def schedule_and_dispatch(self, now: float) -> CycleResult:
        with self.ctx.sessions() as session:
            snap = build_snapshot(session, self.ctx.config, now, self.usage)
        result = schedule(snap)
        self.ctx.last_cycle = result
        self._persist_reasons(result)
        for p in result.placements:
            if self._assume(p, now):
                self._launch_async(p.job_id)
        return result

    def _persist_reasons(self, result: CycleResult) -> None:
        changed = {}
        for job_id, info in result.pending.items():
            key = (info.reason.value, info.detail, round(info.priority, 2), info.estimated_start)
            if self.persisted.get(job_id) != key:
                changed[job_id] = key
        if not changed:
            return
        with self.ctx.sessions.begin() as session:
            for job_id, (reason, detail, prio, est) in changed.items():
                job = session.get(Job, job_id)
                if job is None or job.state != JobState.PENDING.value:
                    continue
                job.reason, job.reason_detail, job.priority, job.estimated_start = reason, detail or None, prio, est
        self.persisted.update(changed)

    def _assume(self, p: Placement, now: float) -> bool:
        try:
            with self.ctx.sessions.begin() as session:
                job = session.get(Job, p.job_id)
                if job is None or job.state != JobState.PENDING.value:
                    return False
                slices = [session.get(Slice, u) for u in p.slices]
                if any(s is None or not s.present or s.drained for s in slices):
                    return False
                store.allocate(session, job, slices, now)  # type: ignore[arg-type]
                job.reason, job.reason_detail, job.estimated_start = None, None, None
                job.priority = (self.ctx.last_cycle.priorities.get(job.id, job.priority) if self.ctx.last_cycle
                                else job.priority)
                job.node = slices[0].node if slices else self.ctx.config.node
                transition(session, job, JobState.STARTING, at=now, by="scheduler",
                           reason="allocated " + (",".join(p.slices) or "no GPU"))
            self.persisted.pop(p.job_id, None)
            return True
        except IntegrityError:
            log.error("database refused a double allocation for job %s on %s", p.job_id, p.slices)
            return False

    def _launch_async(self, job_id: int) -> None:
        with self.lock:
            self.launching.add(job_id)
        self.pool.submit(self._launch, job_id)

    def _launch(self, job_id: int) -> None:
        try:
            with self.ctx.sessions() as session:
                job = store.get_job(session, job_id)
                allocs = store.allocations_of(session, job_id)
                spec = launch_spec(self.ctx.config, job, allocs, self.cgroup_driver)
            try:
                h = self.executor.launch(spec)
            except Exception as e:  # ExecutorError, or OSError while spooling
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                with self.ctx.sessions.begin() as session:
                    job = store.get_job(session, job_id)
                    if job.state == JobState.STARTING.value:
                        self._forget(session, job, self.ctx.clock.now(), f"launch failed: {msg}")
                return
            with self.ctx.sessions.begin() as session:
                job = store.get_job(session, job_id)
                job.container = h.ref
                if job.state == JobState.STARTING.value:
                    transition(session, job, JobState.RUNNING, at=self.ctx.clock.now(), by="ds01q",
                               reason=f"started {h.ref[:12]}")
        except Exception:
            log.exception("launch of job %s failed", job_id)
        finally:
            with self.lock:
                self.launching.discard(job_id)
            self.wake()

    def _account_end(self, session: Any, job: Job, now: float) -> None:
        accounting.on_job_end(session, job, store.allocations_of(session, job.id, active_only=False), now,
                              cgroup_root=self.ctx.config.executor.cgroup_root)

    # ------------------------------------------------------------ usage samples
    def sample(self, now: float) -> None:
        """Every ``sample_interval_s``: cgroup CPU/memory of each running job (read outside any transaction)."""
        if now - self.last_sample < self.ctx.config.sample_interval_s and now >= self.last_sample:
            return
        self.last_sample = now
        with self.ctx.sessions() as session:
            rows = [(j.id, j.container) for j in store.jobs_in(session, (JobState.RUNNING.value,)) if j.container]
        readings = []
        for job_id, ref in rows:
            try:
                readings.append((job_id, ref, self.executor.sample(Handle(job_id=job_id, ref=ref or ""))))
            except Ds01qError as e:
                log.debug("sample of job %s failed: %s", job_id, e)
        if not readings:
            return
        with self.ctx.sessions.begin() as session:
            for job_id, ref, usage in readings:
                job = session.get(Job, job_id)
                if job is not None and job.container == ref and job.state == JobState.RUNNING.value:
                    accounting.on_sample(session, job, usage, now)

    def _forget(self, session: Any, job: Job, now: float, why: str, count: bool = True) -> None:
        """Undo a reservation: release the slices, back to PENDING with backoff, or FAILED after retries."""
        store.release(session, job.id, now)
        if count:
            job.requeue_count += 1
        if count and job.requeue_count >= MAX_LAUNCH_TRIES:
            job.reason = why
            transition(session, job, JobState.FAILED, at=now, by="ds01q", reason=why)
            self._account_end(session, job, now)
            return
        transition(session, job, JobState.PENDING, at=now, by="ds01q", reason=why)
        job.eligible_at = now + min(300.0, 5.0 * 2 ** job.requeue_count) if count else 0.0
        job.reason = "Resources"
