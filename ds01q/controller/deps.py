"""What the loop is built from. Passed in by the daemon (or a test), never looked up."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from ds01q.clock import Clock, SystemClock
from ds01q.config import Config, ConfigRef
from ds01q.executors.base import Executor


def _no_terminals(_job_id: int) -> int:
    return 0


@dataclass(frozen=True)
class LoopDeps:
    """``terminals(job_id)`` counts the terminals attached to an interactive job now (the
    daemon's relay knows; the idle check asks). ``cgroup_driver`` None: no cgroup parent."""

    settings: ConfigRef
    sessions: sessionmaker[Session]
    executor: Executor
    clock: Clock = field(default_factory=SystemClock)
    terminals: Callable[[int], int] = _no_terminals
    cgroup_driver: str | None = None

    @property
    def config(self) -> Config:
        return self.settings.current
