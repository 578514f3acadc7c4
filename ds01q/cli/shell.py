"""`ds01q shell` and `ds01q attach`: an interactive shell in an allocated container.

``shell`` queues an interactive job, shows a live line with its queue position, reason and
estimated start while it waits (Ctrl-C withdraws the request), and once the job RUNS
connects this terminal to a login shell in its container. ``attach ID`` connects to a
running session again. The daemon relays the terminal (``ds01q.relay`` documents the
framing); this side puts the terminal in raw mode, forwards the window size on SIGWINCH,
watches for the detach keys and exits with the shell's exit code.

Detach with Ctrl-P Ctrl-Q (like ``docker attach``; ``--detach-keys`` or
``DS01Q_DETACH_KEYS`` change it): the session keeps running and ``ds01q attach ID``
resumes that same shell. ``exit`` or Ctrl-D in the last shell ends the session: the job
ends COMPLETED or FAILED with the shell's exit code, which is also this command's.
"""
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
import time
import tty
from datetime import datetime
from typing import Any, Callable

import click

from ds01q import protocol
from ds01q.protocol import DATA, DETACH, EXIT, RESIZE, TERM_RE, FrameReader, frame, pack_size
from ds01q.cli.options import request_from, request_options
from ds01q.client import EXIT_BY_STATE, FINAL, Client, connect, roundtrip
from ds01q.errors import Ds01qError, ExecutorError, ServerUnavailable
from ds01q.units import format_duration

# The relay's framing lives in ds01q.protocol (ds01q.relay documents it).

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
POLL_S = 0.5
STOP_WORDS = {"CANCELLED": "cancelled", "TIMEOUT": "time limit reached", "PREEMPTED": "requeued by an admin"}
_CTRL_CHARS = "@abcdefghijklmnopqrstuvwxyz[\\]^_"


# ---------------------------------------------------------------- detach keys

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
            raise click.BadParameter(f"{token!r} is not a key (allowed: ctrl-a..ctrl-z, ctrl-@, ctrl-[, ctrl-\\, "
                                     f"ctrl-], ctrl-^, ctrl-_, or one printable character), e.g. ctrl-p,ctrl-q",
                                     param_hint="--detach-keys")
    if not out:
        raise click.BadParameter("give at least one key, e.g. ctrl-p,ctrl-q", param_hint="--detach-keys")
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


# ---------------------------------------------------------------- waiting in the queue

def _clock(iso_time: str) -> str:
    """An ISO time as local wall-clock time: HH:MM:SS today, else with its date."""
    t = datetime.fromisoformat(iso_time.replace("Z", "+00:00")).astimezone()
    return t.strftime("%H:%M:%S") if t.date() == datetime.now().astimezone().date() else t.strftime("%Y-%m-%d %H:%M")


def _eta(iso_time: str | None) -> str:
    if not iso_time:
        return "unknown"
    left = datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp() - time.time()
    if left <= 0:
        return f"{_clock(iso_time)} (now)"
    return f"{_clock(iso_time)} (in {format_duration(60 * round(left / 60)) if left >= 60 else 'under a minute'})"


def wait_line(job: dict[str, Any], queue: list[dict[str, Any]], withdraw: bool) -> str:
    """One line about a job that is not running yet: state, position, reason, estimated start."""
    hint = "Ctrl-C withdraws the request" if withdraw else "Ctrl-C stops waiting"
    if job["state"] == "STARTING":
        return f"job {job['id']}: starting on {', '.join(job['slices']) or 'CPU only'} ({hint})"
    pending = [j["id"] for j in queue if j["state"] == "PENDING"]
    pos = f"position {pending.index(job['id']) + 1} of {len(pending)}, " if job["id"] in pending else ""
    reason = job.get("reason") or "-"
    detail = job.get("explain") or job.get("reason_detail")
    if detail and detail != reason:
        reason = f"{reason}: {detail}"
    return (f"job {job['id']} {job['state']}: {pos}reason {reason}, "
            f"estimated start {_eta(job.get('estimated_start'))} ({hint})")


