"""A Unix-socket proxy in front of the Docker engine's socket that a test can take down and
bring back, and that can fail chosen API calls: the daemon's ``DOCKER_HOST`` points at it, so
"the engine" stops, restarts or errs without touching the real engine that other tests share.

Requests from the daemon are read one at a time (request line, headers, a Content-Length
body; the Docker SDK does not pipeline), and each is offered to ``Faults.decide``:

- ``"500"``: answer 500 without forwarding (the engine never sees the call);
- ``"drop"``: close the connection without forwarding (a call cut before it reached the engine);
- ``"lose-reply"``: forward the call, then cut the connection before the engine's answer
  reaches the daemon (the call took effect, the daemon does not know);
- a callable: call it (e.g. SIGKILL the daemon), then drop the call, or forward it if the
  callable returns ``"forward"`` (e.g. take the database lock just before a container starts).

A connection that upgrades (attach, exec) or sends a chunked body is pumped as raw bytes.
"""
from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass, field
from typing import Callable, Union

# the engine the tests were started against (its unix socket), the shared one by default
ENGINE = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
Action = Union[str, Callable[[], "str | None"]]
_VERSION = re.compile(r"^/v[0-9.]+(?=/)")


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    action: Action
    times: int  # how many matching calls it still fails
    hits: int = 0


@dataclass
class Faults:
    """The calls to fail: ``add("POST", r"/containers/[^/]+/start", "500", times=2)``. ``seen`` counts
    every call by ``"METHOD /path"`` (API version and query dropped), failed or not."""
    rules: list[Rule] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str, action: Action, times: int = 1) -> None:
        with self.lock:
            self.rules.append(Rule(method, re.compile(path + "$"), action, times))

    def decide(self, method: str, path: str) -> Action | None:
        with self.lock:
            key = re.sub(r"/[0-9a-f]{64}(?=/|$)", "/ID", f"{method} {path}")
            self.seen[key] = self.seen.get(key, 0) + 1
            for r in self.rules:
                if r.times > 0 and r.method == method and r.path.match(path):
                    r.times, r.hits = r.times - 1, r.hits + 1
                    self.failed.append(f"{key}: {r.action if isinstance(r.action, str) else 'call'}")
                    return r.action
        return None

    def left(self) -> int:
        with self.lock:
            return sum(r.times for r in self.rules)

    def unmet(self) -> list[str]:
        """The rules no call has met yet."""
        with self.lock:
            return [f"{r.method} {r.path.pattern}" for r in self.rules if r.hits == 0]


def _500(message: str) -> bytes:
    body = ('{"message": "%s"}' % message).encode()
    return (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class EngineProxy:
    def __init__(self, path: str, upstream: str = ENGINE, faults: Faults | None = None) -> None:
        self.path, self.upstream = path, upstream
        self.faults = faults
        self.listener: socket.socket | None = None
        self.conns: set[socket.socket] = set()
        self.lock = threading.Lock()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def up(self) -> None:
        s = socket.socket(socket.AF_UNIX)
        if os.path.exists(self.path):
            os.unlink(self.path)
        s.bind(self.path)
        s.listen(128)
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections (no socket) and cut every open one, like a stopped engine."""
        s, self.listener = self.listener, None
        if s is not None:
            s.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        with self.lock:
            conns, self.conns = self.conns, set()
        for c in conns:
            _cut(c)

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                client, _ = s.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            try:
                engine.connect(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns |= {client, engine}
            lose = threading.Event()  # set: the engine's next answer on this connection is cut
            threading.Thread(target=self._requests, args=(client, engine, lose), daemon=True).start()
            threading.Thread(target=self._pump, args=(engine, client, lose), daemon=True).start()

    def _requests(self, client: socket.socket, engine: socket.socket, lose: threading.Event) -> None:
        """Daemon → engine, one HTTP request at a time, each offered to ``faults``."""
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = client.recv(65536)
                    if not data:
                        raise OSError("closed")
                    buf += data
                head, rest = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                if "upgrade" in headers or headers.get("transfer-encoding", "").lower() == "chunked":
                    engine.sendall(buf)
                    self._pump(client, engine, None)
                    return
                n = int(headers.get("content-length") or 0)
                while len(rest) < n:
                    data = client.recv(65536)
                    if not data:
                        raise OSError("closed")
                    rest += data
                request, buf = head + b"\r\n\r\n" + rest[:n], rest[n:]
                path = _VERSION.sub("", target.split("?", 1)[0])
                action = self.faults.decide(method, path) if self.faults else None
                if action is None:
                    engine.sendall(request)
                elif action == "500":
                    client.sendall(_500(f"injected fault: {method} {path}"))
                    raise OSError("answered")
                elif action == "lose-reply":
                    lose.set()
                    engine.sendall(request)
                    return  # the pump cuts both ends when the answer comes
                elif callable(action) and action() == "forward":
                    engine.sendall(request)
                else:
                    raise OSError("dropped")
        except (OSError, ValueError):
            pass
        _cut(client)
        _cut(engine)

    def _pump(self, src: socket.socket, dst: socket.socket, lose: threading.Event | None) -> None:
        try:
            while data := src.recv(65536):
                if lose is not None and lose.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        _cut(src)
        _cut(dst)


def _cut(c: socket.socket) -> None:
    try:
        c.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
