"""Sessions between the server and an agent over Redis: remote shells and remote log reads.

Commands (``node_commands``) are one-shot and wait in line; a terminal is a byte stream that
must not wait behind a container start. So the server asks for a session on the list
``ds01q:node:NAME:sessions`` (one JSON request: ``sid``, ``kind``, the job, the parameters),
and an agent thread serves each session on two Redis streams:

- ``ds01q:sess:SID:out`` (agent → server): ``o`` opened, ``d`` bytes, ``x`` the end (JSON
  ``{"code": int|null}``), ``e`` an error (one line);
- ``ds01q:sess:SID:in`` (server → agent): ``d`` keystrokes, ``r`` "ROWS COLS", ``c`` close.

Bounds: at most ``MAX_WAITING`` requests wait per node; each stream keeps at most ``STREAM_MAXLEN`` entries (each at most 64 KiB) and expires
``KEY_TTL_S`` after its last write. Each side refreshes a liveness key (``:agent``,
``:server``, ``ALIVE_S``) while the session lives: the server ends a terminal whose agent has
gone, and the agent closes an exec whose server has gone (it left, or died). A request whose
server key is gone before the agent takes it (the server gave up waiting) is dropped.
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

from ds01q.dispatch.messages import check_node_name
from ds01q.errors import ExecutorError

log = logging.getLogger("ds01q.dispatch.sessions")

STREAM_MAXLEN = 256
MAX_WAITING = 256  # session requests waiting for one node's agent
KEY_TTL_S = 120
ALIVE_S = 15
BLOCK_MS = 2000
OPEN_TIMEOUT_S = 20.0
READ_TIMEOUT_S = 20.0
KINDS = ("tty", "read")


def requests_key(node: str) -> str:
    return f"ds01q:node:{check_node_name(node)}:sessions"


def out_key(sid: str) -> str:
    return f"ds01q:sess:{sid}:out"


def in_key(sid: str) -> str:
    return f"ds01q:sess:{sid}:in"


def agent_key(sid: str) -> str:
    return f"ds01q:sess:{sid}:agent"


def server_key(sid: str) -> str:
    return f"ds01q:sess:{sid}:server"


def add(redis: Any, key: str, fields: dict[str, Any]) -> None:
    """Append to a session stream, bounded in length and in time."""
    pipe = redis.pipeline()
    pipe.xadd(key, fields, maxlen=STREAM_MAXLEN, approximate=True)
    pipe.expire(key, KEY_TTL_S)
    pipe.execute()


def request(redis: Any, node: str, kind: str, payload: dict[str, Any]) -> str:
    """Ask ``node``'s agent for a session; returns its id."""
    sid = secrets.token_hex(16)
    pipe = redis.pipeline()
    pipe.set(server_key(sid), "1", ex=ALIVE_S)
    pipe.rpush(requests_key(node), json.dumps({"sid": sid, "kind": kind, **payload}))
    pipe.ltrim(requests_key(node), -MAX_WAITING, -1)  # an agent that is not taking them: the oldest go
    pipe.expire(requests_key(node), KEY_TTL_S)
    pipe.execute()
    return sid


def read_entries(redis: Any, key: str, last: str, block_ms: int) -> list[tuple[str, dict[bytes, bytes]]]:
    got = redis.xread({key: last}, count=64, block=block_ms)
    out = []
    for _key, entries in got or []:
        for entry_id, fields in entries:
            out.append((entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id), fields))
    return out


