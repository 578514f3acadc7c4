"""Wire format between ``ds01q.Client`` and ``ds01q server``: one JSON object
per line over a Unix stream socket.

    request   {"op": "submit", "args": {...}}
    response  {"ok": true, "result": ...}
            | {"ok": false, "error": {"code": "request", "message": "one line"}}

Streaming ops (``logs --follow``, ``wait``) send several ``{"ok": true, "chunk": ...}``
lines and end with a normal response.
"""
from __future__ import annotations

import json
import socket
from typing import Any

MAX_LINE = 4 * 1024 * 1024  # a request is refused above this size


def send(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")


class LineReader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def read(self) -> dict[str, Any] | None:
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_LINE:
                raise ValueError(f"message larger than {MAX_LINE} bytes")
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("message is not a JSON object")
        return obj


def ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}
