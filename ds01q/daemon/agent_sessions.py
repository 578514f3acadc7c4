"""The agent's end of sessions (``ds01q.dispatch.sessions``): shells and ``logs`` of its jobs.

One thread takes session requests from ``ds01q:node:NAME:sessions``; each session runs in a
thread of its own (at most ``MAX_SESSIONS`` at once).

- ``tty``: the request must match the job as the database has it (on this node, RUNNING, this
  container, its working directory) and run as the job's ``uid:gid``, never uid 0. The exec is
  the same TTY exec as the server's own relay (``relay.terminal.LocalTerminal`` on this node's
  engine); its output goes to the ``out`` stream, keystrokes and resizes come from ``in``; it
  ends with the exit code. When the server leaves (``c``, or its liveness key expires) the
  exec's connection is closed here.
- ``read``: the job's output file is read *as the job's user* (a forked child drops to the
  job's uid/gid, then reads with the checks of the local ``logs``: the working directory walked
  without following symlinks, the file opened ``O_NOFOLLOW|O_NONBLOCK`` from the held directory
  and read only if it is a regular file owned by the user).
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from types import SimpleNamespace
from typing import Any

from ds01q.daemon.relay.terminal import LocalTerminal
from ds01q.db.models import Job
from ds01q.dispatch import sessions as ss
from ds01q.dispatch.messages import node_ref
from ds01q.errors import Ds01qError, ExecutorError, RequestError
from ds01q.executors.base import Handle, one_line
from ds01q.services.logfile import read_output
from ds01q.types import JobState

log = logging.getLogger("ds01q.agent.sessions")
MAX_SESSIONS = 64
MAX_READ = 1024 * 1024
CHUNK = 64 * 1024
MAX_ROWS_COLS = 4096
SID = re.compile(r"^[0-9a-f]{32}$")


def read_as_user(job_id: int, workdir: str, output_path: str | None, uid: int, gid: int, offset: int,
                 limit: int) -> bytes:
    """Up to ``limit`` bytes of the output from ``offset``, read by a child that is the job's user."""
    target = SimpleNamespace(id=job_id, workdir=workdir, output_path=output_path, uid=uid)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the user, read, write b"D"+data or b"E"+reason, exit
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                out = b"D" + read_output(target, offset, limit)  # type: ignore[arg-type]
            except Ds01qError as e:
                out = b"E" + str(e).encode()
            except OSError as e:
                out = b"E" + f"job {job_id}'s output is not read: {e.strerror}".encode()
            view = memoryview(out)
            while view:
                view = view[os.write(w, view):]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read(limit + 4096)
    os.waitpid(pid, 0)
    if data[:1] == b"E":
        raise RequestError(data[1:].decode(errors="replace"))
    if data[:1] != b"D":
        raise ExecutorError(f"reading job {job_id}'s output failed on this node")
    return data[1:]


