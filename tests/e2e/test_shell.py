"""Issue 5 acceptance: `ds01q shell` / `ds01q attach` on a real pseudo-terminal, through the real daemon
and the real Docker engine. The CLI runs in a `pty.fork()` child that becomes the test user."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import sys
import termios
import time
from pathlib import Path
from typing import Any, Callable

import pexpect
import pexpect.fdpexpect
import pytest

from ds01q.client.api import Client
from tests.support import Daemon, base_config, ensure_user

pytestmark = pytest.mark.docker
DETACH = "\x10\x11"  # Ctrl-P Ctrl-Q


class Term:
    """`ds01q ARGV` as ``user`` on a fresh pseudo-terminal, driven with pexpect."""

    def __init__(self, daemon: Daemon, user: str, *argv: str, rows: int = 24, cols: int = 160) -> None:
        pw = ensure_user(user)
        cwd = daemon.workdir(user)
        pid, fd = pty.fork()
        if pid == 0:  # child: become the user on the pty's slave side, run the CLI in-process
            rc = 99
            try:
                # /root (the interpreter's stdlib) is not readable once we are the user: import first
                import rich.console  # noqa: F401
                import rich.markup  # noqa: F401
                import rich.status  # noqa: F401

                import ds01q.cli.main  # noqa: F401

                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                signal.signal(signal.SIGINT, signal.default_int_handler)
                sys.stdin = open(0, "r", closefd=False)
                sys.stdout = open(1, "w", closefd=False, buffering=1)
                sys.stderr = open(2, "w", closefd=False, buffering=1)
                os.setgroups([])
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
                os.chdir(cwd)
                os.environ["TERM"] = "xterm"
                from ds01q.cli.main import main

                rc = main(["--config", str(daemon.config_path), *argv])
            except BaseException as e:  # report anything, never return into pytest
                os.write(2, f"child crashed: {type(e).__name__}: {e}\n".encode())
            finally:
                os._exit(rc)
        self.pid, self.fd = pid, fd
        self.p = pexpect.fdpexpect.fdspawn(fd, timeout=30, encoding="utf-8", codec_errors="replace")
        self.rc: int | None = None

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        try:
            self.p.expect(pattern, timeout=timeout)
        except (pexpect.EOF, pexpect.TIMEOUT) as e:
            raise AssertionError(f"{type(e).__name__} waiting for {pattern!r}; the terminal showed: "
                                 f"{self.p.before!r}") from None
        return self.p.match  # type: ignore[no-any-return]

    def run(self, command: str, answer: str, timeout: float = 30) -> re.Match[str]:
        """Type ``command`` and wait for ``answer`` (a regex that the echoed command itself cannot match)."""
        self.p.send(command + "\r")
        return self.expect(answer, timeout)

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))  # the kernel sends SIGWINCH

    def wait(self, timeout: float = 30) -> int:
        """The CLI's exit code, once it has exited."""
        deadline = time.monotonic() + timeout
        while self.rc is None:
            try:
                self.p.read_nonblocking(65536, timeout=0.2)
            except (pexpect.EOF, pexpect.TIMEOUT, OSError):
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.rc = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                raise AssertionError(f"the CLI did not exit; last output: {self.p.before!r}")
        return self.rc

    def close(self) -> None:
        if self.rc is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
        try:
            os.close(self.fd)
        except OSError:
            pass


@pytest.fixture
def terms() -> Any:
    opened: list[Term] = []

    def make(daemon: Daemon, user: str, *argv: str, **kw: Any) -> Term:
        t = Term(daemon, user, *argv, **kw)
        opened.append(t)
        return t

    yield make
    for t in opened:
        t.close()


