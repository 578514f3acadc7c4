"""How the loop is doing, for ``ds01q status``: the executor up or down (with its error), the
last tick, the last step that failed, and whether the loop still makes progress.

Every step of a tick runs under ``Health.guard``: an exception is logged (once per new
message, not every tick) and recorded, and the tick goes on with the next step.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError

from ds01q.errors import Ds01qError
from ds01q.scheduler.snapshot import CycleResult, PendingInfo
from ds01q.types import Reason

log = logging.getLogger("ds01q.controller")
T = TypeVar("T")
STALL_AFTER_TICKS = 6  # a loop with no finished tick for this many tick periods is shown as stalled
OUTAGE_MARGIN_S = 10.0  # an outage is noticed by the next sweep (5 s): it may have begun this much earlier
KILLED_BY_ENGINE = (137, 143)  # SIGKILL / SIGTERM: what an engine that shuts down does to its containers


class Health:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.executor_error: str | None = None
        self.executor_down_since: float | None = None
        self.last_tick_at: float | None = None
        self.step_errors: dict[str, tuple[float, str]] = {}
        self.ticks = 0
        self.outages: list[tuple[float, float]] = []  # (noticed down, back up), the last few

    def executor_down(self, error: str, now: float) -> None:
        with self._lock:
            if self.executor_error is None:
                log.warning("executor down: %s", error)
                self.executor_down_since = now
            self.executor_error = error

    def executor_up(self, now: float | None = None) -> None:
        with self._lock:
            if self.executor_error is not None:
                log.warning("executor back up after: %s", self.executor_error)
                if self.executor_down_since is not None and now is not None:
                    self.outages = [*self.outages[-9:], (self.executor_down_since, now)]
            self.executor_error, self.executor_down_since = None, None

    def killed_in_outage(self, exit_code: int | None, finished_at: float | None) -> bool:
        """Did a container end by a signal while the engine was down (an engine restart without
        live-restore stops every container)? Such a run is a lost node, not the job's failure."""
        if exit_code not in KILLED_BY_ENGINE or finished_at is None:
            return False
        with self._lock:
            spans = list(self.outages)
            if self.executor_down_since is not None:
                spans.append((self.executor_down_since, float("inf")))
        return any(start - OUTAGE_MARGIN_S <= finished_at <= end for start, end in spans)

    @property
    def executor_ok(self) -> bool:
        return self.executor_error is None

    def guard(self, step: str, now: float, fn: Callable[..., T], *args: Any) -> T | None:
        """Run one step of a tick; never raises."""
        try:
            out = fn(*args)
        except Exception as e:  # the loop must survive anything; the next tick retries
            text = " ".join(str(e).split())[:300] or type(e).__name__
            if isinstance(e, OperationalError):  # the database locked, full or read-only: no stack to show
                text = "the database refused it (" + " ".join(str(e.orig).split())[:200] + "); retried every tick"
            with self._lock:
                old = self.step_errors.get(step)
                self.step_errors[step] = (now, text)
            if old is None or old[1] != text:  # once per new message, not every tick
                if isinstance(e, (Ds01qError, OperationalError)):
                    log.warning("loop step %s failed: %s", step, text)
                else:
                    log.exception("loop step %s failed", step)
            return None
        with self._lock:
            self.step_errors.pop(step, None)
        return out

    def ticked(self, now: float) -> None:
        with self._lock:
            self.last_tick_at = now
            self.ticks += 1

    def to_dict(self, now: float, tick_s: float) -> dict[str, Any]:
        with self._lock:
            stalled = self.last_tick_at is not None and now - self.last_tick_at > STALL_AFTER_TICKS * max(tick_s, 1.0)
            return {
                "executor": "down" if self.executor_error else "up",
                "executor_error": self.executor_error,
                "executor_down_since": self.executor_down_since,
                "last_tick_at": self.last_tick_at,
                "loop": "stalled" if stalled else ("starting" if self.last_tick_at is None else "ok"),
                "step_errors": {k: v[1] for k, v in self.step_errors.items()},
            }


def executor_down(result: CycleResult, error: str) -> CycleResult:
    """The pass with nothing placed: every job it would have placed waits, its reason the outage."""
    pending = dict(result.pending)
    detail = f"executor down: {' '.join(error.split())}"[:390]
    for p in result.placements:
        pending[p.job_id] = PendingInfo(Reason.EXECUTOR_DOWN, result.priorities.get(p.job_id, 0.0), None, detail)
    return CycleResult((), pending, result.priorities, result.factors)
