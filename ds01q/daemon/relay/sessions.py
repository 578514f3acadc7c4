"""The daemon's side of attached terminals: one client connection, one shell (a ``Terminal``:
a TTY exec, here or on a node), and the registry of open shells per (job, uid).
``ds01q.daemon.relay.attach`` drives them."""
from __future__ import annotations

import json
import socket
import threading
from typing import Any

from ds01q.daemon.relay.terminal import Terminal
from ds01q.protocol import DATA, MAX_PAYLOAD, frame

BACKLOG = 64 * 1024  # output kept for a detached shell
CONN_TIMEOUT_S = 30.0  # a client that stops reading this long is dropped; its shell keeps running


# ---------------------------------------------------------------- one client connection

class Conn:
    """The caller's socket. Frames sent before ``start`` (the JSON reply) are queued behind it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.open = True
        self.started = False
        self.closing = False
        self.queued: list[bytes] = []

    def _write(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:  # gone, or stopped reading for CONN_TIMEOUT_S
            self.open = False
            return False

    def send(self, kind: bytes, payload: bytes = b"") -> bool:
        data = frame(kind, payload)
        with self.lock:
            if not self.open:
                return False
            if not self.started:
                self.queued.append(data)
                return True
            return self._write(data)

    def start(self, reply: dict[str, Any]) -> bool:
        head = json.dumps(reply, separators=(",", ":")).encode() + b"\n"
        with self.lock:
            self.started = True
            ok = self._write(head + b"".join(self.queued))
            self.queued.clear()
            if self.closing:
                self._shutdown()
            return ok

    def close(self) -> None:
        with self.lock:
            if not self.started:
                self.closing = True
                return
            self._shutdown()

    def _shutdown(self) -> None:
        self.open = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# ---------------------------------------------------------------- one shell (a TTY exec)

class Shell:
    def __init__(self, key: tuple[int, int], owner_uid: int, term: Terminal) -> None:
        self.key = key  # (id(ctx), job id)
        self.owner_uid = owner_uid
        self.term = term
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.conn: Conn | None = None
        self.backlog = bytearray()
        self.ended = False

    def try_attach(self, conn: Conn) -> bool:
        """Claim this shell for ``conn`` if it is detached; queue its backlog on ``conn``."""
        with self.lock:
            if self.ended or self.conn is not None:
                return False
            self.conn = conn
            data, self.backlog = bytes(self.backlog), bytearray()
            for i in range(0, len(data), MAX_PAYLOAD):
                conn.send(DATA, data[i:i + MAX_PAYLOAD])
            return True

    def detach(self, conn: Conn) -> None:
        with self.lock:
            if self.conn is conn:
                self.conn = None

    def output(self, data: bytes) -> None:
        with self.lock:
            conn = self.conn
            if conn is not None and conn.send(DATA, data):
                return
            self.conn = None  # no client, or it went away: keep the output for the next attach
            self.backlog += data
            if len(self.backlog) > BACKLOG:
                del self.backlog[:len(self.backlog) - BACKLOG]

    def write(self, conn: Conn, data: bytes) -> None:
        with self.write_lock:
            if self.conn is not conn or self.ended:
                return
            try:
                self.term.write(data)
            except OSError:  # the shell has ended; its pump reports the exit
                pass

    def finish(self) -> Conn | None:
        with self.lock:
            self.ended = True
            conn, self.conn = self.conn, None
            return conn


def bump(counts: dict[Any, int], key: Any, delta: int) -> int:
    """Add ``delta`` to ``counts[key]``, dropping the key at zero; return the new count."""
    n = counts.get(key, 0) + delta
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
    return max(n, 0)


class Registry:
    """Live shells per (context, job); ``opening`` counts shells being started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.shells: dict[tuple[int, int], list[Shell]] = {}
        self.opening: dict[tuple[int, int], int] = {}

    def snapshot(self, key: tuple[int, int]) -> list[Shell]:
        with self.lock:
            return list(self.shells.get(key, ()))

    def add(self, shell: Shell) -> None:
        with self.lock:
            self.shells.setdefault(shell.key, []).append(shell)

    def opening_delta(self, key: tuple[int, int], delta: int) -> None:
        with self.lock:
            bump(self.opening, key, delta)

    def remove(self, shell: Shell) -> int:
        """Forget ``shell``; return how many shells of its job remain (or are being opened)."""
        with self.lock:
            shells = self.shells.get(shell.key, [])
            if shell in shells:
                shells.remove(shell)
            if not shells:
                self.shells.pop(shell.key, None)
            return len(shells) + self.opening.get(shell.key, 0)


REGISTRY = Registry()


class Terminals:
    """How many terminals are attached to each job now; the idle check reads it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attached: dict[int, int] = {}

    def attach(self, job_id: int) -> int:
        with self.lock:
            return bump(self.attached, job_id, +1)

    def detach(self, job_id: int) -> None:
        with self.lock:
            bump(self.attached, job_id, -1)

    def count(self, job_id: int) -> int:
        with self.lock:
            return self.attached.get(job_id, 0)
