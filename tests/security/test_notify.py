"""The notification hook, attacked through the real socket by a real user: a job name and a --mail-user built
to run commands or pass as options reach the hook only as data (no shell), the hook never runs as root or as
the job's user, and an option-like --mail-user is refused at submit."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.security.conftest import assert_served
from tests.support import Daemon, ensure_user

EVIL_TO = "$(touch${IFS}/tmp/ds01q-notify-pwned)@x;touch${IFS}/tmp/ds01q-notify-pwned"
HOOK = """#!/bin/sh
printf '%s\\n' "$(id -u)" "$1" "$2" "$3" "$DS01Q_JOB_NAME" >> "$(dirname "$0")/log/calls"
"""


def test_hostile_job_name_and_mail_user_reach_the_hook_as_data(make_sec_daemon: Callable[..., Daemon]) -> None:
    hook_user = ensure_user("ds01q-notify")
    d_hook = Path(tempfile.mkdtemp(prefix="ds01q-hook-", dir="/tmp"))
    d_hook.chmod(0o755)
    (d_hook / "log").mkdir()
    os.chown(d_hook / "log", hook_user.pw_uid, hook_user.pw_gid)
    (d_hook / "hook").write_text(HOOK)
    (d_hook / "hook").chmod(0o755)
    pwned = Path("/tmp/ds01q-notify-pwned")
    pwned.unlink(missing_ok=True)
    try:
        daemon = make_sec_daemon(notify={"command": str(d_hook / "hook"), "user": "ds01q-notify"})
        user, pw = "ds01q-stu1", ensure_user("ds01q-stu1")
        name = f"x$(touch {pwned});`touch {pwned}`"
        r = daemon.cli(user, "submit", "--parsable", "--gpus", "0", "--mail-type", "BEGIN",
                       "--mail-user", "-Ssendmail=/bin/sh", "--name", name,
                       str(daemon.script(user, "j.sh", "#!/bin/sh\necho hi\n")))
        assert r.rc != 0 and "--mail-user" in r.err and "\n" not in r.err.strip(), r
        job = daemon.submit(user, "#!/bin/sh\necho hi\n", "--gpus", "0", "--mail-type", "BEGIN",
                            "--mail-user", EVIL_TO, "--name", name)
        daemon.wait_state(job, "COMPLETED", timeout=60)
        calls = d_hook / "log" / "calls"
        deadline = time.monotonic() + 20
        while not calls.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        lines = calls.read_text().splitlines()
        assert lines[0] == str(hook_user.pw_uid) and lines[0] not in ("0", str(pw.pw_uid))
        assert lines[1] == "-s" and name in lines[2] and lines[3] == EVIL_TO
        assert lines[4] == name
        assert not pwned.exists()
        assert_served(daemon)
    finally:
        shutil.rmtree(d_hook, ignore_errors=True)
        pwned.unlink(missing_ok=True)