class _Progress:
    """The live line: a rich status on a terminal, otherwise a plain line whenever it changes."""

    def __init__(self) -> None:
        self.status: Any = None
        self.last = ""

    def __enter__(self) -> _Progress:
        if sys.stderr.isatty():
            from rich.console import Console

            self.status = Console(stderr=True, highlight=False).status("waiting for the queue")
            self.status.start()
        return self

    def update(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.status is not None:
            from rich.markup import escape

            self.status.update(escape(text))
        else:
            click.echo(f"ds01q: {text}", err=True)

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()


def _raise_interrupt(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def wait_running(c: Client, job_id: int, withdraw: bool) -> dict[str, Any]:
    """Poll until the job RUNS; raise Ds01qError if it ends first. SIGTERM/SIGHUP act like Ctrl-C."""
    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with _Progress() as progress:
            while True:
                job = c.show(job_id)
                if job["state"] == "RUNNING":
                    return job
                if job["state"] in FINAL:
                    why = job.get("reason") or job.get("reason_detail") or "no reason given"
                    raise Ds01qError(f"job {job_id} ended {job['state']} before its shell opened: {why}")
                if not job.get("interactive"):
                    raise Ds01qError(f"job {job_id} is a batch job; only interactive sessions can be attached "
                                     f"(for its output: ds01q logs {job_id} -f)")
                progress.update(wait_line(job, c.queue() if job["state"] == "PENDING" else [], withdraw))
                time.sleep(POLL_S)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------- the terminal

def _terminal_size() -> tuple[int, int]:
    for fd in (0, 1, 2):
        try:
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
            if rows and cols:
                return rows, cols
        except OSError:
            continue
    return 24, 80


def _connect(path: str, job_id: int) -> tuple[socket.socket, bytes, dict[str, Any]]:
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


def banner(info: dict[str, Any], keys: bytes) -> list[str]:
    jid = info["id"]
    where = ", ".join(info["slices"]) or "no GPU"
    if info.get("profiles"):
        where += f" ({', '.join(info['profiles'])})"
    left = int(info.get("time_left_s") or 0)
    h, rem = divmod(left, 3600)
    until = f" (until {_clock(info['ends_at'])})" if info.get("ends_at") else ""
    lines = [f"job {jid} on {where}; time left {h}:{rem // 60:02d}:{rem % 60:02d}{until}",
             f"detach: {describe_keys(keys)} (resume: ds01q attach {jid}); end: exit or Ctrl-D "
             f"(ends job {jid} with the shell's exit code)"]
    if info.get("idle_timeout_s") and not info.get("idle_exempt"):
        lines.append(f"idle sessions stop after {format_duration(info['idle_timeout_s'])} with no terminal "
                     "attached and no CPU or GPU use")
    if info.get("resumed"):
        lines.append("resumed your detached shell")
    elif (info.get("terminals") or 1) > 1:
        lines.append(f"a new shell; {info['terminals'] - 1} other terminal(s) attached")
    return [f"ds01q: {line}" for line in lines]


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


def open_terminal(path: str, job_id: int, keys: bytes) -> int:
    """Attach this terminal to job ``job_id``'s shell; return the exit code for the process."""
    sock, initial, info = _connect(path, job_id)
    try:
        for line in banner(info, keys):
            click.echo(line, err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        how, end = relay_terminal(sock, initial, keys)
    finally:
        sock.close()
    click.echo("", err=True)
    if how == "detached":
        click.echo(f"ds01q: detached; job {job_id} keeps running (ds01q attach {job_id} resumes, "
                   f"ds01q cancel {job_id} ends it)", err=True)
        return 0
    if how == "lost" or end is None:
        raise ServerUnavailable(f"lost the connection to the ds01q server; job {job_id} may still run "
                                f"(ds01q attach {job_id})")
    code = end.get("exit_code")
    if end.get("session") == "stopping":
        state = end.get("state") or "CANCELLED"
        click.echo(f"ds01q: job {job_id} was stopped: {end.get('reason') or STOP_WORDS.get(state, state)}", err=True)
        return EXIT_BY_STATE.get(state, 1 if code is None else int(code) & 0xFF)
    if end.get("session") == "open":
        click.echo(f"ds01q: shell exited ({code}); job {job_id} keeps running for its other shells", err=True)
    else:
        click.echo(f"ds01q: shell exited ({code}); job {job_id} ends and frees its slice", err=True)
    return 1 if code is None else int(code) & 0xFF


# ---------------------------------------------------------------- commands

def _client(ctx: click.Context) -> Client:
    return Client(config=ctx.find_root().obj.get("config"))


detach_keys_option = click.option(
    "--detach-keys", envvar="DS01Q_DETACH_KEYS", default=DEFAULT_DETACH_KEYS, show_default=True,
    help="Keys that detach, leaving the session running (like docker: ctrl-p,ctrl-q).")


@click.command()
@request_options
@detach_keys_option
@click.pass_context
def shell(ctx: click.Context, detach_keys: str, **kw: Any) -> None:
    """Wait in the queue, then open a shell in the allocated container.

    Ctrl-C while waiting withdraws the request. In the shell, the detach keys
    (Ctrl-P Ctrl-Q) leave the session running (`ds01q attach ID` resumes it);
    `exit` or Ctrl-D ends the session, and the job, with the shell's exit code.
    """
    keys = parse_detach_keys(detach_keys)
    with _client(ctx) as c:
        job_id = c.submit(None, interactive=True, **request_from(kw))
        try:
            wait_running(c, job_id, withdraw=True)
        except KeyboardInterrupt:
            with _client(ctx) as c2:
                c2.cancel(job_id)
            click.echo(f"ds01q: shell request {job_id} withdrawn", err=True)
            ctx.exit(130)
        path = c.path
    try:
        code = open_terminal(path, job_id, keys)
    except ExecutorError as e:  # no shell can start in this container: the session is of no use
        with _client(ctx) as c:
            c.cancel(job_id)
        raise ExecutorError(f"{e}; job {job_id} cancelled") from None
    ctx.exit(code)


@click.command()
@click.argument("job_id", type=int)
@detach_keys_option
@click.pass_context
def attach(ctx: click.Context, job_id: int, detach_keys: str) -> None:
    """Connect this terminal to a running interactive session (owner or admin).

    Resumes your detached shell in the job if there is one, else opens another.
    """
    keys = parse_detach_keys(detach_keys)
    with _client(ctx) as c:
        job = c.show(job_id)
        if job["state"] != "RUNNING" and job.get("interactive") and job["state"] not in FINAL:
            try:
                wait_running(c, job_id, withdraw=False)
            except KeyboardInterrupt:
                click.echo(f"ds01q: stopped waiting; job {job_id} stays queued", err=True)
                ctx.exit(130)
        path = c.path
    ctx.exit(open_terminal(path, job_id, keys))
