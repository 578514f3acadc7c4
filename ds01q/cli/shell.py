"""`ds01q shell` and `ds01q attach`: an interactive shell in an allocated container.

``shell`` queues an interactive job, shows a live line with its queue position, reason and
estimated start while it waits (Ctrl-C withdraws the request), and once the job RUNS
connects this terminal to a login shell in its container. ``attach ID`` connects to a
running session again. The daemon relays the terminal (``ds01q.daemon.relay.attach`` documents the
framing); this side puts the terminal in raw mode, forwards the window size on SIGWINCH,
watches for the detach keys and exits with the shell's exit code.

Detach with Ctrl-P Ctrl-Q (like ``docker attach``; ``--detach-keys`` or
``DS01Q_DETACH_KEYS`` change it): the session keeps running and ``ds01q attach ID``
resumes that same shell. ``exit`` or Ctrl-D in the last shell ends the session: the job
ends COMPLETED or FAILED with the shell's exit code, which is also this command's.
"""
from __future__ import annotations

import signal
import sys
import time
from datetime import datetime
from typing import Any

import click

from ds01q.cli.options import request_from, request_options
from ds01q.client.api import EXIT_BY_STATE, FINAL, Client
from ds01q.client.terminal import DEFAULT_DETACH_KEYS, connect_terminal, describe_keys, relay_terminal
from ds01q.client.terminal import parse_detach_keys as _parse_keys
from ds01q.errors import Ds01qError, ExecutorError, RequestError, ServerUnavailable
from ds01q.units import format_duration

# The relay's framing lives in ds01q.protocol (ds01q.daemon.relay.attach documents it).

POLL_S = 0.5


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


def open_terminal(path: str, job_id: int, keys: bytes) -> int:
    """Attach this terminal to job ``job_id``'s shell; return the exit code for the process."""
    sock, initial, info = connect_terminal(path, job_id)
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
        click.echo(f"ds01q: job {job_id} was stopped: {end.get('reason') or state.lower()}", err=True)
        return EXIT_BY_STATE.get(state, 1 if code is None else int(code) & 0xFF)
    if end.get("session") == "open":
        click.echo(f"ds01q: shell exited ({code}); job {job_id} keeps running for its other shells", err=True)
    else:
        click.echo(f"ds01q: shell exited ({code}); job {job_id} ends and frees its slice", err=True)
    return 1 if code is None else int(code) & 0xFF


# ---------------------------------------------------------------- commands

def parse_detach_keys(spec: str) -> bytes:
    try:
        return _parse_keys(spec)
    except RequestError as e:
        raise click.BadParameter(str(e).removeprefix("--detach-keys: "), param_hint="--detach-keys") from None


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

    \b
    Examples:
      ds01q shell --mig 2g.10gb              # one MIG slice; the shell opens when one is free
      ds01q shell --gpus 1 --time 4h         # a whole GPU for at most 4 hours
      ds01q shell --gpus 0 --cpus 4 --mem 16g  # CPU only
      ds01q shell --mig 1g.5gb --image ds01q/busybox:test --detach-keys ctrl-x,ctrl-y
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

    \b
    Examples:
      ds01q attach 42                        # back into job 42's shell after Ctrl-P Ctrl-Q
      ds01q attach 42 --detach-keys ctrl-x,ctrl-y
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
