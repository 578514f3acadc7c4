"""``ds01q agent --node NAME``: one GPU node of a multi-node cluster (``dispatch.kind: rq``).

The agent is an RQ worker (``SimpleWorker``: commands run one at a time, in this process,
with this process's executor) on the queue ``ds01q:node:NAME``. At start it registers the
node's inventory (``inventory.sync`` for this node only). Next to the worker, every
``dispatch.heartbeat``, one thread writes the heartbeat (``pulse``: one cheap write, never
behind a slow command) with the containers last seen running, and another does the upkeep
(``beat``):

- lists its live containers;
- stops and removes every container of this agent whose job has moved on (ended, requeued
  elsewhere, or never meant for this node): after a crash or a DOWN period, nothing runs twice;
- reports the exits of its jobs (``node_exits``, one row per job and container) and their
  usage (``node_samples``).

Shells and ``logs`` of its jobs are sessions over Redis streams, served by one more thread
(``daemon.agent_sessions``).

A command is acknowledged in the database (``nodes.finish_command``); one already
acknowledged is skipped, so a re-driven message is executed once.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ds01q.clock import Clock, SystemClock
from ds01q.config import Config, load
from ds01q.controller.inventory import read_inventory, reconcile
from ds01q.controller.launch import spool_script
from ds01q.daemon.agent_sessions import SessionServer
from ds01q.db import nodes, store
from ds01q.db.engine import make_engine, make_sessionmaker
from ds01q.db.models import Job, NodeCommand
from ds01q.dispatch.messages import COMMAND_KINDS, check_node_name, node_ref, queue_name, spec_from_dict, split_ref
from ds01q.errors import ConfigError, Ds01qError, ExecutorError
from ds01q.executors.base import Executor, Handle, one_line
from ds01q.types import JobState

log = logging.getLogger("ds01q.agent")
EXEC_OUTPUT_LIMIT = 64 * 1024
_AGENT: Agent | None = None


def run_command(cmd_id: int) -> str:
    """What the RQ worker runs for each message: execute command ``cmd_id`` of ``node_commands``."""
    if _AGENT is None:
        raise RuntimeError("run_command runs only inside `ds01q agent`")
    return _AGENT.execute(int(cmd_id))


class Agent:
    def __init__(self, cfg: Config, node: str, sessions: sessionmaker[Session], executor: Executor,
                 clock: Clock | None = None) -> None:
        self.cfg = replace(cfg, node=check_node_name(node))
        self.node = node
        self.sessions = sessions
        self.executor = executor
        self.clock = clock or SystemClock()
        self.lock = threading.Lock()  # commands and the stray sweep never overlap
        self.stop_event = threading.Event()
        self.flagged: set[int] = set()
        self.last_sample = -1e18
        self.last_running: dict[int, str] = {}

    # ------------------------------------------------------------ commands
    def execute(self, cmd_id: int) -> str:
        with self.sessions() as session:
            cmd = session.get(NodeCommand, cmd_id)
            if cmd is None or cmd.node != self.node or cmd.state != nodes.SENT:
                return "skipped"  # unknown, another node's, or already acknowledged (a re-driven copy)
            kind, job_id, payload = cmd.kind, cmd.job_id, json.loads(cmd.payload or "{}")
        handler = getattr(self, f"do_{kind}", None) if kind in COMMAND_KINDS else None
        with self.lock:
            try:
                if handler is None:
                    raise ExecutorError(f"unknown command {kind!r} (allowed: {', '.join(COMMAND_KINDS)})")
                result, ok = handler(job_id, payload), True
            except (Ds01qError, OSError, KeyError, TypeError, ValueError) as e:
                result, ok = {"error": one_line(e)}, False
        with self.sessions.begin() as session:
            nodes.finish_command(session, cmd_id, ok, result, self.clock.now())
        if kind in ("stop", "signal"):
            self.report_exits()
        return "done" if ok else "failed"

    def _existing_container(self, job_id: int) -> str | None:
        """This agent's container for ``job_id``, alive or exited (a start that already happened)."""
        h = self.executor.running().get(job_id)
        if h is not None:
            return h.ref
        client, name = getattr(self.executor, "client", None), getattr(self.executor, "container_name", None)
        if client is None or name is None:
            return None
        try:
            return str(client.containers.get(name(job_id)).id)
        except Exception:  # docker.errors.NotFound, or the engine is away: launch decides
            return None

    def do_start(self, job_id: int, p: dict[str, Any]) -> dict[str, Any]:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            if job is None or job.node != self.node or job.state != JobState.STARTING.value:
                raise ExecutorError(f"job {job_id} is no longer to be started on {self.node}")
            existing = self._existing_container(job_id)
            if existing is not None:
                return {"container": existing}
            spec = spec_from_dict(p["spec"])
            files: dict[str, str] = p.get("files") or {}
            mounts = []
            for host, inside, mode in spec.mounts:
                if inside in files:  # the job script: spooled here, as the job's user
                    job.script = files[inside]
                    host = spool_script(self.cfg, job)
                mounts.append((host, inside, mode))
        h = self.executor.launch(replace(spec, mounts=mounts))
        return {"container": h.ref}

    def do_stop(self, job_id: int, p: dict[str, Any]) -> dict[str, Any]:
        self.executor.stop(Handle(job_id, str(p["container"])), float(p.get("grace_s", 10)))
        return {}

    def do_remove(self, job_id: int, p: dict[str, Any]) -> dict[str, Any]:
        self.executor.remove(Handle(job_id, str(p["container"])))
        return {}

    def do_signal(self, job_id: int, p: dict[str, Any]) -> dict[str, Any]:
        sig = int(p["signal"])
        if sig not in set(signal.valid_signals()):
            raise ExecutorError(f"signal {sig} is not a valid signal number")
        send = getattr(self.executor, "signal", None)
        if send is not None:  # --signal: the main process (B:) or every process of the job
            send(Handle(job_id, str(p["container"])), sig, bool(p.get("batch_only", True)))
            return {}
        client = getattr(self.executor, "client", None)
        if client is None:
            raise ExecutorError(f"executor {self.cfg.executor.kind} cannot signal a job")
        try:
            client.api.kill(str(p["container"]), signal=sig)
        except Exception as e:
            raise ExecutorError(f"cannot signal job {job_id}: {one_line(e)}") from None
        return {}

    def do_exec(self, job_id: int, p: dict[str, Any]) -> dict[str, Any]:
        argv, user = p["argv"], str(p["user"])
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ExecutorError("exec needs a non-empty list of strings")
        client = getattr(self.executor, "client", None)
        if client is None:
            raise ExecutorError(f"executor {self.cfg.executor.kind} cannot exec in a job")
        try:
            ex = client.api.exec_create(str(p["container"]), argv, user=user, stdout=True, stderr=True)
            out = client.api.exec_start(ex["Id"])[:EXEC_OUTPUT_LIMIT]
            code = client.api.exec_inspect(ex["Id"]).get("ExitCode")
        except Exception as e:
            raise ExecutorError(f"cannot exec in job {job_id}: {one_line(e)}") from None
        return {"exit_code": code, "output": out.decode(errors="replace")}

    # ------------------------------------------------------------ heartbeat, strays, exits, samples
    def on_exit(self, job_id: int) -> None:
        with self.lock:
            self.flagged.add(job_id)
        self.report_exits()

    def mine(self, session: Session) -> list[Job]:
        prefix = self.node + "/"
        return [j for j in store.jobs_in(session, store.HOLDING)
                if j.node == self.node and j.container and j.container.startswith(prefix)]

    def report_exits(self) -> int:
        """Record the exit of every job of this node whose container has ended. Returns how many were new."""
        with self.sessions() as session:
            rows = [(j.id, j.container) for j in self.mine(session)]
        new = 0
        for job_id, ref in rows:
            try:
                info = self.executor.poll(Handle(job_id, split_ref(ref or "")[1]))
            except Ds01qError as e:
                log.warning("poll of job %s failed: %s", job_id, e)
                continue
            if info is None:
                continue
            with self.sessions.begin() as session:
                new += nodes.record_exit(session, node=self.node, job_id=job_id, ref=ref or "",
                                         exit_code=info.exit_code, oom=info.oom_killed, finished_at=info.finished_at,
                                         cpu_s=info.cpu_s, max_rss_bytes=info.max_rss_bytes, error=info.error,
                                         now=self.clock.now())
        return new

    def register(self) -> None:
        now = self.clock.now()
        records = read_inventory(self.cfg)
        with self.sessions.begin() as session:
            res = reconcile(session, records, now, self.node)
            nodes.heartbeat(session, self.node, now, {})
        if res.added or res.removed:
            log.info("inventory of %s: added %s removed %s", self.node, res.added, res.removed)

    def pulse(self) -> None:
        """The heartbeat itself: one cheap write, never behind a command or the engine."""
        with self.sessions.begin() as session:
            nodes.heartbeat(session, self.node, self.clock.now(), dict(self.last_running))

    def beat(self) -> None:
        """Upkeep: what runs here, strays stopped, exits and samples reported."""
        with self.lock:
            alive = self.executor.running()
            self.last_running = {j: h.ref for j, h in alive.items()}
            now = self.clock.now()
            with self.sessions.begin() as session:
                strays = [h for j, h in alive.items() if not self._wanted(session.get(Job, j), h.ref)]
        for h in strays:
            log.warning("job %s moved on: stopping its container %s here", h.job_id, h.ref[:12])
            try:
                self.executor.stop(h, self.cfg.executor.stop_grace_s)
                self.executor.remove(h)
            except Ds01qError as e:
                log.warning("stop of stray job %s failed: %s", h.job_id, e)
        self.report_exits()
        if now - self.last_sample >= self.cfg.sample_interval_s:
            self.last_sample = now
            self.sample(alive)

    def _wanted(self, job: Job | None, container: str) -> bool:
        if job is None or job.node != self.node or not JobState(job.state).holds_slices:
            return False
        return job.container in (None, node_ref(self.node, container))

    def sample(self, alive: dict[int, Handle]) -> None:
        readings = []
        for job_id, h in alive.items():
            try:
                u = self.executor.sample(h)
            except Ds01qError:
                continue
            if u is not None:
                readings.append((job_id, node_ref(self.node, h.ref), u))
        if readings:
            with self.sessions.begin() as session:
                for job_id, ref, u in readings:
                    nodes.put_sample(session, job_id, ref, u.cpu_s, u.mem_bytes, u.max_rss_bytes, self.clock.now())

    def every_heartbeat(self, fn: Any) -> None:
        while not self.stop_event.wait(self.cfg.dispatch.heartbeat_s):
            try:
                fn()
            except Exception:  # the database or the engine may be restarting: the next beat retries
                log.exception("%s of %s failed", fn.__name__, self.node)


