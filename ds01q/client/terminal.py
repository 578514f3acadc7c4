"""The client half of the terminal relay: raw mode, the detach keys, window size, and the
framed connection to the daemon (``ds01q.daemon.relay`` is the other half; ``ds01q.protocol``
holds the framing)."""
from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import termios
import tty
from typing import Any, Callable

from ds01q import protocol
from ds01q.client.api import connect, roundtrip
from ds01q.errors import Ds01qError, RequestError
from ds01q.protocol import DATA, DETACH, EXIT, RESIZE, TERM_RE, FrameReader, frame, pack_size

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_CTRL_CHARS = "@abcdefghijklmnopqrstuvwxyz[\\]^_"



def parse_detach_keys(spec: str) -> bytes:
    """``"ctrl-p,ctrl-q"`` -> b"\\x10\\x11"; tokens are ``ctrl-<c>`` (c in a-z @ [ \\ ] ^ _) or one character."""
    out = bytearray()
    for token in (t.strip() for t in spec.split(",")):
        low = token.lower()
        if low.startswith("ctrl-") and len(low) == 6 and low[5] in _CTRL_CHARS:
            out.append(ord(low[5].upper()) & 0x1F)
        elif len(token) == 1 and 0x20 <= ord(token) < 0x7F:
            out.append(ord(token))
        else:
            raise RequestError(f"--detach-keys: {token!r} is not a key (allowed: ctrl-a..ctrl-z, ctrl-@, ctrl-[, "
                               "ctrl-\\, ctrl-], ctrl-^, ctrl-_, or one printable character), e.g. ctrl-p,ctrl-q")
    if not out:
        raise RequestError("--detach-keys: give at least one key, e.g. ctrl-p,ctrl-q")
    return bytes(out)


def describe_keys(keys: bytes) -> str:
    return " ".join(f"Ctrl-{chr(k | 0x40)}" if k < 0x20 else chr(k) for k in keys)


class DetachMatcher:
    """Passes keystrokes through, holding back a prefix of the detach sequence until it is decided."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Return (bytes to send, whether the full sequence was typed). Bytes after it are dropped."""
        out = bytearray()
        for b in data:
            candidate = self.held + bytes([b])
            if self.keys.startswith(candidate):
                self.held = candidate
                if candidate == self.keys:
                    self.held = b""
                    return bytes(out), True
                continue
            out += self.held
            self.held = b""
            if self.keys[:1] == bytes([b]):
                self.held = bytes([b])
                if len(self.keys) == 1:
                    self.held = b""
                    return bytes(out), True
            else:
                out.append(b)
        return bytes(out), False


def _terminal_size() -> tuple[int, int]:
    for fd in (0, 1, 2):
        try:
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
            if rows and cols:
                return rows, cols
        except OSError:
            continue
    return 24, 80


def connect_terminal(path: str, job_id: int) -> tuple[socket.socket, bytes, dict[str, Any]]:
    sock = connect(path)
    rows, cols = _terminal_size()
    term = os.environ.get("TERM") or "xterm"
    if not TERM_RE.match(term):
        term = "xterm"
    reader = protocol.LineReader(sock)
    try:
        result = roundtrip(sock, reader, "attach", {"id": job_id, "rows": rows, "cols": cols, "term": term})
    except Ds01qError:
        sock.close()
        raise
    return sock, bytes(reader.buf), result


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        data = data[n:]


class _Terminal:
    """Raw mode and the SIGWINCH/SIGTERM/SIGHUP self-pipe, restored on exit whatever happens."""

    def __init__(self, in_fd: int) -> None:
        self.in_fd = in_fd
        self.is_tty = os.isatty(in_fd)
        self.saved: Any = None
        self.rd, self.wr = os.pipe()
        os.set_blocking(self.wr, False)
        self.old: dict[int, Any] = {}

    def _poke(self, byte: bytes) -> Callable[[int, Any], None]:
        def handler(_sig: int, _frame: Any) -> None:
            try:
                os.write(self.wr, byte)
            except OSError:
                pass
        return handler

    def __enter__(self) -> _Terminal:
        for sig, byte in ((signal.SIGWINCH, b"w"), (signal.SIGTERM, b"q"), (signal.SIGHUP, b"q")):
            self.old[sig] = signal.signal(sig, self._poke(byte))
        if self.is_tty:
            self.saved = termios.tcgetattr(self.in_fd)
            tty.setraw(self.in_fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            try:
                termios.tcsetattr(self.in_fd, termios.TCSADRAIN, self.saved)
            except termios.error:
                pass
        for sig, h in self.old.items():
            signal.signal(sig, h)
        os.close(self.rd)
        os.close(self.wr)


def relay_terminal(sock: socket.socket, initial: bytes, keys: bytes) -> tuple[str, dict[str, Any] | None]:
    """Pump stdin/stdout through the framed connection. Returns ("exit", E payload), ("detached", None)
    or ("lost", None) if the connection dropped without either."""
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    frames = FrameReader(initial)
    matcher = DetachMatcher(keys)
    stdin_open = True
    sock.settimeout(None)
    with _Terminal(in_fd) as term:
        while True:
            try:
                received = list(frames.frames())
            except ValueError as e:
                raise Ds01qError(f"the ds01q server sent a bad frame: {e}") from None
            for kind, payload in received:
                if kind == DATA:
                    _write_all(out_fd, payload)
                elif kind == EXIT:
                    return "exit", json.loads(payload.decode() or "{}")
                elif kind == DETACH:
                    return "detached", None
            watch = [sock, term.rd] + ([in_fd] if stdin_open else [])
            ready, _, _ = select.select(watch, [], [])
            if term.rd in ready:
                pokes = os.read(term.rd, 64)
                if b"w" in pokes:
                    sock.sendall(frame(RESIZE, pack_size(*_terminal_size())))
                if b"q" in pokes:  # SIGTERM/SIGHUP: leave the shell running
                    sock.sendall(frame(DETACH))
                    stdin_open = False
            if stdin_open and in_fd in ready:
                data = os.read(in_fd, 4096)
                if not data:
                    stdin_open = False
                    # a pipe ran dry: Ctrl-D for the shell; a terminal hung up: detach
                    sock.sendall(frame(DETACH) if term.is_tty else frame(DATA, b"\x04"))
                else:
                    out, detach = matcher.feed(data)
                    if out:
                        sock.sendall(frame(DATA, out))
                    if detach:
                        sock.sendall(frame(DETACH))
                        stdin_open = False
            if sock in ready:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    return "lost", None
                frames.feed(data)
