"""Slurm's output files through the real daemon and Docker, as an unprivileged user: ``--error`` to its own
file (created as the user, refused when another user planted it), ``--open-mode`` (truncate by default,
append on request), and ``logs --err``."""
from __future__ import annotations

import os
from typing import Callable

import pytest

from tests.support import Daemon, ensure_user

pytestmark = pytest.mark.docker

USER = "ds01q-stu1"
TWO_STREAMS = """#!/bin/sh
#SBATCH --job-name=two --output=out-%j.txt --error=err-%x-%j.txt
echo to-stdout
echo to-stderr >&2
"""


def test_error_goes_to_its_own_file_owned_by_the_user(daemon: Daemon) -> None:
    job = daemon.submit(USER, TWO_STREAMS, "--gpus", "0")
    daemon.wait_state(job, "COMPLETED")
    wd = daemon.workdir(USER)
    out, err = wd / f"out-{job}.txt", wd / f"err-two-{job}.txt"
    assert out.read_text() == "to-stdout\n"
    assert err.read_text() == "to-stderr\n"
    uid = ensure_user(USER).pw_uid
    assert out.stat().st_uid == uid and err.stat().st_uid == uid
    shown = daemon.show(job)
    assert shown["error"] == str(err) and shown["output"] == str(out)
    assert not [w for w in shown.get("warnings", []) if "--error" in w]
    r = daemon.cli(USER, "logs", "--err", str(job))
    assert (r.rc, r.out) == (0, "to-stderr\n"), r
    r = daemon.cli(USER, "logs", str(job))
    assert (r.rc, r.out) == (0, "to-stdout\n"), r


def test_without_error_both_streams_share_the_output_file(daemon: Daemon) -> None:
    job = daemon.submit(USER, "#!/bin/sh\necho a\necho b >&2\n", "--gpus", "0", "--output", "both.txt")
    daemon.wait_state(job, "COMPLETED")
    assert (daemon.workdir(USER) / "both.txt").read_text() == "a\nb\n"
    r = daemon.cli(USER, "logs", "--err", str(job))  # no --error file: the output file
    assert (r.rc, r.out) == (0, "a\nb\n"), r


def test_an_error_file_planted_by_another_user_refuses_the_launch(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(executor={"launch_backoff": "0.5s"})  # the three refused launches take seconds
    wd = daemon.workdir(USER)
    planted = wd / "err.txt"
    planted.write_text("not yours\n")
    other = ensure_user("ds01q-stu2")
    os.chown(planted, other.pw_uid, other.pw_gid)
    planted.chmod(0o666)
    job = daemon.submit(USER, "#!/bin/sh\necho x >&2\n", "--gpus", "0", "--output", "o.txt", "--error", "err.txt")
    shown = daemon.wait_state(job, {"FAILED", "COMPLETED"}, timeout=90)
    assert shown["state"] == "FAILED", shown
    assert "file refused" in shown["reason"] and "err.txt" in shown["reason"], shown["reason"]
    assert planted.read_text() == "not yours\n"


def test_open_mode_truncate_by_default_append_on_request(daemon: Daemon) -> None:
    wd = daemon.workdir(USER)
    for name in ("t.txt", "a.txt"):
        (wd / name).write_text("old line\n")
        pw = ensure_user(USER)
        os.chown(wd / name, pw.pw_uid, pw.pw_gid)
    fresh = daemon.submit(USER, "#!/bin/sh\necho new\n", "--gpus", "0", "--output", "t.txt")
    kept = daemon.submit(USER, "#!/bin/sh\necho new\n", "--gpus", "0", "--output", "a.txt",
                         "--open-mode", "append")
    daemon.wait_state(fresh, "COMPLETED")
    daemon.wait_state(kept, "COMPLETED")
    assert (wd / "t.txt").read_text() == "new\n"
    assert (wd / "a.txt").read_text() == "old line\nnew\n"


TRAP = """#!/bin/sh
trap 'echo got-usr1; exit 0' USR1
echo started
sleep 60 &
wait
echo no-signal
"""


@pytest.mark.parametrize("flag", ["B:USR1@15", "USR1@15"])
def test_signal_reaches_the_script_before_its_time_limit(daemon: Daemon, flag: str) -> None:
    job = daemon.submit(USER, TRAP, "--gpus", "0", "--time", "0:20", "--signal", flag, "--output", "sig.txt")
    done = daemon.wait_state(job, {"COMPLETED", "TIMEOUT", "FAILED"}, timeout=60)
    text = (daemon.workdir(USER) / "sig.txt").read_text()
    # COMPLETED, not TIMEOUT: the trap ran before the limit and ended the script
    assert done["state"] == "COMPLETED" and "got-usr1" in text and "no-signal" not in text, (done, text)
    events = [e for e in done["events"] if "signal USR1 sent" in str(e)]
    assert len(events) == 1, done["events"]
