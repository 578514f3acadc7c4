"""``--mail-type``/``--mail-user`` and the ``notify`` hook (FakeExecutor, fake clock, SQLite and PostgreSQL),
with a real script as the hook, run as an unprivileged account: which events call it, with what argv, env and
stdin; off by default; a hook that hangs is killed at its timeout; never root."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ds01q.config import ConfigError, from_dict
from ds01q.errors import RequestError
from ds01q.services import jobs
from tests.controller.test_controller import ROOT, SLICES, Harness, config_data, db_url, h  # noqa: F401
from tests.support import ensure_user

CPU = {"gpus": 0}
HOOK_USER = "ds01q-notify"
HOOK = """#!/bin/sh
{ printf '%s|' "$(id -u)" "$DS01Q_MAIL_TYPE" "$DS01Q_JOB_ID" "$DS01Q_JOB_NAME" "$DS01Q_JOB_USER" \\
    "$DS01Q_JOB_STATE" "$DS01Q_MAIL_USER" "$1" "$2" "$3"; printf '\\n'; cat; printf '\\n'; } >> "$(dirname "$0")/log/calls"
"""


@pytest.fixture
def hook_dir() -> Iterator[Path]:
    """A directory the hook's account can reach (pytest's tmp_path is root's alone)."""
    pw = ensure_user(HOOK_USER)
    d = Path(tempfile.mkdtemp(prefix="ds01q-notify-", dir="/tmp"))
    d.chmod(0o755)
    (d / "log").mkdir()
    os.chown(d / "log", pw.pw_uid, pw.pw_gid)
    hook = d / "hook"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    yield d
    shutil.rmtree(d)


def use_hook(h: Harness, command: str, **extra: Any) -> None:
    data = config_data(h.tmp_path, SLICES)
    data["notify"] = {"command": command, "user": HOOK_USER, **extra}
    h.config_path.write_text(yaml.safe_dump(data))
    h.settings.reload()
    h.tick()  # the notifier's first look starts after the events already there


def calls(d: Path) -> list[tuple[list[str], dict[str, Any]]]:
    path = d / "log" / "calls"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [(lines[i].split("|")[:-1], json.loads(lines[i + 1])) for i in range(0, len(lines), 2)]


def test_the_hook_runs_for_the_types_asked_as_its_own_account(h: Harness, hook_dir: Path) -> None:
    use_hook(h, str(hook_dir / "hook"))
    job_id = h.submit(name="train run", mail_type=["BEGIN", "END"], mail_user="alice@uni.example", **CPU)
    quiet = h.submit(name="quiet", **CPU)  # no --mail-type: never notified
    h.tick(2)
    h.ex.finish(job_id, exit_code=0)
    h.ex.finish(quiet, exit_code=0)
    h.tick(2)
    uid = str(pwd.getpwnam(HOOK_USER).pw_uid)
    got = calls(hook_dir)
    assert [c[0][:7] for c in got] == [
        [uid, "BEGIN", str(job_id), "train run", "root", "RUNNING", "alice@uni.example"],
        [uid, "END", str(job_id), "train run", "root", "COMPLETED", "alice@uni.example"]]
    argv = got[1][0][7:]
    assert argv[0] == "-s" and argv[2] == "alice@uni.example"
    assert argv[1].startswith(f"ds01q Job_id={job_id} Name=train run Ended, Run time ") and "COMPLETED" in argv[1]
    stdin = dict(got[1][1])
    assert isinstance(stdin.pop("reason"), str)
    assert stdin == {"job_id": job_id, "name": "train run", "user": "root", "state": "COMPLETED",
                     "mail_user": "alice@uni.example", "mail_type": "END", "exit_code": 0,
                     "array_job_id": None, "array_task_id": None}


def test_all_means_begin_end_fail_and_requeue(h: Harness, hook_dir: Path) -> None:
    use_hook(h, str(hook_dir / "hook"))
    job_id = h.submit(mail_type="ALL", **CPU)  # no --mail-user: the job's user
    h.tick(2)
    jobs.requeue(h.ctx, ROOT, {"ids": [job_id]})
    h.tick(3)
    h.ex.finish(job_id, exit_code=3)
    h.tick(2)
    kinds = [(c[0][1], c[0][5], c[0][6]) for c in calls(hook_dir)]
    assert kinds == [("BEGIN", "RUNNING", "root"), ("REQUEUE", "PENDING", "root"), ("BEGIN", "RUNNING", "root"),
                     ("END", "FAILED", "root"), ("FAIL", "FAILED", "root")]


def test_time_limit_percentages_once_per_run(h: Harness, hook_dir: Path) -> None:
    use_hook(h, str(hook_dir / "hook"))
    job_id = h.submit(time="100s", mail_type="TIME_LIMIT_50,TIME_LIMIT_90", **CPU)
    h.tick()
    h.clock.advance(50)
    h.tick(3)
    h.clock.advance(40)
    h.tick(3)
    assert [c[0][1] for c in calls(hook_dir)] == ["TIME_LIMIT_50", "TIME_LIMIT_90"]
    assert h.job(job_id).state == "RUNNING"


def test_off_by_default_and_a_hanging_hook_is_killed(h: Harness, hook_dir: Path) -> None:
    job_id = h.submit(mail_type="BEGIN", **CPU)
    h.tick(2)
    assert h.settings.current.notify.command is None and calls(hook_dir) == []
    hang = hook_dir / "hang"
    hang.write_text('#!/bin/sh\nsleep 600 &\nsleep 600\n')
    hang.chmod(0o755)
    use_hook(h, str(hang), timeout="1s")
    second = h.submit(mail_type="BEGIN", **CPU)
    h.tick(2)  # returns: the hook was killed after 1 s (with its child: the whole session)
    assert h.job(second).state == "RUNNING" and h.job(job_id).state == "RUNNING"
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_hang(p, hang)]


def _is_hang(pid: str, hang: Path) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return str(hang).encode() in f.read()
    except OSError:
        return False


def test_config_and_mail_user_checks() -> None:
    base = config_data(Path("/tmp"), SLICES)
    with pytest.raises(ConfigError, match="never runs as root"):
        from_dict({**base, "notify": {"command": "/usr/bin/mail", "user": "root"}})
    with pytest.raises(ConfigError, match="absolute path"):
        from_dict({**base, "notify": {"command": "mail -s x"}})
    assert from_dict(base).notify.command is None


def test_a_mail_user_that_could_pass_as_an_option_is_refused(h: Harness) -> None:
    with pytest.raises(RequestError, match="not starting with '-'"):
        h.submit(mail_type="END", mail_user="-Ssendmail=/tmp/x", **CPU)