class RemoteTerminal:
    """The server's end of a shell on a node: the relay's ``Terminal`` over two Redis streams."""

    def __init__(self, redis: Any, node: str, sid: str, job_id: int) -> None:
        self.redis = redis
        self.node = node
        self.id = sid
        self.job_id = job_id
        self.last = "0"
        self.buf: list[bytes] = []
        self.ended = False
        self.code: int | None = None
        self.error: str | None = None

    @classmethod
    def open(cls, redis: Any, node: str, job_id: int, payload: dict[str, Any]) -> RemoteTerminal:
        from redis.exceptions import RedisError

        try:
            sid = request(redis, node, "tty", {"job": job_id, **payload})
        except RedisError as e:
            raise ExecutorError(f"cannot reach node {node} for a shell in job {job_id}: {e}") from None
        term = cls(redis, node, sid, job_id)
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        while time.monotonic() < deadline:
            if term.pull(BLOCK_MS) == "opened":
                return term
            if term.ended:
                term.close()
                raise ExecutorError(f"node {node}: {term.error or 'the shell ended at once'}")
        term.close()
        raise ExecutorError(f"node {node} did not open a shell in job {job_id} within {OPEN_TIMEOUT_S:g}s")

    def pull(self, block_ms: int) -> str | None:
        """Read what the agent sent; "opened" when the open entry was among it."""
        from redis.exceptions import RedisError

        opened = None
        try:
            self.redis.set(server_key(self.id), "1", ex=ALIVE_S)
            entries = read_entries(self.redis, out_key(self.id), self.last, block_ms)
            if not entries and not self.redis.exists(agent_key(self.id)) and self.last != "0":
                self._end(None, f"the agent of node {self.node} stopped answering")
        except RedisError as e:
            self._end(None, f"Redis: {e}")
            return None
        for entry_id, fields in entries:
            self.last = entry_id
            if b"o" in fields:
                opened = "opened"
            if b"d" in fields:
                self.buf.append(fields[b"d"])
            if b"x" in fields:
                self._end(json.loads(fields[b"x"]).get("code"), None)
            if b"e" in fields:
                self._end(None, fields[b"e"].decode(errors="replace"))
        return opened

    def _end(self, code: Any, error: str | None) -> None:
        if not self.ended:
            self.ended = True
            self.code = code if isinstance(code, int) and not isinstance(code, bool) else None
            self.error = error
            if error:
                log.info("shell %s of job %s: %s", self.id[:12], self.job_id, error)

    # ------------------------------------------------------------ the relay's Terminal
    def read(self) -> bytes:
        while not self.buf and not self.ended:
            self.pull(BLOCK_MS)
        if self.buf:
            return self.buf.pop(0)
        return b""

    def _send(self, fields: dict[str, Any]) -> None:
        from redis.exceptions import RedisError

        try:
            add(self.redis, in_key(self.id), fields)
        except RedisError as e:
            raise OSError(f"Redis: {e}") from None

    def write(self, data: bytes) -> None:
        if self.ended:
            raise OSError("the shell has ended")
        self._send({"d": data})

    def resize(self, rows: int, cols: int) -> None:
        try:
            self._send({"r": f"{int(rows)} {int(cols)}"})
        except OSError as e:
            raise ExecutorError(f"cannot resize terminal: {e}") from None

    def wait(self) -> int | None:
        return self.code

    def close(self) -> None:
        """Tell the agent to close its end (a no-op once it has ended there)."""
        from redis.exceptions import RedisError

        try:
            if not self.ended:
                add(self.redis, in_key(self.id), {"c": "1"})
                self.redis.delete(server_key(self.id))
            else:
                self.redis.delete(server_key(self.id), out_key(self.id))
        except RedisError:
            pass  # the agent sees the server key expire and closes all the same


def read_remote(redis: Any, node: str, job_id: int, offset: int, limit: int, error: bool = False) -> bytes:
    """Up to ``limit`` bytes of job ``job_id``'s output (``error``: its error file) from ``offset``, read by
    ``node``'s agent."""
    from redis.exceptions import RedisError

    try:
        sid = request(redis, node, "read", {"job": job_id, "offset": int(offset), "limit": int(limit),
                                                 "error": bool(error)})
        deadline = time.monotonic() + READ_TIMEOUT_S
        last, data = "0", b""
        while time.monotonic() < deadline:
            for entry_id, fields in read_entries(redis, out_key(sid), last, BLOCK_MS):
                last = entry_id
                if b"d" in fields:
                    data += fields[b"d"]
                if b"e" in fields:
                    redis.delete(out_key(sid), server_key(sid))
                    raise ExecutorError(fields[b"e"].decode(errors="replace"))
                if b"x" in fields:
                    redis.delete(out_key(sid), server_key(sid))
                    return data[:limit]
        redis.delete(server_key(sid))
    except RedisError as e:
        raise ExecutorError(f"cannot reach node {node} to read job {job_id}'s output: {e}") from None
    raise ExecutorError(f"node {node} did not send job {job_id}'s output within {READ_TIMEOUT_S:g}s")
