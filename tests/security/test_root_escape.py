"""Finding 1: `ds01q shell --env LD_PRELOAD=...` must never run the user's library as root.

The library (compiled here, loaded by the Debian image's dynamically linked /bin/sh) marks every
process it is loaded into with its effective uid and, as root, plants a setuid-root file in the
workdir. The marker for the user's own uid proves the library really was loaded; the absence of
the root marker and of any setuid file proves nothing ran as root."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Callable

from tests.e2e.test_shell import Term, terms  # noqa: F401  (the pty driver and its fixture)
from tests.security.conftest import DEBIAN_IMAGE, assert_served
from tests.support import Daemon, ensure_user

EVIL_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
__attribute__((constructor)) static void evil(void) {
    const char *d = getenv("EVIL_DIR");
    char p[1024];
    if (!d) return;
    snprintf(p, sizeof p, "%s/ran-as-%d", d, (int)geteuid());
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) close(fd);
    if (geteuid() == 0) {
        snprintf(p, sizeof p, "%s/rootshell", d);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0755);
        if (fd >= 0) { fchown(fd, 0, 0); fchmod(fd, 04755); close(fd); }
    }
}
"""


def build_evil(daemon: Daemon, user: str) -> tuple[Path, Path]:
    wd = daemon.workdir(user)
    src = daemon.root / "evil.c"
    src.write_text(EVIL_C)
    lib = wd / "evil.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    pw = ensure_user(user)
    os.chown(lib, pw.pw_uid, pw.pw_gid)
    return wd, lib


def assert_no_root(wd: Path, uid: int) -> None:
    names = sorted(p.name for p in wd.iterdir())
    assert f"ran-as-{uid}" in names, f"the library was never loaded, the test proves nothing: {names}"
    assert "ran-as-0" not in names and "rootshell" not in names, names
    for p in wd.rglob("*"):
        st = p.lstat()
        assert not (st.st_mode & (stat.S_ISUID | stat.S_ISGID)), f"setuid/setgid file {p}"
        assert st.st_uid != 0 or p.name.startswith("evil"), f"root-owned file {p} in the workdir"


def test_ld_preload_shell_exit_runs_nothing_as_root(sec_daemon: Daemon, terms: Callable[..., Term]) -> None:
    user = "ds01q-stu1"
    uid = ensure_user(user).pw_uid
    wd, lib = build_evil(sec_daemon, user)
    t = terms(sec_daemon, user, "shell", "--image", DEBIAN_IMAGE, "--env", f"LD_PRELOAD={lib}",
              "--env", f"EVIL_DIR={wd}")
    m = t.expect(r"ds01q: job (\d+) ")
    job_id = int(m.group(1))
    t.expect(r"detach: Ctrl-P Ctrl-Q")
    t.run("echo ME=$(id -u)", rf"ME={uid}")
    t.run("exit 3", rf"job {job_id} ends")
    assert t.wait() == 3
    done = sec_daemon.wait_state(job_id, {"FAILED", "COMPLETED", "CANCELLED"})
    assert (done["state"], done["exit_code"]) == ("FAILED", 3), done  # recorded by the relay, not an exec
    assert_no_root(wd, uid)
    assert_served(sec_daemon)


def test_ld_preload_batch_cancel_and_time_limit_run_nothing_as_root(sec_daemon: Daemon) -> None:
    user = "ds01q-stu2"
    uid = ensure_user(user).pw_uid
    wd, lib = build_evil(sec_daemon, user)
    env = ["--image", DEBIAN_IMAGE, "--env", f"LD_PRELOAD={lib}", "--env", f"EVIL_DIR={wd}"]
    cancelled = sec_daemon.submit(user, "#!/bin/sh\nsleep 300\n", *env, name="c.sh")
    timed = sec_daemon.submit(user, "#!/bin/sh\nsleep 300\n", *env, "--time", "3s", name="t.sh")
    sec_daemon.wait_state(cancelled, "RUNNING")
    r = sec_daemon.cli(user, "cancel", str(cancelled))
    assert r.rc == 0, r
    assert sec_daemon.wait_state(cancelled, "CANCELLED")["state"] == "CANCELLED"
    assert sec_daemon.wait_state(timed, "TIMEOUT", timeout=40)["state"] == "TIMEOUT"
    assert_no_root(wd, uid)
    assert_served(sec_daemon)


