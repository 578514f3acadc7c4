"""An executor whose engine may not be up yet: the daemon starts while Docker is down.

``DeferredExecutor(factory)`` builds the real executor on first use and, while the factory
fails (the engine is down), answers every call with that ExecutorError; it tries again at
most every ``retry_s`` seconds. Once built, it delegates everything (``exec_tty`` and the
other relay calls included). ``watch`` is remembered and passed on when the real one is built.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ds01q.errors import ExecutorError
from ds01q.executors.base import ExitInfo, Found, Handle, LaunchSpec, one_line
from ds01q.types import Usage

__all__ = ["DeferredExecutor"]


class DeferredExecutor:
    def __init__(self, factory: Callable[[], Any], first_error: str = "", retry_s: float = 2.0) -> None:
        self._factory = factory
        self._real: Any = None
        self._error = first_error or "the executor is not started yet"
        self._next_try = 0.0 if not first_error else time.monotonic() + retry_s
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._on_exit: Callable[[int], None] | None = None
        self._on_lost: Callable[[str], None] | None = None

    def real(self) -> Any:
        """The real executor, built now if it can be; ExecutorError while it cannot."""
        with self._lock:
            if self._real is not None:
                return self._real
            now = time.monotonic()
            if now >= self._next_try:
                self._next_try = now + self._retry_s
                try:
                    self._real = self._factory()
                except ExecutorError as e:
                    self._error = str(e)
                except Exception as e:  # docker-py raises its own errors when the socket is gone
                    self._error = f"cannot reach the Docker engine: {one_line(e)}"
            real = self._real
        if real is None:
            raise ExecutorError(self._error)
        if self._on_exit is not None:
            real.watch(self._on_exit, self._on_lost)
        return real

    def cgroup_driver(self) -> str:
        return str(self.real().cgroup_driver())

    def launch(self, spec: LaunchSpec) -> Handle:
        return self.real().launch(spec)  # type: ignore[no-any-return]

    def poll(self, handle: Handle) -> ExitInfo | None:
        return self.real().poll(handle)  # type: ignore[no-any-return]

    def stop(self, handle: Handle, grace_s: float) -> None:
        self.real().stop(handle, grace_s)

    def remove(self, handle: Handle) -> None:
        self.real().remove(handle)

    def signal(self, handle: Handle, sig: int, batch_only: bool = True) -> None:
        self.real().signal(handle, sig, batch_only)

    def sample(self, handle: Handle) -> Usage | None:
        return self.real().sample(handle)  # type: ignore[no-any-return]

    def running(self) -> dict[int, Handle]:
        return self.real().running()  # type: ignore[no-any-return]

    def containers(self) -> list[Found]:
        return self.real().containers()  # type: ignore[no-any-return]

    def watch(self, on_exit: Callable[[int], None], on_lost: Callable[[str], None] | None = None) -> None:
        self._on_exit, self._on_lost = on_exit, on_lost
        if self._real is not None:
            self._real.watch(on_exit, on_lost)

    def close(self) -> None:
        if self._real is not None:
            self._real.close()

    def __getattr__(self, name: str) -> Any:  # exec_tty, exec_resize, ... of the real executor
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.real(), name)