def make_agent(config_path: str | None, node: str) -> Agent:
    from ds01q.daemon.build import make_executor

    cfg = load(config_path)
    if cfg.dispatch.kind != "rq" or not cfg.dispatch.redis:
        raise ConfigError("dispatch.kind: the agent needs `dispatch: {kind: rq, redis: redis://…}` in its config")
    queue_name(node)  # checks the name
    sessions = make_sessionmaker(make_engine(cfg.database))
    executor, _driver = make_executor(replace(cfg, node=node))
    return Agent(cfg, node, sessions, executor)


def serve(agent: Agent, make_worker: Any, log_level: str, retry_on: type[BaseException]) -> None:
    """Run RQ workers until the agent is asked to stop.

    RQ's ``work()`` returns, without raising, when it meets an error it does not handle (a Redis
    restart in the middle of a dequeue is one); only a stop request ends the agent. Commands not
    acknowledged while Redis was away are re-driven by the server."""
    while not agent.stop_event.is_set():
        try:
            make_worker().work(with_scheduler=False, logging_level=log_level.upper())
        except retry_on as e:
            log.warning("Redis unavailable (%s); retrying in 1s", one_line(e))
        if not agent.stop_event.is_set():
            log.warning("agent %s: the RQ worker stopped without a stop request; starting a new one", agent.node)
            agent.stop_event.wait(1.0)


