"""Wire format between ``ds01q.Client`` and ``ds01q server``: one JSON object
per line over a Unix stream socket.

    request   {"op": "submit", "args": {...}}
    response  {"ok": true, "result": ...}
            | {"ok": false, "error": {"code": "request", "message": "one line"}}

After an ``attach`` request is answered, the connection carries terminal frames
(``ds01q.daemon.relay.attach`` documents them): 1 type byte, a 4-byte big-endian length, a payload.
"""
from __future__ import annotations

import json
import re
import socket
import struct
from typing import Any, Iterator

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


# ---------------------------------------------------------------- terminal frames (after "attach")
HEADER = struct.Struct(">cI")
SIZE = struct.Struct(">HH")
MAX_PAYLOAD = 64 * 1024
DATA, RESIZE, DETACH, EXIT = b"D", b"R", b"X", b"E"
TERM_RE = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")  # what the daemon accepts as TERM


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    return HEADER.pack(kind, len(payload)) + payload


def pack_size(rows: int, cols: int) -> bytes:
    return SIZE.pack(max(1, min(rows, 65535)), max(1, min(cols, 65535)))


class FrameReader:
    """Collects bytes and yields complete ``(type, payload)`` frames; ValueError on an oversized one."""

    def __init__(self, initial: bytes = b"") -> None:
        self.buf = bytearray(initial)

    def feed(self, data: bytes) -> None:
        self.buf += data

    def frames(self) -> Iterator[tuple[bytes, bytes]]:
        while len(self.buf) >= HEADER.size:
            kind, n = HEADER.unpack_from(self.buf)
            if n > MAX_PAYLOAD:
                raise ValueError(f"frame of {n} bytes is over the {MAX_PAYLOAD}-byte limit")
            if len(self.buf) < HEADER.size + n:
                return
            payload = bytes(self.buf[HEADER.size:HEADER.size + n])
            del self.buf[:HEADER.size + n]
            yield kind, payload
