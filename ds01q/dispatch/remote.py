"""``RemoteExecutor``: the ``Executor`` protocol over node agents (``dispatch.kind: rq``).

Every command (start, stop, signal, exec, remove) is first a ``node_commands`` row, committed,
then an RQ message on the node's queue (``ds01q:node:NAME``) that carries only the row's id.
The agent executes it and acknowledges in the database (``sent`` → ``done``/``failed``,
compare-and-set). The server waits for that acknowledgement and sends the message again
every ``redrive_s`` until it comes: a Redis restart, which loses queued messages, loses no
command; a message delivered twice is executed once (the agent ignores an acknowledged
command, and a start finds the container it already started by its labels).

Exits and usage come back through the database too: the agent inserts a ``node_exits`` row
(unique per job and container, so an exit reported twice is stored once) and overwrites a
``node_samples`` row. ``poll``/``sample`` read them; ``watch`` notices new exits.

Shells (``open_terminal``) and ``ds01q logs`` (``read_output``) of a job on a node go through
that node's agent over Redis streams, not through commands (``dispatch.sessions``).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ds01q.clock import Clock, SystemClock
from ds01q.db import nodes
from ds01q.db.models import Job, NodeCommand
from ds01q.dispatch.messages import AGENT_FUNCTION, node_ref, queue_name, spec_to_dict, split_ref
from ds01q.dispatch.sessions import RemoteTerminal, read_remote
from ds01q.errors import ExecutorError
from ds01q.executors.base import ExitInfo, Found, Handle, LaunchSpec
from ds01q.types import Usage

log = logging.getLogger("ds01q.dispatch")
POLL_S = 0.1
WATCH_S = 0.25


class RemoteExecutor:
    def __init__(self, sessions: sessionmaker[Session], redis_url: str, *, clock: Clock | None = None,
                 command_timeout_s: float = 120.0, redrive_s: float = 5.0) -> None:
        from redis import Redis

        self.sessions = sessions
        self.redis = Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
        self.clock = clock or SystemClock()
        self.command_timeout_s = command_timeout_s
        self.redrive_s = redrive_s
        self.stop_event = threading.Event()
        self.watcher: threading.Thread | None = None
        self.sent = 0  # RQ messages sent, re-drives included (bench and tests read it)
        self.redriven = 0

    # ------------------------------------------------------------ commands
    def _enqueue(self, node: str, cmd_id: int) -> bool:
        from redis.exceptions import RedisError
        from rq import Queue

        try:
            Queue(queue_name(node), connection=self.redis).enqueue(
                AGENT_FUNCTION, cmd_id, result_ttl=0, failure_ttl=3600, job_timeout=600)
            self.sent += 1
            return True
        except RedisError as e:
            log.warning("cannot send command %s to node %s (will retry): %s", cmd_id, node, e)
            return False

    def send(self, node: str, job_id: int, kind: str, payload: dict[str, Any], *, wait: bool = True,
             timeout_s: float | None = None) -> dict[str, Any]:
        """Dispatch one command and (``wait``) return the agent's result; ExecutorError if it failed,
        the node is DOWN or it was not acknowledged within ``timeout_s``."""
        with self.sessions.begin() as session:
            n = nodes.get(session, node)
            if n is None or n.state == nodes.DOWN:
                raise ExecutorError(f"node {node} is {'DOWN' if n else 'not registered'}: cannot {kind} job {job_id}")
            cmd_id = nodes.add_command(session, node, job_id, kind, payload, self.clock.now())
        sent_at = time.monotonic() if self._enqueue(node, cmd_id) else -1e9
        if not wait:
            return {}
        deadline = time.monotonic() + (timeout_s or self.command_timeout_s)
        while time.monotonic() < deadline and not self.stop_event.is_set():
            with self.sessions() as session:
                cmd = session.get(NodeCommand, cmd_id)
                n = nodes.get(session, node)
                state, result = (cmd.state, cmd.result) if cmd else (nodes.FAILED, None)
                node_down = n is not None and n.state == nodes.DOWN
            if state != nodes.SENT:
                out = json.loads(result or "{}")
                if state == nodes.FAILED:
                    raise ExecutorError(f"node {node}: {out.get('error') or kind + ' failed'}")
                return out
            if node_down:
                raise ExecutorError(f"node {node} went DOWN before it acknowledged {kind} of job {job_id}")
            if time.monotonic() - sent_at >= self.redrive_s:  # lost (Redis restarted) or slow: send again
                self.redriven += 1
                sent_at = time.monotonic() if self._enqueue(node, cmd_id) else sent_at
            time.sleep(POLL_S)
        raise ExecutorError(f"node {node} did not acknowledge {kind} of job {job_id} within "
                            f"{timeout_s or self.command_timeout_s:g}s")

    def _node_of_job(self, job_id: int) -> str:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            node = job.node if job is not None else None
        if not node:
            raise ExecutorError(f"job {job_id} has no node to start on")
        return node

    # ------------------------------------------------------------ the Executor protocol
    def launch(self, spec: LaunchSpec) -> Handle:
        node = self._node_of_job(spec.job_id)
        files = {}
        for host, inside, _mode in spec.mounts:  # the spooled script lives on the server: ship its text
            try:
                with open(host, encoding="utf-8", errors="surrogateescape") as f:
                    files[inside] = f.read()
            except OSError as e:
                raise ExecutorError(f"cannot read {host} to send it to node {node}: {e.strerror}") from None
        out = self.send(node, spec.job_id, "start", {"spec": spec_to_dict(spec), "files": files})
        return Handle(job_id=spec.job_id, ref=node_ref(node, str(out["container"])))

    def poll(self, handle: Handle) -> ExitInfo | None:
        with self.sessions() as session:
            row = nodes.exit_of(session, handle.job_id, handle.ref)
        if row is None:
            return None
        return ExitInfo(exit_code=row.exit_code, oom_killed=row.oom_killed, finished_at=row.finished_at,
                        cpu_s=row.cpu_s, max_rss_bytes=row.max_rss_bytes, error=row.error)

    def stop(self, handle: Handle, grace_s: float) -> None:
        node, container = split_ref(handle.ref)
        self.send(node, handle.job_id, "stop", {"container": container, "grace_s": grace_s},
                  timeout_s=grace_s + self.command_timeout_s)

    def signal(self, handle: Handle, sig: int, batch_only: bool = True) -> None:
        node, container = split_ref(handle.ref)
        self.send(node, handle.job_id, "signal", {"container": container, "signal": int(sig),
                                                  "batch_only": bool(batch_only)})

    def exec(self, handle: Handle, argv: list[str], user: str) -> dict[str, Any]:
        """Run ``argv`` in the job's container as ``user``; returns exit code and output (bounded)."""
        node, container = split_ref(handle.ref)
        return self.send(node, handle.job_id, "exec", {"container": container, "argv": list(argv), "user": user})

    # ------------------------------------------------------------ sessions (dispatch.sessions)
    def open_terminal(self, handle: Handle, cmd: list[str], user: str, env: dict[str, str],
                      workdir: str) -> RemoteTerminal:
        """A TTY exec in the job's container on its node, relayed by the node's agent."""
        node, container = split_ref(handle.ref)
        self._check_up(node, f"open a shell in job {handle.job_id}")
        return RemoteTerminal.open(self.redis, node, handle.job_id, {
            "container": container, "cmd": list(cmd), "user": user, "env": dict(env), "workdir": workdir})

    def read_output(self, job: Job, offset: int, limit: int, error: bool = False) -> bytes:
        """``ds01q logs`` of a job: its node's agent reads the output (or ``--error``) file as the job's user."""
        if not job.node:  # it never ran: no output yet
            return b""
        self._check_up(job.node, f"read job {job.id}'s output")
        return read_remote(self.redis, job.node, job.id, offset, limit, error)

    def _check_up(self, node: str, what: str) -> None:
        with self.sessions() as session:
            n = nodes.get(session, node)
            if n is None or n.state == nodes.DOWN:
                raise ExecutorError(f"node {node} is {'DOWN' if n else 'not registered'}: cannot {what}")

    def remove(self, handle: Handle) -> None:
        node, container = split_ref(handle.ref)
        try:
            self.send(node, handle.job_id, "remove", {"container": container}, wait=False)
        except ExecutorError as e:  # a DOWN node: its agent removes the container when it comes back
            log.info("remove of job %s: %s", handle.job_id, e)

    def sample(self, handle: Handle) -> Usage | None:
        with self.sessions() as session:
            row = nodes.sample_of(session, handle.job_id, handle.ref)
        if row is None:
            return None
        return Usage(cpu_s=row.cpu_s, mem_bytes=row.mem_bytes, max_rss_bytes=row.max_rss_bytes)

    # The server's container sweep (controller.reconcile) skips this executor: each agent
    # reconciles its own node by label (it stops containers whose job moved on), and a node that
    # stops answering goes DOWN (controller.nodes), which ends its jobs NODE_FAIL. Judging remote
    # containers from heartbeats that may lag a launch would fail jobs that run.
    reconciles_itself = True

    def containers(self) -> list[Found]:
        """Reachability only (the sweep is skipped, see ``reconciles_itself``)."""
        return []

    def running(self) -> dict[int, Handle]:
        out: dict[int, Handle] = {}
        with self.sessions() as session:
            for n in nodes.all_nodes(session):
                if n.state != nodes.DOWN:
                    for job_id, container in nodes.running_of(n).items():
                        out[job_id] = Handle(job_id=job_id, ref=node_ref(n.name, container))
        return out

    def watch(self, on_exit: Callable[[int], None], on_lost: Callable[[str], None] | None = None) -> None:  # each agent watches its own engine
        with self.sessions() as session:
            last = max((r.id for r in nodes.exits_after(session, 0)[-1:]), default=0)

        def loop() -> None:
            nonlocal last
            while not self.stop_event.wait(WATCH_S):
                try:
                    with self.sessions() as session:
                        rows = [(r.id, r.job_id) for r in nodes.exits_after(session, last)]
                except Exception as e:  # the database may be restarting; try again
                    log.warning("exit watcher: %s", e)
                    continue
                for row_id, job_id in rows:
                    last = row_id
                    on_exit(job_id)

        self.watcher = threading.Thread(target=loop, name="ds01q-remote-exits", daemon=True)
        self.watcher.start()

    def close(self) -> None:
        self.stop_event.set()
        if self.watcher is not None:
            self.watcher.join(timeout=5)
        self.redis.close()
