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
import time
from typing import Any, Iterator

MAX_LINE = 4 * 1024 * 1024  # a request is refused above this size


def send(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")


class LineReader:
    """Reads one JSON object per line. ``deadline_s``: a whole request must arrive within this long
    (a client trickling one byte at a time cannot hold the connection); oversized lines, deep
    nesting and non-objects are ValueError with a one-line reason."""

    def __init__(self, sock: socket.socket, deadline_s: float | None = None) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.deadline_s = deadline_s

    def read(self) -> dict[str, Any] | None:
        end = time.monotonic() + self.deadline_s if self.deadline_s else None
        start = 0
        while (nl := self.buf.find(b"\n", start)) < 0:
            start = len(self.buf)
            if len(self.buf) > MAX_LINE:
                raise ValueError(f"message larger than {MAX_LINE} bytes")
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError("request not complete in time")
                self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        line = bytes(self.buf[:nl])
        del self.buf[:nl + 1]
        return decode(line)

    def leftover(self) -> bytes:
        return bytes(self.buf)


def decode(line: bytes) -> dict[str, Any]:
    """One request line → a dict; ValueError (one line) for anything else."""
    if len(line) > MAX_LINE:
        raise ValueError(f"message larger than {MAX_LINE} bytes")
    if _too_deep(line):
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(line)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise ValueError(f"not JSON: {str(e).splitlines()[0][:120]}") from None
    if not isinstance(obj, dict):
        raise ValueError("message is not a JSON object")
    return obj


MAX_DEPTH = 32
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")


def _too_deep(line: bytes) -> bool:
    """True if brackets outside strings nest deeper than MAX_DEPTH (checked before parsing)."""
    if line.count(b"[") + line.count(b"{") <= MAX_DEPTH:
        return False
    depth, in_str, esc = 0, False, False
    for c in line:
        if in_str:
            if esc:
                esc = False
            elif c == 92:  # backslash
                esc = True
            elif c == 34:  # quote
                in_str = False
        elif c == 34:
            in_str = True
        elif c in _OPEN:
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif c in _CLOSE:
            depth -= 1
    return False


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
