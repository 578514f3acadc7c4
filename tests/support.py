"""Test support: real Unix users, a real daemon process, and the CLI run as a given user.

The CLI runs in a forked child that drops to the user's uid/gid before it
connects, so the daemon learns the identity from SO_PEERCRED as in production.
"""
from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NoReturn

import pytest
import yaml

# Loaded before fork: after dropping to a test user, the interpreter's stdlib under /root is unreadable.
import ds01q.cli.admin  # noqa: F401,E402
import ds01q.cli.importcmd  # noqa: F401,E402
import ds01q.cli.main  # noqa: F401,E402
import ds01q.cli.report  # noqa: F401,E402
import ds01q.cli.shell  # noqa: F401,E402
import ds01q.cli.simulate  # noqa: F401,E402

REPO = Path(__file__).resolve().parents[1]
TEST_USERS = {"ds01q-stu1": "student", "ds01q-stu2": "student", "ds01q-res1": "researcher", "ds01q-adm1": "admin"}

INVENTORY = [
    {"uuid": "GPU-00000000-0000-0000-0000-000000000001", "name": "NVIDIA A100-PCIE-40GB",
     "mig": [{"uuid": "MIG-00000000-0000-0000-0000-000000000011", "profile": "2g.10gb"},
             {"uuid": "MIG-00000000-0000-0000-0000-000000000012", "profile": "2g.10gb"},
             {"uuid": "MIG-00000000-0000-0000-0000-000000000013", "profile": "2g.10gb"}]},
    {"uuid": "GPU-00000000-0000-0000-0000-000000000002", "name": "NVIDIA A100-PCIE-40GB"},
]


def unless_root(reason: str) -> NoReturn:
    """A test that needs what root can always do here (mount a tmpfs, write cgroups): skipped in a run
    without root, and a failure as root, as CI runs the suite, so CI never skips it."""
    if os.geteuid() == 0:
        pytest.fail(f"as root: {reason}")
    pytest.skip(reason)


def ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return pwd.getpwnam(name)


