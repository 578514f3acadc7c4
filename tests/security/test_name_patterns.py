"""A job name is user text that `%x` copies into file names: a name with `/` or `..` must not
carry `--output`/`--error` out of the working directory, through the CLI or a raw socket request,
and nothing is queued when it is refused."""
from __future__ import annotations

import json

import pytest

from tests.security.conftest import assert_served
from tests.security.helpers import as_user, request
from tests.support import Daemon

NAMES = ["../../../etc/cron.d/evil", "../../x", "a/../../b", "/etc/shadow"]


def queued(daemon: Daemon, user: str) -> list[object]:
    r = daemon.cli(user, "queue", "--json")
    assert r.rc == 0, r
    return list(json.loads(r.out))


@pytest.mark.parametrize("name", NAMES)
def test_a_job_name_cannot_lead_output_out_of_the_workdir_through_the_socket(sec_daemon: Daemon, name: str) -> None:
    user = "ds01q-stu1"
    wd = str(sec_daemon.workdir(user))
    for key in ("output", "error"):
        line = json.dumps({"op": "submit", "args": {"script": "echo hi\n", "workdir": wd, "hold": True,
                                                    "name": name, key: "%x.out"}})
        ans = as_user(user, lambda: request(sec_daemon.socket, line.encode() + b"\n"))
        assert isinstance(ans, dict) and not ans["ok"], (key, name, ans)
        msg = ans["error"]["message"]
        assert "\n" not in msg and ("inside the working directory" in msg or "--name" in msg), msg
    assert queued(sec_daemon, user) == []
    assert_served(sec_daemon)


def test_sbatch_job_name_with_dots_and_percent_x_is_refused_by_the_cli(sec_daemon: Daemon) -> None:
    user = "ds01q-stu1"
    path = sec_daemon.script(user, "j.sh", "#!/bin/sh\n#SBATCH --job-name=../../../tmp/pwn\n"
                                           "#SBATCH --output=%x-%j.out\necho hi\n")
    r = sec_daemon.cli(user, "submit", "--hold", str(path))
    assert r.rc != 0 and r.err.strip().count("\n") == 0 and "Traceback" not in r.err, r
    assert "inside the working directory" in r.err or "--name" in r.err or "--job-name" in r.err, r.err
    assert queued(sec_daemon, user) == []
