"""The terminal relay: a shell in an interactive job's container, carried over the ds01q socket.

Users have no Docker access, so the daemon is the bridge (gpu-mig-docker-facts.md §5): it
execs a login shell with a TTY in the job's keepalive container (a ``Terminal`` from the
executor, ``relay.terminal``: on this host's engine, or on a node through its agent), as
the job's ``uid:gid``, in its working directory, with the job's environment
(``CUDA_VISIBLE_DEVICES``, ``DS01Q_*``, ``SLURM_*``, ``HOME``) plus the client's ``TERM``,
and pumps bytes between that exec and the caller's connection.

Wire protocol
-------------
The client sends one JSON request line (see ``ds01q.protocol``)::

    {"op": "attach", "args": {"id": 12, "rows": 40, "cols": 120, "term": "xterm-256color"}}

The daemon answers one JSON line: an error (then it closes the connection), or
``{"ok": true, "result": INFO}``, INFO describing the session: ``id``, ``name``, ``user``,
``slices``, ``profiles``, ``started_at``, ``ends_at``, ``time_left_s``, ``idle_timeout_s``,
``idle_exempt``, ``resumed`` and ``terminals``. After that line the connection
carries only frames, in both directions::

    +----------+--------------------+-------------------+
    | type: 1B | length: u32, BE    | payload: length B |   payload at most 64 KiB
    +----------+--------------------+-------------------+

    client -> daemon   D  keystrokes for the shell's terminal
                       R  window size: rows then columns, two u16 BE
                       X  detach (empty payload)
    daemon -> client   D  output of the shell's terminal
                       X  detached (empty); the shell keeps running; the daemon closes
                       E  the shell ended: JSON {"exit_code": int|null,
                          "session": "ended"|"open"|"stopping", "state": str|null,
                          "reason": str|null}; the daemon closes

Sessions
--------
* ``attach`` resumes a detached shell that the same caller opened in that job, if there is
  one (replaying up to 64 KiB of output it produced meanwhile), else it opens a new shell.
  Several terminals may be attached at once, each to its own shell. A connection that drops
  without ``X`` counts as a detach: the shell keeps running, as in ``docker attach``.
* A shell that exits while other shells of the job live closes only its terminal ("open").
* When the last shell exits, the session ends ("ended"): the relay records the shell's exit
  code in the job itself and stops it through the one stop path (outcome SHELL_EXIT); the
  controller stops the container and the job ends COMPLETED (code 0) or FAILED ("shell exit
  code N"), like a batch script. Nothing is ever executed in the container as root.
* When the daemon stops the job (``ds01q cancel``, the time limit, the idle timeout), every
  shell ends with "stopping", ``state`` being the state the job ends in.
* Shells live in the daemon process; after a daemon restart ``attach`` opens a new shell.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

from ds01q import protocol
from ds01q.db import store
from ds01q.controller.launch import job_env
from ds01q.errors import Ds01qError, RequestError
from ds01q.daemon.relay import terminal
from ds01q.daemon.relay.sessions import CONN_TIMEOUT_S, REGISTRY, Conn, Shell, Terminals
from ds01q.db.jobstate import request_stop
from ds01q.db.models import Allocation, Job
from ds01q.executors.base import Handle
from ds01q.services.context import Caller, Context
from ds01q.types import JobState, StopOutcome
from ds01q.units import iso

__all__ = ["DATA", "DETACH", "EXIT", "RESIZE", "FrameReader", "frame", "serve_attach"]

log = logging.getLogger("ds01q.daemon.relay.attach")

from ds01q.protocol import DATA, DETACH, EXIT, HEADER, MAX_PAYLOAD, RESIZE, SIZE, TERM_RE, FrameReader, frame  # noqa: E402,F401
MAX_ROWS_COLS = 4096
# Size the terminal from inside too (the API resize can race the exec's start), then a login shell.
SHELL_SCRIPT = ('stty rows "$1" cols "$2" 2>/dev/null; '
                'if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l')


@dataclass(frozen=True)
class RelayEnv:
    """What the relay needs: the services' context, the executor that runs the execs, and
    the count of attached terminals (shared with the loop's idle check)."""

    ctx: Context
    executor: Any
    terminals: Terminals

    @property
    def sessions(self) -> Any:
        return self.ctx.sessions

    @property
    def config(self) -> Any:
        return self.ctx.config

    @property
    def clock(self) -> Any:
        return self.ctx.clock

    def wake(self) -> None:
        self.ctx.wake()

    def require_owner(self, caller: Caller, owner: str, what: str) -> None:
        self.ctx.require_owner(caller, owner, what)


# ---------------------------------------------------------------- the attach operation

def serve_attach(ctx: RelayEnv, caller: Caller, sock: socket.socket, reader: protocol.LineReader,
                 args: Any) -> None:
    """Serve one ``attach`` request on ``sock``; returns when the terminal detaches or its shell ends."""
    try:
        if not isinstance(args, dict):
            raise RequestError("args must be a JSON object")
        job, allocs = _load(ctx, caller, args)
        rows, cols, term = _terminal(args)
    except Ds01qError as e:
        _reply_error(sock, e.code, str(e))
        return
    terminals = ctx.terminals.attach(job.id)  # counted from now on: the idle check cannot stop it
    conn = Conn(sock)
    shell: Shell | None = None
    try:
        shell, resumed = _claim_or_open(ctx, caller, job, allocs, conn, rows, cols, term)
        if resumed:
            _resize(ctx, shell, rows, cols)
        sock.settimeout(CONN_TIMEOUT_S)
        if conn.start(protocol.ok(_info(ctx, job, allocs, resumed, terminals))):
            _client_loop(ctx, shell, conn, bytes(reader.buf))
    except Ds01qError as e:
        if not conn.started:  # once frames flow, a JSON error would garble them: just close
            _reply_error(sock, e.code, str(e))
    except Exception as e:  # never a traceback to the client
        log.exception("attach to job %s failed", job.id)
        if not conn.started:
            _reply_error(sock, "error", f"internal error in attach: {type(e).__name__}: {e}".splitlines()[0])
    finally:
        if shell is not None:
            shell.detach(conn)
        ctx.terminals.detach(job.id)


def _reply_error(sock: socket.socket, code: str, message: str) -> None:
    try:
        protocol.send(sock, protocol.error(code, message))
    except OSError:
        pass


def _load(ctx: RelayEnv, caller: Caller, args: dict[str, Any]) -> tuple[Job, list[Allocation]]:
    job_id = args.get("id")
    if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id <= 0:
        raise RequestError("attach needs a job id, a positive whole number")
    with ctx.sessions() as session:
        job = store.get_job(session, job_id)
        allocs = store.allocations_of(session, job_id)
    ctx.require_owner(caller, job.user, f"attach to job {job_id}")
    if not job.interactive:
        raise RequestError(f"job {job_id} is a batch job; only interactive sessions (ds01q shell) can be attached "
                           f"(for its output: ds01q logs {job_id} -f)")
    if job.state != JobState.RUNNING.value or not job.container:
        raise RequestError(f"job {job_id} is {job.state}; attach works while it is RUNNING")
    if not terminal.supported(ctx.executor):
        raise RequestError("interactive shells need executor.kind: docker (this daemon runs another executor)")
    return job, allocs


def _terminal(args: dict[str, Any]) -> tuple[int, int, str]:
    rows, cols, term = args.get("rows", 24), args.get("cols", 80), args.get("term") or "xterm"
    for name, v in (("rows", rows), ("cols", cols)):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_ROWS_COLS:
            raise RequestError(f"{name} {v!r} must be a whole number from 1 to {MAX_ROWS_COLS}")
    if not isinstance(term, str) or not TERM_RE.match(term):
        raise RequestError(f"term {term!r} must be 1-64 letters, digits and ._+-")
    return rows, cols, term


def _claim_or_open(ctx: RelayEnv, caller: Caller, job: Job, allocs: list[Allocation], conn: Conn,
                   rows: int, cols: int, term: str) -> tuple[Shell, bool]:
    key = (id(ctx.ctx), job.id)
    for shell in REGISTRY.snapshot(key):
        if shell.owner_uid == caller.uid and shell.try_attach(conn):
            return shell, True
    env = job_env(job, allocs)
    env.update(TERM=term, PS1=f"(ds01q {job.id}) \\w \\$ ")
    command = ["/bin/sh", "-c", SHELL_SCRIPT, "ds01q-shell", str(rows), str(cols)]
    REGISTRY.opening_delta(key, +1)
    try:
        term = terminal.open_terminal(ctx.executor, Handle(job_id=job.id, ref=job.container or ""), command,
                                      f"{job.uid}:{job.gid}", env, job.workdir)
        shell = Shell(key, caller.uid, term)
        shell.try_attach(conn)
        REGISTRY.add(shell)
    finally:
        REGISTRY.opening_delta(key, -1)
    _resize(ctx, shell, rows, cols)
    threading.Thread(target=_pump, args=(ctx, shell), name=f"ds01q-relay-{job.id}", daemon=True).start()
    log.info("job %s: shell opened for %s (exec %s)", job.id, caller.user, term.id[:12])
    return shell, False


def _info(ctx: RelayEnv, job: Job, allocs: list[Allocation], resumed: bool, terminals: int) -> dict[str, Any]:
    now = ctx.clock.now()
    ends = (job.started_at or now) + job.time_limit_s
    group = ctx.config.groups.get(job.group) or ctx.config.group_of(job.user)
    exempt = job.user in ctx.config.lifecycle_exempt
    return {
        "id": job.id, "name": job.name, "user": job.user,
        "slices": [a.slice_uuid for a in allocs], "profiles": sorted({a.profile for a in allocs}),
        "started_at": iso(job.started_at), "ends_at": iso(ends), "time_left_s": max(0.0, ends - now),
        "idle_timeout_s": None if exempt else group.idle_timeout_s, "idle_exempt": exempt,
        "resumed": resumed, "terminals": terminals,
    }


def _resize(ctx: RelayEnv, shell: Shell, rows: int, cols: int) -> None:
    try:
        shell.term.resize(rows, cols)
    except Ds01qError as e:
        log.debug("job %s: resize failed: %s", shell.key[1], e)


def _client_loop(ctx: RelayEnv, shell: Shell, conn: Conn, initial: bytes) -> None:
    frames = FrameReader(initial)
    while True:
        try:
            for kind, payload in frames.frames():
                if kind == DATA:
                    shell.write(conn, payload)
                elif kind == RESIZE and len(payload) == SIZE.size:
                    rows, cols = SIZE.unpack(payload)
                    _resize(ctx, shell, max(1, rows), max(1, cols))
                elif kind == DETACH:
                    shell.detach(conn)
                    conn.send(DETACH)
                    conn.close()
                    return
                else:
                    raise ValueError(f"unknown frame type {kind!r}")
        except ValueError as e:
            log.warning("job %s: bad frame from the client, dropping it: %s", shell.key[1], e)
            return
        try:
            data = conn.sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return
        if not data:
            return
        frames.feed(data)


# ---------------------------------------------------------------- the shell's end

def _pump(ctx: RelayEnv, shell: Shell) -> None:
    """Carry the shell's output until its exec ends, then report the exit and maybe end the session."""
    while True:
        data = shell.term.read()
        if not data:
            break
        shell.output(data)
    try:
        with shell.lock:
            shell.ended = True  # no attach claims it any more
        code = shell.term.wait()
        outcome = _shell_ended(ctx, shell, code)
    except Exception:  # the pump thread must still release the client
        log.exception("job %s: ending a shell failed", shell.key[1])
        outcome = {"exit_code": None, "session": "open", "state": None, "reason": None}
    finally:
        shell.term.close()
    conn = shell.finish()
    if conn is not None:
        conn.send(EXIT, json.dumps(outcome).encode())
        conn.close()
    log.info("job %s: shell exited %s (%s)", shell.key[1], outcome["exit_code"], outcome["session"])


def _shell_ended(ctx: RelayEnv, shell: Shell, code: int | None) -> dict[str, Any]:
    remaining = REGISTRY.remove(shell)
    job_id = shell.key[1]
    with ctx.sessions() as session:
        job = session.get(Job, job_id)
    if job is None or job.state != JobState.RUNNING.value:
        outcome = job.stop_outcome if job is not None else None
        state = outcome.end_state.value if outcome else (job.state if job is not None else None)
        return {"exit_code": code, "session": "stopping", "state": state, "reason": job.end_reason if job else None}
    if remaining:
        return {"exit_code": code, "session": "open", "state": None, "reason": None}
    _end_session(ctx, job, code)
    return {"exit_code": code, "session": "ended", "state": "COMPLETED" if code == 0 else "FAILED", "reason": None}


def _end_session(ctx: RelayEnv, job: Job, code: int | None) -> None:
    """The last shell exited: record its code and stop the job (outcome SHELL_EXIT)."""
    with ctx.sessions.begin() as session:
        row = session.get(Job, job.id)
        if row is None or row.state != JobState.RUNNING.value:
            return
        row.exit_code = code
        request_stop(session, row, StopOutcome.SHELL_EXIT, at=ctx.clock.now(), by=job.user,
                     detail=f"last shell exited ({code if code is not None else '?'})")
    log.info("job %s: last shell exited %s; ending the session", job.id, code)
    ctx.wake()