def running_shell(daemon: Daemon, user: str) -> dict[str, Any]:
    """The user's interactive job once it RUNS."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        mine = [j for j in daemon.cli_json("root", "queue") if j["user"] == user and j["interactive"]]
        if mine and mine[0]["state"] == "RUNNING":
            return mine[0]
        time.sleep(0.2)
    raise AssertionError(f"no running shell for {user}: {daemon.log_tail()}")


def slice_state(daemon: Daemon, uuid: str) -> str:
    st = daemon.cli_json("root", "status")
    return {s["uuid"]: s["state"] for g in st["gpus"] for s in g["slices"]}[uuid]


def test_shell_relays_env_uid_resize_detach_attach_and_exit_code(daemon: Daemon,
                                                                  terms: Callable[..., Term]) -> None:
    t = terms(daemon, "ds01q-stu1", "shell", "--mig", "2g.10gb", rows=24, cols=100)
    m = t.expect(r"ds01q: job (\d+) on (MIG-[0-9a-f-]+) \(2g\.10gb\); time left")
    job_id, uuid = int(m.group(1)), m.group(2)
    t.expect(r"detach: Ctrl-P Ctrl-Q")
    job = daemon.show(job_id)
    assert job["state"] == "RUNNING" and job["interactive"] and job["slices"] == [uuid]
    t.run("echo CVD=$CUDA_VISIBLE_DEVICES", f"CVD={uuid}")
    uid = ensure_user("ds01q-stu1").pw_uid
    t.run("echo UID=$(id -u) JOB=$DS01Q_JOB_ID", f"UID={uid} JOB={job_id}")
    t.run("echo SIZE=$(stty size)", r"SIZE=24 100")
    t.resize(40, 132)
    deadline = time.monotonic() + 20
    while True:  # the resize travels SIGWINCH -> client -> daemon -> Docker; ask until it has arrived
        size = t.run("echo SIZE=$(stty size)", r"SIZE=(\d+ \d+)").group(1)
        if size == "40 132" or time.monotonic() > deadline:
            break
    assert size == "40 132"
    t.run("echo kept-before-detach > kept.txt; echo WROTE=$?", r"WROTE=0")
    t.p.send(DETACH)
    t.expect(rf"detached; job {job_id} keeps running")
    assert t.wait() == 0
    assert daemon.show(job_id)["state"] == "RUNNING"

    other = daemon.cli("ds01q-stu2", "attach", str(job_id))
    assert other.rc != 0 and f"only ds01q-stu1 or an admin may attach to job {job_id}" in other.err, other
    assert other.err.count("\n") <= 1

    a = terms(daemon, "ds01q-stu1", "attach", str(job_id))
    a.expect(r"resumed your detached shell")
    a.run("cat kept.txt", r"\r\nkept-before-detach")
    admin = terms(daemon, "ds01q-adm1", "attach", str(job_id))  # a second terminal at once: its own shell
    admin.expect(r"other terminal\(s\) attached")
    admin.run("echo ADMIN_SEES=$(cat kept.txt) AS=$(id -u)", rf"ADMIN_SEES=kept-before-detach AS={uid}")
    admin.run("exit 0", r"keeps running for its other shells")
    assert admin.wait() == 0
    assert daemon.show(job_id)["state"] == "RUNNING"

    a.run("exit 7", rf"job {job_id} ends and frees its slice")
    assert a.wait() == 7
    done = daemon.wait_state(job_id, {"FAILED", "COMPLETED", "CANCELLED"})
    assert (done["state"], done["exit_code"]) == ("FAILED", 7), done
    assert slice_state(daemon, uuid) == "free"
    assert daemon.containers_left(job_id) == []


def test_waiting_shell_withdraws_on_ctrl_c_and_opens_when_a_slice_frees(daemon: Daemon,
                                                                          terms: Callable[..., Term]) -> None:
    fillers = [daemon.submit("ds01q-adm1", "sleep 300\n", name=f"fill{i}.sh") for i in range(4)]
    jobs = [daemon.wait_state(j, "RUNNING") for j in fillers]
    batch = daemon.cli("ds01q-adm1", "attach", str(fillers[0]))
    assert batch.rc != 0 and "is a batch job" in batch.err, batch

    w = terms(daemon, "ds01q-stu1", "shell", "--mig", "2g.10gb")
    m = w.expect(r"job (\d+) PENDING: position 1 of 1, reason Resources")
    withdrawn = int(m.group(1))
    w.p.send("\x03")
    w.expect(rf"shell request {withdrawn} withdrawn")
    assert w.wait() == 130
    assert daemon.wait_state(withdrawn, "CANCELLED")["state"] == "CANCELLED"

    t = terms(daemon, "ds01q-stu1", "shell", "--mig", "2g.10gb")
    job_id = int(t.expect(r"job (\d+) PENDING: position 1 of 1, reason Resources").group(1))
    mig_job = next(j for j in jobs if j["slices"][0].startswith("MIG-"))
    assert daemon.cli("ds01q-adm1", "cancel", str(mig_job["id"])).rc == 0
    t.expect(rf"ds01q: job {job_id} on {mig_job['slices'][0]} \(2g\.10gb\)")  # opened by itself
    t.run("echo CVD=$CUDA_VISIBLE_DEVICES", rf"CVD={mig_job['slices'][0]}")
    t.p.send("\x04")  # Ctrl-D ends the shell with code 0
    t.expect(rf"job {job_id} ends and frees its slice")
    assert t.wait() == 0
    done = daemon.wait_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"})
    assert (done["state"], done["exit_code"]) == ("COMPLETED", 0), done
    daemon.cli("ds01q-adm1", "cancel", *[str(j) for j in fillers])


def test_idle_session_warns_then_stops_and_frees_its_slice(make_daemon: Callable[..., Daemon],
                                                           terms: Callable[..., Term]) -> None:
    groups = base_config(Path("/unused"))["groups"]  # the groups do not depend on the daemon's root
    groups["student"]["idle_timeout"] = "4s"
    daemon = make_daemon(groups=groups)
    t = terms(daemon, "ds01q-stu1", "shell", "--mig", "2g.10gb")
    m = t.expect(r"ds01q: job (\d+) on (MIG-[0-9a-f-]+)")
    job_id, uuid = int(m.group(1)), m.group(2)
    t.expect(r"idle sessions stop after 4s")
    t.run("echo ATTACHED=yes", r"ATTACHED=yes")
    time.sleep(5)  # attached longer than the idle timeout: a terminal keeps the session alive
    assert daemon.show(job_id)["state"] == "RUNNING"
    t.p.send(DETACH)
    assert t.wait() == 0

    warnings, states = set(), []
    with Client(daemon.socket) as c:  # as root: fast enough to see the warning before the stop
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = c.show(job_id)
            states.append(job["state"])
            if (job.get("reason_detail") or "").startswith("idle: stops at"):
                warnings.add(job["reason_detail"])
            if job["state"] == "CANCELLED":
                break
            time.sleep(0.05)
    assert job["state"] == "CANCELLED", (job, daemon.log_tail())
    assert job["reason"] == "idle timeout"
    assert warnings and all(re.fullmatch(r"idle: stops at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", w) for w in warnings)
    assert job["events"][-1]["state"] == "CANCELLED" and job["events"][-1]["reason"] == "idle timeout"
    assert slice_state(daemon, uuid) == "free"
    assert daemon.containers_left(job_id) == []


def test_cancel_ends_an_attached_shell(daemon: Daemon, terms: Callable[..., Term]) -> None:
    t = terms(daemon, "ds01q-stu1", "shell")
    m = t.expect(r"ds01q: job (\d+) on (\S+)")
    job_id, uuid = int(m.group(1)), m.group(2)
    t.run("echo READY", r"\r\nREADY")
    assert daemon.cli("ds01q-stu1", "cancel", str(job_id)).rc == 0
    t.expect(rf"job {job_id} was stopped: cancelled")
    assert t.wait() == 130
    assert daemon.wait_state(job_id, "CANCELLED")["state"] == "CANCELLED"
    assert slice_state(daemon, uuid) == "free"
    gone = daemon.cli("ds01q-stu1", "attach", str(job_id))
    assert gone.rc != 0 and f"job {job_id} is CANCELLED; attach works while it is RUNNING" in gone.err, gone