def run(config_path: str | None, node: str, log_level: str = "INFO") -> None:
    """The agent's main loop: register, beat, and serve the node's RQ queue until SIGTERM."""
    global _AGENT
    from redis import Redis
    from redis.exceptions import RedisError
    from rq import Queue, SimpleWorker

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    agent = make_agent(config_path, node)
    _AGENT = agent
    os.makedirs(agent.cfg.executor.state_dir, exist_ok=True)
    agent.register()
    agent.executor.watch(agent.on_exit)
    agent.beat()
    agent.pulse()
    for fn in (agent.pulse, agent.beat):  # the heartbeat never waits behind upkeep or a command
        threading.Thread(target=agent.every_heartbeat, args=(fn,), name=f"ds01q-{fn.__name__}", daemon=True).start()
    # no socket timeout: the worker blocks on the queue; a Redis restart breaks the connection at once
    redis = Redis.from_url(agent.cfg.dispatch.redis or "", socket_connect_timeout=2, socket_keepalive=True)
    log.info("agent %s: serving %s", node, queue_name(node))
    # shells and logs of this node's jobs (dispatch.sessions), never behind a command
    shells = SessionServer(node, agent.sessions, agent.executor,
                           Redis.from_url(agent.cfg.dispatch.redis or "", socket_connect_timeout=2, socket_timeout=10,
                                          socket_keepalive=True))
    threading.Thread(target=shells.serve, args=(agent.stop_event,), name="ds01q-sessions", daemon=True).start()

    class AgentWorker(SimpleWorker):
        def request_stop(self, signum: Any, frame: Any) -> None:  # SIGTERM/SIGINT: this agent stops for good
            agent.stop_event.set()
            super().request_stop(signum, frame)

    def worker() -> Any:
        return AgentWorker([Queue(queue_name(node), connection=redis)], connection=redis,
                           name=f"ds01q-agent-{node}-{os.getpid()}-{int(agent.clock.now() * 1000)}")

    try:
        serve(agent, worker, log_level, RedisError)
    finally:
        agent.stop_event.set()
        agent.executor.close()
