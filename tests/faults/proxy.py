"""A Unix-socket proxy in front of the Docker engine's socket that a test can take down and
bring back: the daemon's ``DOCKER_HOST`` points at it, so "the engine" stops and restarts
without touching the real engine that other tests share."""
from __future__ import annotations

import os
import socket
import threading

ENGINE = "/var/run/docker.sock"


class EngineProxy:
    def __init__(self, path: str, upstream: str = ENGINE) -> None:
        self.path, self.upstream = path, upstream
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
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

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
            threading.Thread(target=self._pump, args=(client, engine), daemon=True).start()
            threading.Thread(target=self._pump, args=(engine, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for c in (src, dst):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
