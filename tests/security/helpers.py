"""Run a function as another uid (a forked child that drops privileges) and get its JSON result."""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Callable

from tests.support import ensure_user


def as_uid(uid: int, gid: int, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a child running as ``uid:gid``; its (JSON) return value, or the exception text."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            out = {"ok": fn()}
        except BaseException as e:  # report anything, never return into pytest
            out = {"crash": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    res = json.loads(data or b'{"crash": "no answer"}')
    assert "crash" not in res, res
    return res["ok"]


def as_user(user: str, fn: Callable[[], Any]) -> Any:
    pw = ensure_user(user)
    return as_uid(pw.pw_uid, pw.pw_gid, fn)


def request(path: str, line: bytes, timeout: float = 10.0) -> dict[str, Any] | str:
    """Send raw bytes on a fresh connection; the daemon's first answer line (parsed) or why none came."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        for _ in range(200):  # a full listen backlog answers EAGAIN: wait for the daemon to accept
            try:
                s.connect(path)
                break
            except BlockingIOError:
                time.sleep(0.05)
        try:
            s.sendall(line)
        except BrokenPipeError:  # the daemon hung up mid-request (an oversized line): read its answer
            pass
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return "closed" if not buf else buf.decode(errors="replace")
            buf += chunk
        return json.loads(buf.split(b"\n", 1)[0])  # type: ignore[no-any-return]
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        s.close()
