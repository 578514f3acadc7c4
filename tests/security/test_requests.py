"""Findings 8, 11, 13, 14, 15: caps on CPU and memory, the queue quota under concurrent submits,
no terminal escapes shown to other users, typed request decoding with one-line reasons."""
from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from tests.security.conftest import assert_served
from tests.security.helpers import as_user, request
from tests.support import Daemon, base_config

CAPS = {"student": {**base_config(__import__("pathlib").Path("/x"))["groups"]["student"],
                    "cpus": 2, "mem": "1g", "max_cpus": 4, "max_mem": "8g", "max_queued_jobs": 5}}


def raw_submit(daemon: Daemon, user: str, **args: Any) -> Any:
    wd = str(daemon.workdir(user))
    line = json.dumps({"op": "submit", "args": {"script": "echo hi\n", "workdir": wd, "hold": True, **args}})
    return as_user(user, lambda: request(daemon.socket, line.encode() + b"\n"))


@pytest.fixture
def capped(make_sec_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_sec_daemon(groups={**base_config(__import__("pathlib").Path("/x"))["groups"], **CAPS},
                           executor={"allowed_images": ["ds01q/*"]})


BAD = [
    ({"cpus": 1e-300}, "--cpus"), ({"cpus": 5}, "from 0.01 to 4"), ({"cpus": float("inf")}, "--cpus"),
    ({"mem": "20000g"}, "from 4m to 8192m"), ({"mem": "1e-300"}, "--mem"), ({"mem": True}, "--mem"),
    ({"hold": "false"}, "hold: str"), ({"interactive": 1}, "interactive: int"), ({"requeue": "no"}, "requeue"),
    ({"output": ["x"]}, "--output"), ({"nice": "5"}, "--nice"), ({"env": {"A": 1}}, "--env"),
    ({"args": "rm -rf"}, "--args"), ({"gpus": "2"}, "--gpus"), ({"time": [5]}, "--time"),
    ({"name": {"x": 1}}, "--name"), ({"workdir": 7}, "--workdir"), ({"mig": ["2g.10gb"]}, "--mig"),
    ({"script": 5}, "--script"), ({"gpu_mem": 1.5}, "--gpu-mem"), ({"image": None, "env": [1]}, "--env"),
]


def test_bad_submit_fields_get_one_line_reasons(capped: Daemon) -> None:
    for args, words in BAD:
        ans = raw_submit(capped, "ds01q-stu1", **args)
        assert isinstance(ans, dict) and not ans["ok"], (args, ans)
        msg = ans["error"]["message"]
        assert ans["error"]["code"] != "error" and "internal error" not in msg, (args, msg)
        assert words in msg and "\n" not in msg, (args, msg)
    assert "Traceback" not in capped.log_path.read_text()


def test_caps_and_defaults_apply(capped: Daemon) -> None:
    ok = raw_submit(capped, "ds01q-stu1", cpus=4, mem="8g")
    assert ok["ok"], ok
    assert (j := capped.show(ok["result"]["id"]))["cpus"] == 4.0 and j["mem_bytes"] == 8 * 1024 ** 3
    dflt = raw_submit(capped, "ds01q-stu1")
    assert (j := capped.show(dflt["result"]["id"]))["cpus"] == 2.0 and j["mem_bytes"] == 1024 ** 3


def test_queue_quota_holds_under_40_concurrent_submits(capped: Daemon) -> None:
    wd = str(capped.workdir("ds01q-stu1"))
    line = json.dumps({"op": "submit", "args": {"script": "echo hi\n", "workdir": wd, "hold": True}}).encode()

    def burst() -> list[Any]:
        answers: list[Any] = [None] * 40

        def one(i: int) -> None:
            answers[i] = request(capped.socket, line + b"\n", timeout=60)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return answers

    answers = as_user("ds01q-stu1", burst)
    accepted = [a for a in answers if isinstance(a, dict) and a["ok"]]
    refused = [a for a in answers if isinstance(a, dict) and not a["ok"]]
    assert len(accepted) == 5 and len(refused) == 35, answers
    assert all((a["error"]["code"] == "limit" and "max_queued_jobs" in a["error"]["message"])
               or (a["error"]["code"] == "busy" and "max_connections_per_user" in a["error"]["message"])
               for a in refused), refused
    assert any("max_queued_jobs" in a["error"]["message"] for a in refused)
    assert_served(capped, "ds01q-stu2")


def test_control_characters_never_reach_another_users_terminal(capped: Daemon) -> None:
    evil = "ds01q/\x1b]0;pwned\x07\x1b[2J\u202eevil"
    ans = raw_submit(capped, "ds01q-stu1", image=evil)
    assert ans["ok"], ans
    seen = capped.cli("ds01q-stu2", "queue", "--json")
    plain = capped.cli("ds01q-stu2", "queue")
    shown = capped.cli("ds01q-stu2", "show", str(ans["result"]["id"]), "--json")
    for r in (seen, plain, shown):
        assert r.rc == 0, r
        assert not any(c in r.out for c in ("\x1b", "\x07", "\u202e")), r.out
    assert "ds01q/?]0;pwned??[2J?evil" in json.loads(seen.out)[0]["image"]