def base_config(root: Path, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "database": f"sqlite:///{root}/ds01q.db",
        "server": {"socket": str(root / "ds01q.sock"), "tick": "1s"},
        "executor": {"kind": "docker", "default_image": "ds01q/busybox:test", "gpu_runtime": "none",
                     "state_dir": str(root / "state"), "stop_grace": "1s",
                     "allowed_roots": [str(root), "/tmp"], "instance": root.name.replace("_", "-")},
        "inventory": {"source": "static", "gpus": INVENTORY},
        "default_group": "student",
        "groups": {
            "student": {"priority": 10, "max_gpus": 1.0, "max_running_jobs": 3, "max_runtime": "24h",
                        "idle_timeout": "30m"},
            "researcher": {"priority": 20, "max_gpus": 2.0, "max_running_jobs": 5, "max_runtime": "48h",
                           "idle_timeout": "1h"},
            "admin": {"priority": 30, "admin": True},
        },
        "users": {u: {"group": g} for u, g in TEST_USERS.items()},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Daemon:
    root: Path
    config_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "server.log"

    @property
    def socket(self) -> str:
        return str(self.root / "ds01q.sock")

    def write_config(self, cfg: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(cfg))

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("DS01Q_SOCKET", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ds01q.cli.main", "--config", str(self.config_path), "server", "--log-level",
             "DEBUG"], stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.socket)
                s.close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("daemon did not start:\n" + self.log_path.read_text()[-3000:])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def hup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    @property
    def instance(self) -> str:
        return self.root.name.replace("_", "-")

    def containers(self, job_id: int | None = None) -> list[str]:
        flt = ["--filter", f"label=ds01q.instance={self.instance}"]
        if job_id is not None:
            flt += ["--filter", f"label=ds01q.job={job_id}"]
        return subprocess.run(["docker", "ps", "-aq", *flt], capture_output=True, text=True).stdout.split()

    def containers_left(self, job_id: int | None = None, timeout: float = 15) -> list[str]:
        """The job's containers (all of them without ``job_id``) once their removal had time to run: the
        daemon removes an ended job's container after the end is committed, apart from the loop
        (``record_exit``), so a client can see the final state a moment before the container goes.
        [] when they went within ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := self.containers(job_id)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    def workdir(self, user: str) -> Path:
        pw = ensure_user(user)
        d = self.root / "home" / user
        d.mkdir(parents=True, exist_ok=True)
        os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o755)
        os.chmod(self.root / "home", 0o755)
        return d

    def script(self, user: str, name: str, body: str) -> Path:
        pw = ensure_user(user)
        p = self.workdir(user) / name
        p.write_text(body)
        os.chown(p, pw.pw_uid, pw.pw_gid)
        return p

    def cli(self, user: str, *args: str, cwd: Path | None = None) -> Result:
        return run_cli_as(user, ["--config", str(self.config_path), *args], cwd or self.workdir(user))

    def cli_json(self, user: str, *args: str) -> Any:
        r = self.cli(user, *args, "--json")
        assert r.rc == 0, r
        return r.json()

    def submit(self, user: str, body: str, *opts: str, name: str = "job.sh") -> int:
        path = self.script(user, name, body)
        r = self.cli(user, "submit", "--parsable", *opts, str(path))
        assert r.rc == 0, r
        return int(r.out.strip())

    def show(self, job_id: int, user: str = "root") -> dict[str, Any]:
        return self.cli_json(user, "show", str(job_id))  # type: ignore[no-any-return]

    def wait_state(self, job_id: int, states: set[str] | str, timeout: float = 30.0) -> dict[str, Any]:
        want = {states} if isinstance(states, str) else states
        deadline = time.monotonic() + timeout
        job = self.show(job_id)
        while job["state"] not in want and time.monotonic() < deadline:
            time.sleep(0.1)
            job = self.show(job_id)
        assert job["state"] in want, (job, self.log_tail())
        return job

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text()[-n:] if self.log_path.exists() else ""


def run_cli_as(user: str, argv: list[str], cwd: Path) -> Result:
    """Run ``ds01q argv`` in a forked child that becomes ``user`` (root stays root)."""
    out_f = tempfile.TemporaryFile()
    err_f = tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # child
        rc = 1
        try:
            if user != "root":
                pw = ensure_user(user)
                os.setgroups([])
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
            os.chdir(cwd)
            out, err = io.StringIO(), io.StringIO()
            from ds01q.cli.main import main

            with redirect_stdout(out), redirect_stderr(err):
                rc = main(argv)
            out_f.write(out.getvalue().encode())
            err_f.write(err.getvalue().encode())
        except BaseException as e:  # report anything, never return into pytest
            err_f.write(f"child crashed: {type(e).__name__}: {e}".encode())
        finally:
            out_f.flush()
            err_f.flush()
            os._exit(rc)
    _, status = os.waitpid(pid, 0)
    out_f.seek(0)
    err_f.seek(0)
    return Result(os.waitstatus_to_exitcode(status), out_f.read().decode(), err_f.read().decode())


def remove_test_containers(instance: str | None = None) -> None:
    """Remove the containers of one test daemon (by its instance label), or of every ds01q daemon."""
    if shutil.which("docker") is None:
        return
    label = f"ds01q.instance={instance}" if instance else "ds01q.job"
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True).stdout
    if ids.split():
        subprocess.run(["docker", "rm", "-f", *ids.split()], capture_output=True)
    if instance:  # staging mounts and job cgroups a killed daemon left (each makes every later container dearer)
        from ds01q.executors.docker import DockerExecutor, name_prefix

        DockerExecutor.drop_leftovers(name_prefix(instance))


class InProcessDaemon(Daemon):
    """The daemon in this test process (threads), so a test can replace ``pynvml`` in sys.modules."""

    def start(self, timeout: float = 30.0) -> None:
        import threading

        from ds01q.daemon import build as daemon
        from ds01q.daemon import server

        self.daemon = daemon.build(str(self.config_path))
        self.ctx, self.controller = self.daemon.ctx, self.daemon.controller
        self.srv, _ = server.start(self.daemon)
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()
        self.proc = None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        from ds01q.daemon import server

        srv = getattr(self, "srv", None)
        if srv is not None:
            srv.shutdown()
            server.shutdown(self.daemon, srv)
            self.srv = None


@contextmanager
def process_daemon(prefix: str) -> Iterator[Daemon]:
    """A daemon with the process executor (no Docker) in a fresh directory, root in the admin group;
    stopped and removed afterwards, and its log must hold no traceback."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    d = Daemon(root=root, config_path=root / "ds01q.yaml")
    cfg = base_config(root, executor={"kind": "process"})
    cfg["users"]["root"] = {"group": "admin"}
    d.write_config(cfg)
    d.start()
    try:
        yield d
    finally:
        d.stop()
        log = d.log_path.read_text() if d.log_path.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
    assert "Traceback" not in log, log[-3000:]
