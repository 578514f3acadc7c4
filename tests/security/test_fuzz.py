"""A protocol fuzzer (hypothesis) against the running daemon, as an unprivileged user: whatever
arrives, the answer is one JSON line with a one-line error (never a traceback, never silence), the
daemon lives, and another user is still served within a second."""
from __future__ import annotations

import json
import socket
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ds01q.daemon.server import OPS
from tests.security.conftest import assert_served
from tests.security.helpers import as_user
from tests.support import Daemon

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                    st.text(max_size=40))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)
ARG_KEYS = ["id", "ids", "user", "offset", "hold", "cpus", "mem", "output", "image", "env", "args", "script",
            "workdir", "states", "since", "limit", "boost", "gpus", "mig", "time", "interactive", "all_users"]
requests = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(sorted(OPS)), values)},
    optional={"args": st.one_of(st.dictionaries(st.sampled_from(ARG_KEYS), values, max_size=6), values)},
)
raw_lines = st.one_of(requests.map(lambda r: json.dumps(r).encode()),
                      st.binary(max_size=200).filter(lambda b: b"\n" not in b))


def _send_all(path: str, lines: list[bytes]) -> list[Any]:
    out = []
    for line in lines:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(path)
        s.sendall(line + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        out.append(buf.decode("utf-8", "replace"))
    return out


def test_protocol_fuzz(sec_daemon: Daemon) -> None:
    batches: list[list[bytes]] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(raw_lines, min_size=1, max_size=5))
    def collect(lines: list[bytes]) -> None:
        batches.append(lines)

    collect()
    lines = [line for batch in batches for line in batch]
    t0 = time.monotonic()
    answers = as_user("ds01q-stu1", lambda: _send_all(sec_daemon.socket, lines))
    assert len(answers) == len(lines)
    for line, ans in zip(lines, answers):
        assert ans.endswith("\n"), (line[:200], ans)
        obj = json.loads(ans)
        assert isinstance(obj.get("ok"), bool), (line[:200], obj)
        if not obj["ok"]:
            msg = obj["error"]["message"]
            assert "\n" not in msg and "internal error" not in msg and len(msg) < 1000, (line[:200], msg)
    assert sec_daemon.proc is not None and sec_daemon.proc.poll() is None
    assert_served(sec_daemon)
    assert time.monotonic() - t0 < 120
