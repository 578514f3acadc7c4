"""ProcessExecutor: jobs as plain processes, for machines without Docker.

Each job runs under a small supervisor (a Python process started from
``SUPERVISOR_CODE``, detached in its own session: process_supervisor.py) so
that it survives a daemon restart and its exit status is never lost::

    daemon --Popen--> supervisor (daemon's uid, ignores SIGTERM/SIGINT/SIGHUP)
                        |  writes <state_dir>/<job_id>.pid  {pid, start, child, child_start, cgroup}
                        '--fork--> child: setsid, join the job cgroup, no_new_privs,
                                   setgroups([]) + setgid + setuid, chdir workdir,
                                   stdout+stderr appended to output_path, exec command
                        waits for the child, SIGKILLs what is left of its process group
                        and cgroup, writes <state_dir>/<job_id>.rc  {exit_code, finished_at, cpu_s, max_rss_bytes}

``<state_dir>/<job_id>.attempt`` {attempt} is written before the supervisor starts: launching
the same (job, attempt) again while its pid file exists returns that job instead of a second.

The handshake over the supervisor's stdout makes ``launch`` fail with an
ExecutorError (and leave nothing behind) when the user, working directory or
output file is wrong. A command that cannot be executed is a started job that
exits 127, its message in the output file, as with ``sh`` and Docker.
Exit codes follow the shell: 128 + signal for a killed job. Pids are checked
against their start time (``/proc/<pid>/stat`` field 22) so a reused pid is
never signalled or mistaken for a live job.

Limits. With a writable cgroup hierarchy (root on cgroup v1, v2 or hybrid),
each job gets ``<cgroup_parent or cgroup_root>/job-<id>`` with ``memory`` (no
swap), ``cpu`` quota and ``pids.max``; usage, peak memory and OOM kills come
from it and ``oom_killed`` is reliable. Without one (not root, read-only
cgroupfs) nothing is limited, usage comes from ``/proc`` for the job's process
group and the supervisor's rusage, and ``oom_killed`` is always False;
``rlimit_as_fallback=True`` applies ``RLIMIT_AS = mem_bytes`` instead (it caps
virtual memory, which breaks CUDA programs, hence off by default).
``shm_bytes`` and ``gpu_runtime`` have no effect here; the GPU variables are
set all the same.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ds01q.errors import ExecutorError
from ds01q.executors import cgroups
from ds01q.executors.base import (
    KEEPALIVE_COMMAND,
    ExitInfo,
    Found,
    Handle,
    LaunchSpec,
    Usage,
    error_file,
    job_environment,
    notify_exit,
    one_line,
    watch_thread,
)
from ds01q.executors.process_supervisor import (
    DEFAULT_PATH,
    SUPERVISOR_CODE,
    read_handshake,
    spawn_supervisor,
)
from ds01q.executors.procfs import pgroup_usage, pid_alive, to_int

__all__ = ["SUPERVISOR_CODE", "ProcessExecutor"]

log = logging.getLogger(__name__)


class ProcessExecutor:
    """Runs jobs as supervised processes; see the module docstring."""

    def __init__(self, state_dir: str = "/var/lib/ds01q/proc", *, cgroup_root: str = "/ds01q-proc",
                 use_cgroups: bool = True, rlimit_as_fallback: bool = False,
                 python: str = sys.executable, poll_interval_s: float = 0.25) -> None:
        self.state_dir = os.path.abspath(state_dir)
        try:
            os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
        except OSError as e:
            raise ExecutorError(f"cannot create state directory {self.state_dir}: {e.strerror}") from None
        self.cgroup_root = "/" + cgroup_root.strip("/")
        self.use_cgroups = use_cgroups
        self.rlimit_as_fallback = rlimit_as_fallback
        self.python = python
        self.poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._last: dict[int, Usage] = {}
        self._reported: set[int] = set()
        self._on_exit: Callable[[int], None] | None = None
        self._watch_thread: threading.Thread | None = None
        self._closed = threading.Event()

    # ---------------------------------------------------------------- state files

    def _path(self, job_id: int, ext: str) -> str:
        return os.path.join(self.state_dir, f"{job_id}.{ext}")

    def _load(self, job_id: int, ext: str) -> dict[str, Any] | None:
        try:
            with open(self._path(job_id, ext)) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def _reap(self, job_id: int) -> None:
        with self._lock:
            proc = self._procs.get(job_id)
        if proc is not None and proc.poll() is not None:
            with self._lock:
                self._procs.pop(job_id, None)

    # ---------------------------------------------------------------- cgroups

    def _make_cgroup(self, spec: LaunchSpec) -> tuple[str | None, list[str]]:
        """Create the job's cgroup with its limits; (path, cgroup.procs files) or (None, []) if unavailable."""
        if not self.use_cgroups:
            return None, []
        parent = spec.cgroup_parent
        if parent and "/" not in parent and parent.endswith(".slice"):
            parent = cgroups.slice_path(parent)
        path = f"{(parent or self.cgroup_root).rstrip('/')}/job-{spec.job_id}"
        try:
            if not cgroups.cgroup_pids(path):
                cgroups.remove_cgroup(path, wait_s=0)  # a stale one from an earlier run
            dirs = cgroups.create_cgroup(path)
        except ExecutorError as e:
            log.warning("job %s runs without a cgroup (no limits, no OOM detection): %s", spec.job_id, e)
            return None, []
        failed = cgroups.set_cgroup_limits(path, spec.cpus, spec.mem_bytes, spec.pids_limit)
        if failed:
            log.warning("job %s: could not set cgroup limits: %s", spec.job_id, ", ".join(failed))
        # The memory hierarchy first: joining it is required, the others are best effort.
        mem = cgroups.controller_dir("memory", path)
        dirs.sort(key=lambda d: d != mem)
        return path, [os.path.join(d, "cgroup.procs") for d in dirs]

    def _supervisor_procs(self) -> list[str]:
        if not self.use_cgroups:
            return []
        try:
            dirs = cgroups.create_cgroup(f"{self.cgroup_root}/supervisors")
        except ExecutorError:
            return []
        return [os.path.join(d, "cgroup.procs") for d in dirs]

    # ---------------------------------------------------------------- launch

    def launch(self, spec: LaunchSpec) -> Handle:
        if not spec.interactive and not spec.command:
            raise ExecutorError(f"job {spec.job_id} has an empty command")
        if not os.path.isabs(spec.workdir):
            raise ExecutorError(f"working directory '{spec.workdir}' is not absolute")
        env = job_environment(spec)
        env.setdefault("PATH", DEFAULT_PATH)
        is_root = os.geteuid() == 0
        if not is_root and (spec.uid, spec.gid) != (os.geteuid(), os.getegid()):
            raise ExecutorError(f"cannot run job {spec.job_id} as uid {spec.uid}: the process executor is not root")
        output = None if spec.interactive else spec.output_path
        error = error_file(spec)
        if output:
            env["DS01Q_OUTPUT"] = output
        if error:
            env["DS01Q_ERROR"] = error
        existing = self._existing(spec)
        if existing is not None:
            return existing
        self._clear_stale(spec.job_id)
        self._write_attempt(spec.job_id, spec.attempt)
        cgroup, job_procs = self._make_cgroup(spec)
        cfg = {
            "job_id": spec.job_id, "state_dir": self.state_dir, "workdir": spec.workdir, "env": env,
            "argv": list(KEEPALIVE_COMMAND) if spec.interactive else list(spec.command),
            "uid": spec.uid, "gid": spec.gid, "setuid": is_root, "output": output,
            "error": error, "truncate": spec.truncate,
            "cgroup": cgroup, "job_procs": job_procs, "supervisor_procs": self._supervisor_procs(),
            "rlimit_as": spec.mem_bytes if (cgroup is None and self.rlimit_as_fallback) else None,
        }
        try:
            proc = spawn_supervisor(self.python, cfg, self._path(spec.job_id, "err"))
            line = read_handshake(proc)
            if not line.startswith("ok "):
                proc.wait(timeout=10)
                why = line[len("error "):] if line.startswith("error ") else self._crash_reason(spec.job_id)
                raise ExecutorError(f"cannot start job {spec.job_id}: {one_line(why)}")
        except (ExecutorError, subprocess.TimeoutExpired) as e:
            if cgroup:
                cgroups.drop_cgroup(cgroup)
            self._clear_stale(spec.job_id)
            if isinstance(e, ExecutorError):
                raise
            raise ExecutorError(f"cannot start job {spec.job_id}: the supervisor hung") from None
        with self._lock:
            self._procs[spec.job_id] = proc
            self._last.pop(spec.job_id, None)
            self._reported.discard(spec.job_id)
        return Handle(spec.job_id, str(proc.pid))

    def _existing(self, spec: LaunchSpec) -> Handle | None:
        """This (job, attempt) already launched (running or exited, not removed): its handle."""
        att, info = self._load(spec.job_id, "attempt"), self._load(spec.job_id, "pid")
        if att is None or info is None or att.get("attempt") != spec.attempt:
            return None
        log.info("job %s attempt %s already launched (pid %s): adopted", spec.job_id, spec.attempt, info.get("pid"))
        return Handle(spec.job_id, str(info.get("pid")))

    def _write_attempt(self, job_id: int, attempt: int) -> None:
        tmp = self._path(job_id, "attempt.tmp")
        try:
            with open(tmp, "w") as f:
                json.dump({"attempt": attempt}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(job_id, "attempt"))
        except OSError as e:
            raise ExecutorError(f"cannot write the state of job {job_id}: {e.strerror}") from None

    def containers(self) -> list[Found]:
        out: list[Found] = []
        for job_id in self._job_ids():
            info, rc, alive = self._status(job_id)
            if info is None:
                continue
            attempt = int((self._load(job_id, "attempt") or {}).get("attempt") or 0)
            h = Handle(job_id, str(info.get("pid")))
            if rc is None and (alive or pid_alive(info.get("child"), info.get("child_start"))):
                out.append(Found(h, attempt, None))
                continue
            exit_info = self.poll(h)
            if exit_info is not None:
                out.append(Found(h, attempt, exit_info))
        return out

    def _crash_reason(self, job_id: int) -> str:
        try:
            with open(self._path(job_id, "err"), errors="replace") as f:
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
        except OSError:
            lines = []
        return "job supervisor failed" + (f": {lines[-1]}" if lines else "")

    def _clear_stale(self, job_id: int) -> None:
        info = self._load(job_id, "pid")
        if info and self._load(job_id, "rc") is None and (
            pid_alive(info.get("pid"), info.get("start"))
            or pid_alive(info.get("child"), info.get("child_start"))
        ):
            raise ExecutorError(f"job {job_id} is already running (pid {info.get('pid')})")
        for ext in ("pid", "rc", "err", "attempt"):
            try:
                os.unlink(self._path(job_id, ext))
            except FileNotFoundError:
                pass


    # ---------------------------------------------------------------- contract

    def _status(self, job_id: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
        """(pidfile, rc file, supervisor alive)."""
        self._reap(job_id)
        info = self._load(job_id, "pid")
        alive = bool(info) and pid_alive(info.get("pid"), info.get("start"))  # type: ignore[union-attr]
        return info, self._load(job_id, "rc"), alive

    def poll(self, handle: Handle) -> ExitInfo | None:
        info, rc, alive = self._status(handle.job_id)
        if info is None and rc is None:
            return ExitInfo(None, False, None, None, None, error="no such job on this executor")
        if rc is None and alive:
            self.sample(handle)
            return None
        if rc is None:
            rc = self._load(handle.job_id, "rc")  # written just before the supervisor exited?
        cgroup: str | None = (info or {}).get("cgroup")
        usage = cgroups.read_cgroup_usage_path(cgroup) if cgroup else None
        oom = cgroup is not None and (cgroups.read_oom_kills(cgroup) or 0) > 0
        if rc is None:
            last = self._last.get(handle.job_id)
            usage = usage or last
            return ExitInfo(None, oom, None, usage.cpu_s if usage else None,
                            usage.max_rss_bytes if usage else None,
                            error="job supervisor died without recording an exit status")
        cpu = usage.cpu_s if usage else rc.get("cpu_s")
        peak = usage.max_rss_bytes if usage and usage.max_rss_bytes is not None else rc.get("max_rss_bytes")
        return ExitInfo(
            exit_code=rc.get("exit_code"), oom_killed=oom, finished_at=rc.get("finished_at"),
            cpu_s=float(cpu) if cpu is not None else None,
            max_rss_bytes=int(peak) if peak is not None else None,
        )

    def _signal(self, info: dict[str, Any], sig: int) -> None:
        child = to_int(info.get("child"))
        if pid_alive(child, info.get("child_start")):
            try:
                os.killpg(child, sig)
            except OSError:
                pass
        if info.get("cgroup"):
            cgroups.kill_cgroup(info["cgroup"], sig)

    def _wait_done(self, job_id: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            info, rc, alive = self._status(job_id)
            if rc is not None or not alive:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def signal(self, handle: Handle, signum: int, batch_only: bool = True) -> None:
        """``batch_only``: the job's main process; otherwise its process group and cgroup."""
        info, rc, alive = self._status(handle.job_id)
        if info is None or rc is not None or not alive:
            raise ExecutorError(f"job {handle.job_id} is not running")
        if not batch_only:
            self._signal(info, signum)
            return
        child = to_int(info.get("child"))
        if not pid_alive(child, info.get("child_start")):
            raise ExecutorError(f"job {handle.job_id} is not running")
        try:
            os.kill(child, signum)
        except OSError as e:
            raise ExecutorError(f"cannot signal job {handle.job_id}: {e.strerror}") from None

    def stop(self, handle: Handle, grace_s: float) -> None:
        info, rc, alive = self._status(handle.job_id)
        if info is None or rc is not None:
            return
        self.sample(handle)
        if not alive:  # no supervisor left to clean up: kill whatever remains of the job
            self._signal(info, signal.SIGKILL)
            return
        self._signal(info, signal.SIGTERM)
        if self._wait_done(handle.job_id, grace_s):
            return
        self._signal(info, signal.SIGKILL)
        if not self._wait_done(handle.job_id, 10.0):
            raise ExecutorError(f"job {handle.job_id} did not stop after SIGKILL")

    def remove(self, handle: Handle) -> None:
        info, rc, alive = self._status(handle.job_id)
        if info is not None and rc is None:
            self._signal(info, signal.SIGKILL)
            self._wait_done(handle.job_id, 5.0)
        with self._lock:
            proc = self._procs.pop(handle.job_id, None)
            self._last.pop(handle.job_id, None)
            self._reported.discard(handle.job_id)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if info and info.get("cgroup"):
            cgroups.drop_cgroup(info["cgroup"])
        for ext in ("pid", "rc", "err", "attempt"):
            try:
                os.unlink(self._path(handle.job_id, ext))
            except FileNotFoundError:
                pass

    def sample(self, handle: Handle) -> Usage | None:
        info = self._load(handle.job_id, "pid")
        if info is None or self._load(handle.job_id, "rc") is not None:
            return None
        cgroup = info.get("cgroup")
        if cgroup:
            usage = cgroups.read_cgroup_usage_path(cgroup) if cgroups.cgroup_pids(cgroup) else None
        else:
            usage = pgroup_usage(to_int(info.get("child")))
        if usage is not None:
            with self._lock:
                self._last[handle.job_id] = usage
        return usage

    def _job_ids(self) -> list[int]:
        try:
            names = os.listdir(self.state_dir)
        except OSError:
            return []
        return sorted(int(n[:-4]) for n in names if n.endswith(".pid") and n[:-4].isdigit())

    def running(self) -> dict[int, Handle]:
        out: dict[int, Handle] = {}
        for job_id in self._job_ids():
            info, rc, alive = self._status(job_id)
            if info is None or rc is not None:
                continue
            child_alive = pid_alive(info.get("child"), info.get("child_start"))
            if alive or child_alive:
                out[job_id] = Handle(job_id, str(info.get("pid")))
        return out

    # ---------------------------------------------------------------- watching

    def watch(self, on_exit: Callable[[int], None], on_lost: Callable[[str], None] | None = None) -> None:
        self._on_exit = on_exit  # no engine to lose: ``on_lost`` is never called
        self._watch_thread = watch_thread(self._watch_thread, self._closed, self._watch_loop, "ds01q-process-watch")

    def _watch_loop(self) -> None:
        while not self._closed.is_set():
            try:
                for job_id in self._job_ids():
                    if job_id in self._reported:
                        continue
                    info, rc, alive = self._status(job_id)
                    if info is not None and (rc is not None or not alive):
                        with self._lock:
                            self._reported.add(job_id)
                        notify_exit(self._on_exit, job_id)
            except Exception:
                log.exception("process watcher failed")
            self._closed.wait(self.poll_interval_s)

    def close(self) -> None:
        self._closed.set()
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=5)
            self._watch_thread = None
