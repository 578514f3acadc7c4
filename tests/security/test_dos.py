"""Finding 6 and 14: one user cannot take the socket from everyone else. Per-user connection cap,
a deadline for each request, bounded lines, deep JSON refused with a one-line reason."""
from __future__ import annotations

import json
import socket
import time

from tests.security.conftest import assert_served
from tests.security.helpers import as_user, request
from tests.support import Daemon

PING = json.dumps({"op": "ping", "args": {}}).encode() + b"\n"


def test_idle_connections_are_capped_per_user_and_dropped(make_sec_daemon) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = make_sec_daemon(security={"max_connections_per_user": 8, "read_timeout": "2s"})

    def flood() -> dict[str, object]:
        held = []
        for _ in range(200):
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.socket)
            held.append(s)
        time.sleep(0.5)
        extra = request(d.socket, PING, timeout=10)
        time.sleep(3.0)  # past the read deadline: the daemon has hung up on every idle one
        closed = 0
        for s in held:
            s.settimeout(5)
            try:  # an accepted one is hung up on; a refused one gets the limit error first
                while s.recv(4096):
                    pass
                closed += 1
            except OSError:
                pass
            s.close()
        return {"extra": extra, "closed": closed}

    import threading
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.update(as_user("ds01q-stu1", flood)))
    t.start()
    time.sleep(1.5)  # while stu1 holds every connection it may
    assert_served(d, "ds01q-stu2")
    t.join(60)
    extra = result["extra"]
    assert isinstance(extra, dict) and extra["error"]["code"] == "busy", extra
    assert "max_connections_per_user" in extra["error"]["message"]
    assert result["closed"] == 200, result
    assert_served(d, "ds01q-stu1")


def test_slow_request_is_dropped_at_the_deadline(make_sec_daemon) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = make_sec_daemon(security={"read_timeout": "2s"})

    def trickle() -> float:
        s = socket.socket(socket.AF_UNIX)
        s.connect(d.socket)
        t0 = time.monotonic()
        try:
            for b in b'{"op": "ping", "args": {}}':
                s.send(bytes([b]))
                time.sleep(0.3)
        except OSError:
            pass
        s.settimeout(5)
        try:
            while s.recv(1024):
                pass
        except OSError:
            pass
        return time.monotonic() - t0

    took = as_user("ds01q-stu1", trickle)
    assert took < 5.0, took
    assert_served(d)


def test_oversized_line_and_deep_json_get_one_line_errors(sec_daemon: Daemon) -> None:
    def attacks() -> list[object]:
        big = request(sec_daemon.socket, b"x" * (5 * 1024 * 1024))
        deep = request(sec_daemon.socket, b'{"op": "ping", "args": ' + b"[" * 200000 + b"]" * 200000 + b"}\n")
        deep_dict = request(sec_daemon.socket, b'{"op":"submit","args":{"env":' + b'{"a":' * 5000 + b"1"
                            + b"}" * 5000 + b"}}\n")
        not_obj = request(sec_daemon.socket, b"[1,2]\n")
        garbage = request(sec_daemon.socket, b"\xff\xfe{\n")
        return [big, deep, deep_dict, not_obj, garbage]

    answers = as_user("ds01q-stu1", attacks)
    words = ["larger than", "nested deeper", "nested deeper", "not a JSON object", "malformed"]
    for ans, word in zip(answers, words):
        assert isinstance(ans, dict) and not ans["ok"], ans
        msg = ans["error"]["message"]
        assert word in msg and "\n" not in msg and len(msg) < 300, msg
    assert_served(sec_daemon)


def test_waits_count_against_the_connection_cap_and_bad_ones_are_one_line(make_sec_daemon) -> None:  # type: ignore[no-untyped-def]
    """``wait`` holds its connection until the jobs end or its timeout: a user's waits are capped like any
    other connection, other users are served meanwhile, and a bad wait is one line."""
    d: Daemon = make_sec_daemon(security={"max_connections_per_user": 4})
    path = d.script("ds01q-stu1", "w.sh", "echo hi\n")
    r = d.cli("ds01q-stu1", "submit", "--parsable", "--hold", str(path))
    assert r.rc == 0, r
    job = int(r.out)

    def wait_line(**args: object) -> bytes:
        return json.dumps({"op": "wait", "args": args}).encode() + b"\n"

    def bad() -> list[object]:
        return [request(d.socket, wait_line(ids=list(range(1, 1002)))),
                request(d.socket, wait_line(ids=[job], timeout=3600)),
                request(d.socket, wait_line(ids=[job + 1000], timeout=1))]

    answers = as_user("ds01q-stu1", bad)
    assert [a["error"]["message"] for a in answers] == [  # type: ignore[index]
        "job ids must be 1 to 1000 positive whole numbers", "timeout: seconds from 0 to 20",
        f"job {job + 1000} not found"]

    def hold_waits() -> dict[str, object]:
        held = []
        for _ in range(4):
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.socket)
            s.sendall(wait_line(ids=[job], timeout=20))
            held.append(s)
        time.sleep(0.5)
        t0 = time.monotonic()
        fifth = request(d.socket, wait_line(ids=[job], timeout=0.5), timeout=10)
        took = time.monotonic() - t0
        time.sleep(2.0)  # the other user is asked meanwhile
        for s in held:
            s.close()
        return {"fifth": fifth, "took": took}

    import threading
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.update(as_user("ds01q-stu1", hold_waits)))
    t.start()
    time.sleep(1.0)  # while stu1's waits hold every connection it may
    assert_served(d, "ds01q-stu2")
    short = as_user("ds01q-stu2", lambda: request(d.socket, wait_line(ids=[job], timeout=0.3)))
    t.join(60)
    fifth = result["fifth"]
    assert isinstance(fifth, dict) and fifth["error"]["code"] == "busy", fifth
    assert isinstance(result["took"], float) and result["took"] < 5.0, result
    # the waited-on job is HELD: a wait that ends at its timeout says so
    assert short == {"ok": True, "result": {"states": {str(job): "HELD"}, "done": False}}, short
