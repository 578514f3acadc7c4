"""An in-memory executor for controller tests without Docker.

One function decides what each launch does, like httpx's MockTransport::

    def handler(spec: LaunchSpec) -> Outcome | None:
        if spec.image == "broken":
            raise ExecutorError("no such image")   # launch fails, nothing left behind
        if spec.job_id == 3:
            return 1                               # exits at once with code 1
        return None                                # keeps running until the test ends it

    ex = FakeExecutor(handler, clock=FakeClock())
    h = ex.launch(spec)
    ex.finish(h.job_id, exit_code=0)               # poll(h) now returns ExitInfo(0, ...)

Every launch, stop and remove is recorded in ``calls`` as ``(name, job_id)``,
failed ones too; ``fail_stops``, ``fail_removes`` and ``fail_signals`` make the
next N stops, removes or signals raise ExecutorError. A signal is recorded as ``("signal", job_id)`` and
in ``signals`` as ``(job_id, sig, batch_only, clock time)``; the job keeps running.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ds01q.clock import Clock
from ds01q.errors import ExecutorError
from ds01q.executors.base import ExitInfo, Found, Handle, LaunchSpec
from ds01q.types import Usage

__all__ = ["LOST", "NEVER_STARTED", "SIGTERM_EXIT", "FakeExecutor", "Outcome"]

Outcome = ExitInfo | int
"""What a handler returns for a job that ends at once: an ExitInfo, or just an exit code."""

SIGTERM_EXIT = 143  # 128 + SIGTERM

LOST = ExitInfo(exit_code=None, oom_killed=False, finished_at=None, cpu_s=None, max_rss_bytes=None,
                error="container lost")
"""What ``poll`` returns for a handle it does not know (never launched, or removed)."""

NEVER_STARTED = ExitInfo(exit_code=None, oom_killed=False, finished_at=None, cpu_s=None, max_rss_bytes=None,
                         error="container was created but never started")
"""What ``poll`` returns for a container created and not started (as the Docker executor says it)."""


def keep_running(spec: LaunchSpec) -> Outcome | None:
    """The default handler: every job runs until the test finishes or stops it."""
    return None


@dataclass
class _Job:
    handle: Handle
    cpu_s: float | None = None
    exit: ExitInfo | None = None
    attempt: int = 0
    started: bool = True
    created_at: float | None = None


class FakeExecutor:
    """Satisfies the ``Executor`` protocol; jobs live in a dict and end when told to."""

    def __init__(self, handler: Callable[[LaunchSpec], Outcome | None] | None = None,
                 clock: Clock | None = None) -> None:
        self.handler = handler or keep_running
        self.clock = clock
        self.calls: list[tuple[str, int]] = []
        self.specs: dict[int, LaunchSpec] = {}
        self.signals: list[tuple[int, int, bool, float | None]] = []  # (job_id, sig, batch_only, at) per signal()
        self.fail_stops = 0
        self.fail_removes = 0
        self.fail_signals = 0
        self.down: str | None = None  # set to an error text: every call raises ExecutorError (engine down)
        self.closed = False
        self.on_exit: Callable[[int], None] | None = None
        self.on_lost: Callable[[str], None] | None = None
        self._jobs: dict[str, _Job] = {}  # by handle ref
        self._launches: dict[int, int] = {}  # launch calls per job id
        self._cpu: dict[int, float] = {}  # set_cpu values per job id
        self._lock = threading.RLock()

    # ------------------------------------------------------------ the Executor protocol
    def launch(self, spec: LaunchSpec) -> Handle:
        """Run the handler; ExecutorError from it propagates and leaves no job behind.

        The handle's ref is ``fake-{job_id}-{n}``, n counting launch calls for that job id (from 1).
        A job whose ``(job_id, attempt)`` was launched and not removed is returned as it is
        (call ``("adopt", job_id)``), without running the handler again.
        """
        with self._lock:
            self._check_up()
            for ref, old in list(self._jobs.items()):
                if old.handle.job_id == spec.job_id and old.attempt == spec.attempt:
                    if not old.started:  # created, never started: made again, as the Docker executor does
                        del self._jobs[ref]
                        continue
                    self.calls.append(("adopt", spec.job_id))
                    return old.handle
            self.calls.append(("launch", spec.job_id))
            n = self._launches[spec.job_id] = self._launches.get(spec.job_id, 0) + 1
        outcome = self.handler(spec)  # outside the lock: the handler may call back into us
        handle = Handle(job_id=spec.job_id, ref=f"fake-{spec.job_id}-{n}")
        with self._lock:
            self.specs[spec.job_id] = spec
            job = self._jobs[handle.ref] = _Job(handle, cpu_s=self._cpu.get(spec.job_id), attempt=spec.attempt)
            if outcome is not None:
                job.exit = outcome if isinstance(outcome, ExitInfo) else self._exit_info(job, int(outcome))
        if outcome is not None:
            self._notify(spec.job_id)
        return handle

    def poll(self, handle: Handle) -> ExitInfo | None:
        """None while the job runs, its ExitInfo once ended, ``LOST`` for an unknown handle."""
        with self._lock:
            self._check_up()
            job = self._jobs.get(handle.ref)
            if job is not None and not job.started:
                return NEVER_STARTED
            return LOST if job is None else job.exit

    def stop(self, handle: Handle, grace_s: float) -> None:
        """End a running job with exit code 143 and call the watch callback; no-op otherwise."""
        with self._lock:
            self.calls.append(("stop", handle.job_id))
            self._check_up()
            if self.fail_stops > 0:
                self.fail_stops -= 1
                raise ExecutorError(f"fake: cannot stop {handle.ref}")
            job = self._jobs.get(handle.ref)
            if job is None or job.exit is not None or not job.started:
                return
            job.exit = self._exit_info(job, SIGTERM_EXIT)
        self._notify(handle.job_id)

    def signal(self, handle: Handle, sig: int, batch_only: bool = True) -> None:
        """Record ``(job_id, sig, batch_only, at)`` for a running job (it keeps running); ExecutorError if it
        is not running, or while ``fail_signals`` lasts."""
        with self._lock:
            self.calls.append(("signal", handle.job_id))
            self._check_up()
            if self.fail_signals > 0:
                self.fail_signals -= 1
                raise ExecutorError(f"fake: cannot signal {handle.ref}")
            job = self._jobs.get(handle.ref)
            if job is None or job.exit is not None:
                raise ExecutorError(f"fake: job {handle.job_id} is not running")
            self.signals.append((handle.job_id, int(sig), batch_only,
                                 self.clock.now() if self.clock is not None else None))

    def remove(self, handle: Handle) -> None:
        """Forget the job (running or not); removing an unknown handle does nothing."""
        with self._lock:
            self.calls.append(("remove", handle.job_id))
            self._check_up()
            if self.fail_removes > 0:
                self.fail_removes -= 1
                raise ExecutorError(f"fake: cannot remove {handle.ref}")
            self._jobs.pop(handle.ref, None)

    def sample(self, handle: Handle) -> Usage | None:
        """Usage of a running job (cpu_s from ``set_cpu``, else 0); None once it ended or is unknown."""
        with self._lock:
            job = self._jobs.get(handle.ref)
            if job is None or job.exit is not None:
                return None
            return Usage(cpu_s=job.cpu_s or 0.0, mem_bytes=0, max_rss_bytes=None)

    def running(self) -> dict[int, Handle]:
        """Jobs launched and not yet ended, by job id."""
        with self._lock:
            return {j.handle.job_id: j.handle for j in self._jobs.values() if j.exit is None and j.started}

    def containers(self) -> list[Found]:
        """Every job launched (or only created) and not removed, running or ended."""
        with self._lock:
            self._check_up()
            return [Found(j.handle, j.attempt, j.exit, started=j.started, created_at=j.created_at)
                    for j in self._jobs.values()]

    def watch(self, on_exit: Callable[[int], None], on_lost: Callable[[str], None] | None = None) -> None:
        """Keep ``on_exit``; it is called synchronously, outside the lock, whenever a job ends.
        ``on_lost`` is called by ``lose_engine``."""
        self.on_exit, self.on_lost = on_exit, on_lost

    def lose_engine(self, error: str = "fake: the event stream broke") -> None:
        """What the Docker executor reports when its engine's event stream breaks (a restart)."""
        if self.on_lost is not None:
            self.on_lost(error)

    def close(self) -> None:
        """Only sets ``closed``; jobs keep their state."""
        self.closed = True

    # ------------------------------------------------------------ test controls
    def create_only(self, spec: LaunchSpec) -> Handle:
        """The container of ``spec``'s attempt created and not started: a daemon killed while it asked the
        engine to start it (``start_created`` is the engine finishing that start)."""
        with self._lock:
            self.calls.append(("create", spec.job_id))
            n = self._launches[spec.job_id] = self._launches.get(spec.job_id, 0) + 1
            handle = Handle(job_id=spec.job_id, ref=f"fake-{spec.job_id}-{n}")
            self.specs[spec.job_id] = spec
            self._jobs[handle.ref] = _Job(handle, attempt=spec.attempt, started=False,
                                          created_at=self.clock.now() if self.clock is not None else None)
            return handle

    def start_created(self, job_id: int) -> None:
        """The engine finishes the start of ``job_id``'s created container (``create_only``): it runs."""
        with self._lock:
            job = next(j for j in self._jobs.values() if j.handle.job_id == job_id and not j.started)
            job.started = True

    def finish(self, job_id: int, exit_code: int = 0, oom: bool = False, cpu_s: float | None = None) -> None:
        """End the running job ``job_id``; ``cpu_s`` defaults to the value from ``set_cpu`` (or None).

        Raises KeyError if the job is not running.
        """
        with self._lock:
            job = self._running_job(job_id)
            if cpu_s is not None:
                job.cpu_s = cpu_s
            job.exit = self._exit_info(job, exit_code, oom)
        self._notify(job_id)

    def set_cpu(self, job_id: int, cpu_s: float) -> None:
        """Set the CPU seconds that ``sample`` reports for ``job_id`` (now and for later launches)."""
        with self._lock:
            self._cpu[job_id] = cpu_s
            for job in self._jobs.values():
                if job.handle.job_id == job_id and job.exit is None:
                    job.cpu_s = cpu_s

    def exited(self) -> dict[int, Handle]:
        """Jobs that ended but were not removed yet, by job id."""
        with self._lock:
            return {j.handle.job_id: j.handle for j in self._jobs.values() if j.exit is not None}

    def vanish(self, job_id: int) -> None:
        """The job's container disappears without a trace (an engine that lost it)."""
        with self._lock:
            for ref in [r for r, j in self._jobs.items() if j.handle.job_id == job_id]:
                del self._jobs[ref]

    # ------------------------------------------------------------ helpers
    def _check_up(self) -> None:
        if self.down is not None:
            raise ExecutorError(self.down)
    def _running_job(self, job_id: int) -> _Job:
        for job in self._jobs.values():
            if job.handle.job_id == job_id and job.exit is None:
                return job
        raise KeyError(f"job {job_id} is not running")

    def _exit_info(self, job: _Job, exit_code: int, oom: bool = False) -> ExitInfo:
        at = self.clock.now() if self.clock is not None else None
        return ExitInfo(exit_code=exit_code, oom_killed=oom, finished_at=at, cpu_s=job.cpu_s, max_rss_bytes=None)

    def _notify(self, job_id: int) -> None:
        callback = self.on_exit
        if callback is not None:
            callback(job_id)
