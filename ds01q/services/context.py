"""What every service needs: config, sessions, clock, and a way to wake the loop."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy.orm import Session, sessionmaker

from ds01q.clock import Clock, SystemClock
from ds01q.config import Config
from ds01q.errors import PermissionDenied
from ds01q.scheduler.snapshot import CycleResult


@dataclass(frozen=True)
class Caller:
    uid: int
    gid: int
    user: str
    admin: bool

    @property
    def label(self) -> str:
        return self.user


@dataclass
class Context:
    config: Config
    sessions: sessionmaker[Session]
    clock: Clock = field(default_factory=SystemClock)
    wake: Callable[[], None] = lambda: None
    last_cycle: CycleResult | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    refresh_inventory: Callable[[], dict[str, object]] | None = None  # set by the controller
    executor: Any = None  # the controller's executor (the terminal relay execs through it)
    attached: dict[int, int] = field(default_factory=dict)  # job id -> terminals attached now

    def require_admin(self, caller: Caller, what: str) -> None:
        if not caller.admin:
            raise PermissionDenied(f"{what} is for admins only (members of an admin group)")

    def require_owner(self, caller: Caller, owner: str, what: str) -> None:
        if not caller.admin and caller.user != owner:
            raise PermissionDenied(f"only {owner} or an admin may {what}")