class SessionServer:
    def __init__(self, node: str, db: Any, executor: Any, redis: Any) -> None:
        self.node = node
        self.db = db
        self.executor = executor
        self.redis = redis
        self.lock = threading.Lock()
        self.active = 0

    def serve(self, stop: threading.Event) -> None:
        from redis.exceptions import RedisError

        while not stop.is_set():
            try:
                item = self.redis.blpop([ss.requests_key(self.node)], timeout=2)
                if item is not None:
                    self.take(item[1])
            except RedisError as e:
                log.warning("session requests: Redis unavailable (%s); retrying", one_line(e))
                stop.wait(1.0)

    def take(self, raw: bytes) -> None:
        try:
            req = json.loads(raw)
            sid, kind, job_id = req["sid"], req["kind"], req["job"]
            if not isinstance(sid, str) or not SID.match(sid) or kind not in ss.KINDS or type(job_id) is not int:
                raise ValueError("malformed")
        except (ValueError, KeyError, TypeError):
            log.warning("dropped a malformed session request")
            return
        if not self.redis.exists(ss.server_key(sid)):
            return  # the server gave up waiting for it
        with self.lock:
            if self.active >= MAX_SESSIONS:
                ss.add(self.redis, ss.out_key(sid), {"e": f"node {self.node} has {MAX_SESSIONS} sessions open"})
                return
            self.active += 1
        threading.Thread(target=self.run, args=(sid, kind, job_id, req), name=f"ds01q-session-{job_id}",
                         daemon=True).start()

    def run(self, sid: str, kind: str, job_id: int, req: dict[str, Any]) -> None:
        try:
            if kind == "read":
                self.read(sid, job_id, req)
            else:
                self.tty(sid, job_id, req)
        except Exception as e:  # Ds01qError, a bad field, the engine or Redis away: one line back
            if not isinstance(e, (Ds01qError, KeyError, TypeError, ValueError)):
                log.exception("session %s of job %s", sid[:12], job_id)
            try:
                ss.add(self.redis, ss.out_key(sid), {"e": f"node {self.node}: {one_line(e)}"})
            except Exception:
                pass
        finally:
            with self.lock:
                self.active -= 1

    def _job(self, job_id: int) -> Job:
        with self.db() as session:
            job = session.get(Job, job_id)
            if job is None or job.node != self.node:
                raise ExecutorError(f"job {job_id} is not on node {self.node}")
            session.expunge(job)
        return job

    # ------------------------------------------------------------ logs
    def read(self, sid: str, job_id: int, req: dict[str, Any]) -> None:
        offset, limit = req["offset"], req["limit"]
        if type(offset) is not int or type(limit) is not int or offset < 0 or not 0 < limit <= MAX_READ:
            raise ValueError(f"offset {offset!r} / limit {limit!r} out of range (limit 1..{MAX_READ})")
        if type(req.get("error", False)) is not bool:
            raise ValueError("error must be true or false")
        job = self._job(job_id)
        path = (job.error_path or job.output_path) if req.get("error") else job.output_path
        data = read_as_user(job.id, job.workdir, path, job.uid, job.gid, offset, limit)
        log.debug("logs of job %s: %d bytes from %d read as uid %s", job_id, len(data), offset, job.uid)
        for i in range(0, len(data), CHUNK):
            ss.add(self.redis, ss.out_key(sid), {"d": data[i:i + CHUNK]})
        ss.add(self.redis, ss.out_key(sid), {"x": "{}"})

    # ------------------------------------------------------------ shells
    def _check_tty(self, job: Job, req: dict[str, Any]) -> tuple[str, list[str], str, dict[str, str]]:
        container, cmd, user, env = req["container"], req["cmd"], req["user"], req["env"]
        if job.state != JobState.RUNNING.value or job.container != node_ref(self.node, str(container)):
            raise ExecutorError(f"job {job.id} is not running in that container on {self.node}")
        if job.uid == 0 or user != f"{job.uid}:{job.gid}":
            raise ExecutorError(f"a shell in job {job.id} runs as the job's user only (uid:gid {job.uid}:{job.gid})")
        if req["workdir"] != job.workdir:
            raise ExecutorError(f"a shell in job {job.id} starts in the job's working directory only")
        if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
            raise ExecutorError("the shell's command must be a non-empty list of strings")
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ExecutorError("the shell's environment must map strings to strings")
        return str(container), cmd, user, env

    def tty(self, sid: str, job_id: int, req: dict[str, Any]) -> None:
        from redis.exceptions import RedisError

        job = self._job(job_id)
        container, cmd, user, env = self._check_tty(job, req)
        sock, exec_id = self.executor.exec_tty(Handle(job_id, container), cmd, user, env, job.workdir)
        term = LocalTerminal(self.executor, sock, exec_id)
        log.info("job %s: shell %s opened as %s (exec %s)", job_id, sid[:12], user, exec_id[:12])
        self.redis.set(ss.agent_key(sid), "1", ex=ss.ALIVE_S)
        ss.add(self.redis, ss.out_key(sid), {"o": "1"})
        pump = threading.Thread(target=self._pump, args=(sid, term), name=f"ds01q-shell-{job_id}", daemon=True)
        pump.start()
        last, why = "0", "ended"
        try:
            while pump.is_alive():
                self.redis.set(ss.agent_key(sid), "1", ex=ss.ALIVE_S)
                if not self.redis.exists(ss.server_key(sid)):
                    why = "the server left"
                    break
                closed = False
                for entry_id, fields in ss.read_entries(self.redis, ss.in_key(sid), last, ss.BLOCK_MS):
                    last = entry_id
                    if b"d" in fields:
                        try:
                            term.write(fields[b"d"])
                        except OSError:
                            pass  # the exec has ended; the pump reports it
                    if b"r" in fields:
                        self._resize(term, fields[b"r"])
                    if b"c" in fields:
                        closed = True
                if closed:
                    why = "closed by the server"
                    break
        except RedisError as e:
            why = f"Redis: {one_line(e)}"
        finally:
            if pump.is_alive():
                try:
                    sock.shutdown(2)  # the exec's connection: its output ends, the pump reports the end
                except OSError:
                    pass
                pump.join(timeout=10)
            term.close()
            self.redis.delete(ss.agent_key(sid), ss.in_key(sid))
        log.info("job %s: shell %s %s", job_id, sid[:12], why)

    def _resize(self, term: LocalTerminal, raw: bytes) -> None:
        try:
            rows, cols = (int(v) for v in raw.split())
            term.resize(min(max(rows, 1), MAX_ROWS_COLS), min(max(cols, 1), MAX_ROWS_COLS))
        except (ValueError, Ds01qError) as e:
            log.debug("shell resize %r: %s", raw, e)

    def _pump(self, sid: str, term: LocalTerminal) -> None:
        """The exec's output to the ``out`` stream, then its exit code."""
        try:
            while True:
                data = term.read()
                if not data:
                    break
                ss.add(self.redis, ss.out_key(sid), {"d": data})
            ss.add(self.redis, ss.out_key(sid), {"x": json.dumps({"code": term.wait()})})
        except Exception as e:  # Redis away: the server sees the agent key expire
            log.warning("shell %s: %s", sid[:12], one_line(e))
