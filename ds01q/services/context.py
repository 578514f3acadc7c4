"""What every service gets: the caller, and a read-only context (config, sessions, clock)
with a small handle on the daemon's loop. Services never import the controller: the
daemon passes the controller in as the ``LoopHandle``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from sqlalchemy.orm import Session, sessionmaker

from ds01q.clock import Clock, SystemClock
from ds01q.config import Config, ConfigRef
from ds01q.errors import PermissionDenied
from ds01q.db.models import Job
from ds01q.scheduler.snapshot import CycleResult
from ds01q.services.logfile import read_output


@dataclass(frozen=True)
class Caller:
    uid: int
    gid: int
    user: str
    admin: bool

    @property
    def label(self) -> str:
        return self.user


class LoopHandle(Protocol):
    """The few things a service may ask of the daemon's loop."""

    def wake(self) -> None:
        """Run a pass soon (a job was submitted, cancelled, released...)."""

    def refresh_inventory(self) -> dict[str, Any]:
        """Re-read the config and the inventory now; return what changed."""

    def last_cycle(self) -> CycleResult | None:
        """The newest scheduling pass (reasons, priorities, factors), if any."""

    def loop_health(self) -> dict[str, Any]:
        """The executor up or down (with its error), the last tick, failing steps, a stalled loop."""


class NoLoop:
    """A LoopHandle for services used without a running loop (tests, one-shot tools)."""

    def wake(self) -> None:
        return None

    def refresh_inventory(self) -> dict[str, Any]:
        return {}

    def last_cycle(self) -> CycleResult | None:
        return None

    def loop_health(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Context:
    settings: ConfigRef
    sessions: sessionmaker[Session]
    clock: Clock = field(default_factory=SystemClock)
    loop: LoopHandle = field(default_factory=NoLoop)
    # ``ds01q logs``: read (job, offset, limit) of a job's output; on several nodes, the job's node reads it
    read_output: Callable[[Job, int, int, bool], bytes] = read_output

    @classmethod
    def of(cls, config: Config, sessions: sessionmaker[Session], clock: Clock | None = None,
           loop: LoopHandle | None = None) -> Context:
        return cls(ConfigRef(config), sessions, clock or SystemClock(), loop or NoLoop())

    @property
    def config(self) -> Config:
        return self.settings.current

    @property
    def last_cycle(self) -> CycleResult | None:
        return self.loop.last_cycle()

    def wake(self) -> None:
        self.loop.wake()

    def require_admin(self, caller: Caller, what: str) -> None:
        if not caller.admin:
            raise PermissionDenied(f"{what} is for admins only (members of an admin group)")

    def require_owner(self, caller: Caller, owner: str, what: str) -> None:
        if not caller.admin and caller.user != owner:
            raise PermissionDenied(f"only {owner} or an admin may {what}")
