"""The one loop of ``ds01q server``: reconcile → reap → enforce → sample → schedule → dispatch.

Handlers (submit, cancel, a container's exit) only change the database and call
``wake()``; the loop does all the work, at least every ``tick_s``. A slice is
reserved (STARTING, allocation rows) in one transaction (``assume``), and the
container is launched only after that commits. A failed launch forgets the
reservation and requeues the job with backoff. A job in STOPPING has its
container stopped; its exit is recorded with the stop's outcome (``jobstate.end_run``).

The controller is what services know as their ``LoopHandle``: ``wake()``,
``refresh_inventory()`` and ``last_cycle()``. It never imports a service.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ds01q import accounting
from ds01q.controller.autolayout import AutoLayout
from ds01q.controller.deps import LoopDeps
from ds01q.controller.health import Health, executor_down
from ds01q.controller.idle import IdleTracker, check_idle
from ds01q.controller.inventory import read_inventory, reconcile
from ds01q.controller.launch import launch_spec
from ds01q.controller.reconcile import reconcile_containers
from ds01q.controller.preempt import Reclaim, is_reclaim, preempt
from ds01q.controller.nodes import check_nodes
from ds01q.controller.notify import Notifier
from ds01q.controller.signals import send_due_signals
from ds01q.controller.snapshot import PendingCache, UsageCache, build_snapshot
from ds01q.db import jobstate, store
from ds01q.db.models import Job
from ds01q.errors import Conflict, Ds01qError
from ds01q.faultpoints import crash_point
from ds01q.executors.base import ExitInfo, Handle
from ds01q.scheduler import schedule
from ds01q.scheduler.snapshot import CycleResult, Placement
from ds01q.types import JobState, Reason, StopOutcome

log = logging.getLogger("ds01q.controller")
MAX_LAUNCH_TRIES = 3
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


def one_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text or type(e).__name__


class Controller:
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

    def on_exit(self, job_id: int) -> None:
        """A container of ``job_id`` exited (the executor's event). Recorded on an exit thread at once,
        several in parallel (the engine answers an inspect only after its clean-up of that container),
        then the loop is woken to use the freed slices; ``inline``: by the next tick's reap."""
        if self.inline or self.stop_event.is_set():
            self._flag_exit(job_id)
        else:
            self._submit_exit(job_id)

    def on_engine_lost(self, error: str) -> None:
        """The executor's event stream broke: the engine is down or restarting. Marked down at once (the
        container sweep marks it up again), so that a restart quicker than a sweep is still an outage: an
        engine without live-restore kills its containers, and those runs are lost, not failed."""
        self.health.executor_down(f"lost the engine: {error}", self.clock.now())
        self.wake()

    def _submit_exit(self, job_id: int) -> None:
        try:
            self.exits.submit(self._exit_seen, job_id)
        except RuntimeError:  # shutting down: the reap (or recovery after a restart) does it
            self._flag_exit(job_id)

    def _flag_exit(self, job_id: int) -> None:
        with self.lock:
            self.exited.add(job_id)
        self.wake()

    def _exit_seen(self, job_id: int) -> None:
        """Record the exit of ``job_id``'s container if its job is RUNNING or STOPPING; what cannot be
        settled here (its launch is not recorded yet, the engine did not answer) is left to the reap."""
        try:
            with self.lock:
                launching = job_id in self.launching
            if launching:
                self._flag_exit(job_id)
                return
            with self.session() as session:
                found = store.state_and_container(session, job_id)
            ref = found[1] if found is not None and found[0] in (S.RUNNING.value, S.STOPPING.value) else None
            if ref is None:  # ended already, or not started: nothing of this job's to record
                with self.lock:
                    launching = job_id in self.launching
                if launching:  # relaunched meanwhile: the reap looks after the launch
                    self._flag_exit(job_id)
                return
            h = Handle(job_id=job_id, ref=ref)
            info = self.executor.poll(h)
            if info is not None:
                self.record_exit(job_id, h, info)
            self.wake()
        except Ds01qError:  # the engine did not answer: the reap retries it (and says so)
            self._flag_exit(job_id)
        except Exception as e:  # the reap retries it
            log.warning("exit of job %s not recorded yet: %s", job_id, one_line(e))
            self._flag_exit(job_id)

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

    # ------------------------------------------------------------ exits
    def reap(self, full: bool) -> None:
        with self.lock:
            flagged, self.exited = self.exited, set()
        if not flagged and not full:  # nothing seen exit, no sweep due
            return
        with self.session() as session:
            rows = [j for j in store.jobs_in(session, (S.RUNNING.value, S.STOPPING.value)) if j.container]
        if full:
            self.last_sweep = self.clock.now()
        with self.lock:  # an exit may come before its launch is recorded: look again after the launch
            self.exited |= flagged & self.launching
        for job in rows:
            if job.id in self.launching or not (full or job.id in flagged):
                continue
            if job.id not in flagged and not self.inline:  # the sweep: polled on the exit threads, in parallel
                self._submit_exit(job.id)
                continue
            h = Handle(job_id=job.id, ref=job.container or "")
            try:
                info = self.executor.poll(h)
            except Ds01qError as e:
                log.warning("poll of job %s failed: %s", job.id, e)
                continue
            if info is not None:
                self.record_exit(job.id, h, info)

    def record_exit(self, job_id: int, h: Handle, info: ExitInfo) -> JobState | None:
        """Record how the container ``h`` of job ``job_id`` ended (once), then remove it."""
        crash_point("exit")  # container exited, exit not yet recorded (tests/faults)
        now = self.clock.now()
        try:
            with self.txn() as session:
                job = store.get_job(session, job_id)
                if job.container != h.ref or not JobState(job.state).holds_slices:
                    return None
                state = self._end(session, job, info, now)
        except Conflict as e:
            log.info("exit of job %s: %s", job_id, e)
            return None
        with self.lock:
            self.stopping.discard(job_id)
        if self.inline:
            self._remove(job_id, h.ref)
        else:  # the exit is committed and the slices are free: the next launch need not wait for the removal
            with self.lock:
                self.removing.add(h.ref)
            try:
                self.cleanup.submit(self._remove, job_id, h.ref)
            except RuntimeError:  # shutting down: the container sweep after a restart removes it
                with self.lock:
                    self.removing.discard(h.ref)
        return state

    def _remove(self, job_id: int, ref: str) -> None:
        """Remove a finished job's container; a failure is retried by the container sweep
        (``reconcile_containers`` removes every container whose job no longer holds slices)."""
        try:
            self.executor.remove(Handle(job_id=job_id, ref=ref))
        except Exception as e:  # Ds01qError, or anything else on the removal thread: the sweep retries
            log.warning("remove of job %s failed (the container sweep retries it): %s", job_id, one_line(e))
        finally:
            with self.lock:
                self.removing.discard(ref)

    def _end(self, session: Session, job: Job, info: ExitInfo, now: float) -> JobState:
        if job.stop_outcome is None and self.health.killed_in_outage(info.exit_code, info.finished_at):
            info = replace(info, exit_code=None, error="container stopped by a Docker engine restart")
        # charge the container's own start and finish times when the executor knows them
        begin = job.started_at if job.started_at is not None else job.submitted_at
        if info.started_at is not None and job.submitted_at <= info.started_at <= now:
            job.started_at = begin = info.started_at
        if info.finished_at is not None and begin <= info.finished_at <= now:
            now = info.finished_at
        state = jobstate.end_run(session, job, exit_code=info.exit_code, oom=info.oom_killed, at=now,
                                 error=info.error, cpu_s=info.cpu_s, max_rss_bytes=info.max_rss_bytes)
        self._account_end(session, job, now)
        if jobstate.wants_requeue(job, state):
            jobstate.requeue(session, job, at=now, why=f"requeued: {job.end_reason or state.value}")
        return state

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

    def assume(self, p: Placement, now: float) -> bool:
        """Reserve ``p``'s slices and move its job to STARTING, in one transaction."""
        try:
            with self.txn() as session:  # Core statements: this runs for every job
                slices = store.usable_slices(session, p.slices)
                if slices is None:
                    return False
                last = self._last_cycle
                # the CAS counts the launch attempt, which names this attempt's container: a relaunch finds it
                if not jobstate.assumed(session, p.job_id, priority=last.priorities.get(p.job_id) if last else None,
                                        node=slices[0].node if slices else (p.node or self.config.node), at=now,
                                        reason="allocated " + (",".join(p.slices) or "no GPU")):
                    return False
                store.allocate(session, p.job_id, slices, now)  # a slice held already: IntegrityError
            self.persisted.pop(p.job_id, None)
            return True
        except IntegrityError:
            log.error("database refused a double allocation for job %s on %s", p.job_id, p.slices)
            return False
        except Conflict as e:
            log.info("assume of job %s: %s", p.job_id, e)
            return False

    def _launch_async(self, job_id: int) -> None:
        with self.lock:
            self.launching.add(job_id)
        self.run_async(self.launch, job_id)

    def launch(self, job_id: int) -> None:
        """Start the container of a STARTING job; any failure forgets the reservation. The loop is woken
        afterwards unless the job simply went RUNNING: a pass then has nothing new to do (the slices were
        reserved at the assume)."""
        running = False
        try:
            with self.session() as session:
                job = store.get_job(session, job_id)
                if job.state != S.STARTING.value:  # cancelled meanwhile: nothing to start
                    return
                allocs = store.allocations_of(session, job_id)
            try:  # building the spec (spooling the script, parsing its #!) is part of the launch
                h = self.executor.launch(launch_spec(self.config, job, allocs, self._cgroup_driver()))
            except Exception as e:  # ExecutorError, OSError while spooling, a bad #! line, ...
                reachable, started = self._after_failed_launch(job)
                if started is None:
                    self._launch_failed(job_id, one_line(e), count=reachable)
                    return
                log.warning("launch of job %s failed (%s), yet its container %s started: adopted", job_id,
                            one_line(e), started.ref[:12])
                h = started
            crash_point("start")  # container started, RUNNING not yet recorded (tests/faults)
            running = self._launched(job_id, h)
        except OperationalError as e:  # the database locked, full or read-only: the container sweep adopts it
            log.warning("launch of job %s: the database refused its record (%s); the container sweep adopts it",
                        job_id, " ".join(str(e.orig).split())[:200])
        except Exception:
            log.exception("launch of job %s failed", job_id)
        finally:
            with self.lock:
                self.launching.discard(job_id)
                exited = not self.inline and job_id in self.exited
                if exited:
                    self.exited.discard(job_id)
            if exited:  # its container exited before the launch was recorded (a short job): record it now
                self.on_exit(job_id)
            elif not running:  # failed, cancelled meanwhile, or skipped: a pass looks at it now
                self.wake()

    def _launched(self, job_id: int, h: Handle) -> bool:
        """Record the started container; True when the job went from STARTING to RUNNING."""
        with self.txn() as session:
            state = jobstate.launched(session, job_id, h.ref, at=self.clock.now(), by="ds01q")
        if state is None:  # the job moved on while its container started: never let it run
            self._stop_async(job_id, h.ref, remove=True)
        return state == S.RUNNING

    def _after_failed_launch(self, job: Job) -> tuple[bool, Handle | None]:
        """After a failed launch: is the executor there at all (a launch that failed because the
        engine is down does not count against the job's tries, and marks the executor down)? And
        did this attempt's container start anyway (the engine started it, its answer was lost)?
        That one is adopted: forgetting the job would start it a second time."""
        try:
            found = self.executor.containers()
        except Ds01qError as e:
            self.health.executor_down(str(e), self.clock.now())
            return False, None
        mine = (f.handle for f in found if f.handle.job_id == job.id and f.attempt == job.launch_attempt and f.started)
        return True, next(mine, None)

    def _cgroup_driver(self) -> str | None:
        """The configured driver; "auto" (the engine was down when the daemon started): the engine's."""
        driver = self.deps.cgroup_driver
        return self.executor.cgroup_driver() if driver == "auto" else driver  # type: ignore[attr-defined]

    def _launch_failed(self, job_id: int, msg: str, count: bool = True) -> None:
        with self.txn() as session:
            job = store.get_job(session, job_id)
            now = self.clock.now()
            if job.state == S.STARTING.value:
                self._forget(session, job, now, f"launch failed: {msg}", count=count)
            elif job.state == S.STOPPING.value:
                self._end(session, job, ExitInfo(None, False, None, None, None, f"launch failed: {msg}"), now)

    def _account_end(self, session: Session, job: Job, now: float) -> None:
        accounting.on_job_end(session, job, store.allocations_of(session, job.id, active_only=False), now,
                              cgroup_root=self.config.executor.cgroup_root)

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

    def _forget(self, session: Session, job: Job, now: float, why: str, count: bool = True) -> None:
        """Undo a reservation: release the slices, back to PENDING with backoff, or FAILED after retries."""
        store.release(session, job.id, now)
        if count:
            job.requeue_count += 1
        if count and job.requeue_count >= MAX_LAUNCH_TRIES:
            job.end_reason = why
            jobstate.transition(session, job, S.FAILED, at=now, by="ds01q", reason=why)
            self._account_end(session, job, now)
            return
        jobstate.transition(session, job, S.PENDING, at=now, by="ds01q", reason=why)
        backoff = self.config.executor.launch_backoff_s * 2 ** job.requeue_count
        job.eligible_at = now + min(300.0, backoff) if count else 0.0
        job.reason = Reason.RESOURCES
