"""The relay's one seam to the executor: a ``Terminal`` (a TTY exec in a job's container).

The relay asks the executor for a terminal and never cares where it runs. An executor that
has ``open_terminal`` (``RemoteExecutor``: the exec runs on a node, relayed by its agent over
Redis) hands one back itself; a local engine (``DockerExecutor``: ``exec_tty``) is wrapped in
a ``LocalTerminal`` here.

A terminal: ``read()`` the output (``b""`` once the exec has ended), ``write()`` keystrokes
(``OSError`` once it has ended), ``resize()``, ``wait()`` for the exit code after the end,
``close()``; ``id`` names it in logs.
"""
from __future__ import annotations

import socket
import time
from typing import Any, Protocol

from ds01q.errors import Ds01qError
from ds01q.executors.base import Handle
from ds01q.protocol import MAX_PAYLOAD

EXIT_WAIT_S = 5.0


class Terminal(Protocol):
    id: str

    def read(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def resize(self, rows: int, cols: int) -> None: ...

    def wait(self) -> int | None: ...

    def close(self) -> None: ...


def supported(executor: Any) -> bool:
    return hasattr(executor, "open_terminal") or hasattr(executor, "exec_tty")


def open_terminal(executor: Any, handle: Handle, cmd: list[str], user: str, env: dict[str, str],
                  workdir: str) -> Terminal:
    """A TTY exec of ``cmd`` as ``user`` (never root: the caller passes the job's uid:gid)."""
    opener = getattr(executor, "open_terminal", None)
    if opener is not None:
        return opener(handle, cmd, user, env, workdir)  # type: ignore[no-any-return]
    sock, exec_id = executor.exec_tty(handle, cmd, user, env, workdir)
    return LocalTerminal(executor, sock, exec_id)


class LocalTerminal:
    """A TTY exec on this host's engine: its raw socket and its exec id."""

    def __init__(self, executor: Any, sock: socket.socket, exec_id: str) -> None:
        self.executor = executor
        self.sock = sock
        self.id = exec_id
        sock.settimeout(None)

    def read(self) -> bytes:
        try:
            return self.sock.recv(MAX_PAYLOAD)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def resize(self, rows: int, cols: int) -> None:
        self.executor.exec_resize(self.id, rows, cols)

    def wait(self) -> int | None:
        deadline = time.monotonic() + EXIT_WAIT_S
        while True:
            try:
                code = self.executor.exec_exit_code(self.id)
            except Ds01qError:
                return None
            if code is not None or time.monotonic() > deadline:
                return code  # type: ignore[no-any-return]
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
