"""DockerExecutor: one container per job through the Docker Engine API (docker-py).

Container ``<name_prefix>-<job_id>``, created then started, running as
``uid:gid`` with ``no-new-privileges``, all capabilities dropped, never
privileged, and ``init`` (docker-init) as PID 1 so the job gets SIGTERM.
The working directory is bind-mounted at the same path. A batch job's
stdout+stderr are appended to ``spec.output_path`` by a ``/bin/sh`` wrapper
inside the container (so the image needs ``/bin/sh``); the executor creates
that file as the user beforehand, so it is the user's and outlives the container.

Accounting. With the cgroupfs driver (and ``job_cgroups``) each container is
put in its own cgroup ``<cgroup_parent>/<name>``, which runc does not delete
when the container exits: its ``cpuacct``/``memory`` totals, peak and OOM
count are read after exit, then ``remove()`` deletes it. With the systemd
driver the cgroup is the ``docker-<id>.scope`` that vanishes at exit, so
``poll`` reports the last sample taken while it ran (``sample``/``poll``
refresh it).
"""
from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import docker
import docker.errors
from docker.types import DeviceRequest, Mount

from ds01q.errors import ExecutorError
from ds01q.executors import cgroups
from ds01q.executors.base import (
    BATCH_WRAPPER,
    KEEPALIVE_COMMAND,
    ExitInfo,
    Handle,
    LaunchSpec,
    Usage,
    create_output_file,
    job_environment,
    one_line,
)

__all__ = ["DockerExecutor", "parse_docker_time"]

log = logging.getLogger(__name__)

LABEL_JOB = "ds01q.job"
LABEL_USER = "ds01q.user"
LABEL_GROUP = "ds01q.group"
LABEL_INSTANCE = "ds01q.instance"
LABEL_CGROUP = "ds01q.cgroup"
ALIVE = ("running", "paused", "restarting")
DEFAULT_CGROUPFS_PARENT = "/ds01q.slice"


def parse_docker_time(value: str | None) -> float | None:
    """Docker's RFC 3339 time with nanoseconds -> epoch seconds; None for the zero time."""
    if not value or value.startswith("0001-01-01"):
        return None
    s = value.strip().replace("Z", "+00:00")
    date, _, rest = s.partition(".")
    if rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, tz = rest[:digits], rest[digits:]
        s = f"{date}.{(frac + '000000')[:6]}{tz}"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _api_error(e: Exception) -> str:
    explanation = getattr(e, "explanation", None)
    return one_line(explanation if explanation else e)


class DockerExecutor:
    """Runs jobs as Docker containers. See the module docstring for the details."""

    def __init__(self, client: Any = None, cgroup_driver: str | None = None, *,
                 name_prefix: str = "ds01q", instance: str | None = None,
                 job_cgroups: bool = True, init: bool = True) -> None:
        try:
            self.client = client if client is not None else docker.from_env()
            info = self.client.info() if cgroup_driver is None else {}
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot reach the Docker engine: {_api_error(e)}") from None
        self._driver = cgroup_driver or str(info.get("CgroupDriver") or "cgroupfs")
        if self._driver not in ("cgroupfs", "systemd"):
            raise ExecutorError(f"unsupported cgroup driver '{self._driver}' (allowed: cgroupfs, systemd)")
        self.name_prefix = name_prefix
        self.instance = instance
        self.job_cgroups = job_cgroups and self._driver == "cgroupfs"
        self.init = init
        self._lock = threading.Lock()
        self._last: dict[int, Usage] = {}  # last sample per job, returned at exit when the cgroup is gone
        self._known: dict[int, tuple[str, int, str | None]] = {}  # job -> (container id, State.Pid, job cgroup)
        self._execs: dict[str, Any] = {}  # exec id -> socket object kept alive while in use
        self._watch_thread: threading.Thread | None = None
        self._watch_stream: Any = None
        self._on_exit: Callable[[int], None] | None = None
        self._closed = threading.Event()

    # ---------------------------------------------------------------- naming

    def cgroup_driver(self) -> str:
        """The engine's cgroup driver (``cgroupfs`` or ``systemd``), or the one given to the constructor."""
        return self._driver

    def _ref(self, handle: Handle) -> str:
        return handle.ref or self.container_name(handle.job_id)

    def container_name(self, job_id: int) -> str:
        return f"{self.name_prefix}-{job_id}"

    def _label_filters(self) -> list[str]:
        return [LABEL_JOB] + ([f"{LABEL_INSTANCE}={self.instance}"] if self.instance else [])

    def _labels(self, spec: LaunchSpec, cgroup: str | None) -> dict[str, str]:
        labels = {str(k): str(v) for k, v in spec.labels.items()}
        labels.update({
            LABEL_JOB: str(spec.job_id),
            LABEL_USER: spec.user,
            LABEL_GROUP: spec.group,
            "ds01.user": spec.user,
            "ds01.gpu.uuids": ",".join(spec.slices),
        })
        if self.instance:
            labels[LABEL_INSTANCE] = self.instance
        if cgroup:
            labels[LABEL_CGROUP] = cgroup
        return labels

    def _cgroups(self, spec: LaunchSpec) -> tuple[str | None, str | None]:
        """(cgroup_parent for Docker, the job's own persistent cgroup path or None)."""
        parent = cgroups.normalize_parent(self._driver, spec.cgroup_parent) if spec.cgroup_parent else None
        if not self.job_cgroups:
            return parent, None
        job_cg = f"{(parent or DEFAULT_CGROUPFS_PARENT).rstrip('/')}/{self.container_name(spec.job_id)}"
        return job_cg, job_cg

    # ---------------------------------------------------------------- launch

    def _command(self, spec: LaunchSpec, env: dict[str, str]) -> list[str]:
        if spec.interactive:
            return list(KEEPALIVE_COMMAND)
        if not spec.command:
            raise ExecutorError(f"job {spec.job_id} has an empty command")
        if spec.output_path:
            env["DS01Q_OUTPUT"] = spec.output_path
            return [*BATCH_WRAPPER, *spec.command]
        return list(spec.command)

    def _mounts(self, spec: LaunchSpec) -> list[Mount]:
        """Workdir (rw, same path), the output file if it lies outside it, and the daemon's extra mounts.

        ``Mounts`` (unlike ``Binds``) fail on a missing source instead of creating it as root.
        """
        mounts = [Mount(spec.workdir, spec.workdir, type="bind", read_only=False)]
        out = spec.output_path
        if out and not spec.interactive:
            workdir = os.path.abspath(spec.workdir)
            if os.path.commonpath([os.path.abspath(out), workdir]) != workdir:
                mounts.append(Mount(out, out, type="bind", read_only=False))
        for host, target, mode in spec.mounts:
            if mode not in ("ro", "rw"):
                raise ExecutorError(f"mount {host}: mode '{mode}' is not allowed (allowed: ro, rw)")
            mounts.append(Mount(target, host, type="bind", read_only=mode == "ro"))
        return mounts

    def _create_kwargs(self, spec: LaunchSpec) -> dict[str, Any]:
        if not os.path.isabs(spec.workdir) or not os.path.isdir(spec.workdir):
            raise ExecutorError(f"working directory {spec.workdir} does not exist")
        env = job_environment(spec)
        command = self._command(spec, env)
        parent, job_cg = self._cgroups(spec)
        kwargs: dict[str, Any] = dict(
            image=spec.image, command=command, name=self.container_name(spec.job_id),
            user=f"{spec.uid}:{spec.gid}", working_dir=spec.workdir, environment=env,
            labels=self._labels(spec, job_cg), mounts=self._mounts(spec), detach=True,
            security_opt=["no-new-privileges"], cap_drop=["ALL"], privileged=False,
            init=self.init, stdin_open=False, tty=False,
        )
        if parent:
            kwargs["cgroup_parent"] = parent
        if spec.cpus is not None:
            kwargs["nano_cpus"] = int(spec.cpus * 1e9)
        if spec.mem_bytes is not None:
            kwargs["mem_limit"] = int(spec.mem_bytes)
            kwargs["memswap_limit"] = int(spec.mem_bytes)
        if spec.pids_limit is not None:
            kwargs["pids_limit"] = int(spec.pids_limit)
        if spec.shm_bytes is not None:
            kwargs["shm_size"] = int(spec.shm_bytes)
        if spec.gpu_runtime == "nvidia" and spec.slices:
            kwargs["device_requests"] = [DeviceRequest(device_ids=list(spec.slices), capabilities=[["gpu"]])]
        return kwargs

    def launch(self, spec: LaunchSpec) -> Handle:
        kwargs = self._create_kwargs(spec)
        job_cg = kwargs["labels"].get(LABEL_CGROUP)
        if spec.output_path and not spec.interactive:
            create_output_file(spec.output_path, spec.uid, spec.gid)
        self._clear_stale(spec.job_id, job_cg)
        try:
            container = self.client.containers.create(**kwargs)
        except docker.errors.ImageNotFound:
            raise ExecutorError(f"image '{spec.image}' is not on this node") from None
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot create container for job {spec.job_id}: {_api_error(e)}") from None
        try:
            container.start()
            container.reload()
        except docker.errors.DockerException as e:
            why = _api_error(e)
            try:
                self._force_remove(container.id)
            except ExecutorError as cleanup:
                log.warning("job %s: %s", spec.job_id, cleanup)
            if job_cg:
                self._remove_cgroup(job_cg)
            raise ExecutorError(f"cannot start container for job {spec.job_id}: {why}") from None
        with self._lock:
            self._last.pop(spec.job_id, None)
            self._known[spec.job_id] = (container.id, int(container.attrs.get("State", {}).get("Pid") or 0), job_cg)
        return Handle(spec.job_id, container.id)

    def _clear_stale(self, job_id: int, job_cg: str | None) -> None:
        """Remove a finished container left with this job's name (e.g. after a crash) and its cgroup."""
        try:
            old = self.client.containers.get(self.container_name(job_id))
        except docker.errors.NotFound:
            old = None
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot reach the Docker engine: {_api_error(e)}") from None
        if old is not None:
            status = old.attrs.get("State", {}).get("Status")
            if status in ALIVE or old.labels.get(LABEL_JOB) != str(job_id):
                raise ExecutorError(f"container {old.name} already exists ({status}); job {job_id} not started")
            self._force_remove(old.id)
        if job_cg and not cgroups.cgroup_pids(job_cg):
            self._remove_cgroup(job_cg)

    def _force_remove(self, ref: str) -> None:
        try:
            self.client.api.remove_container(ref, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: removal already in progress
                raise ExecutorError(f"cannot remove container {ref[:12]}: {_api_error(e)}") from None

    @staticmethod
    def _remove_cgroup(path: str) -> None:
        try:
            cgroups.remove_cgroup(path)
        except ExecutorError as e:
            log.warning("cgroup %s not removed: %s", path, e)

    # ---------------------------------------------------------------- inspect

    def _inspect(self, handle: Handle) -> dict[str, Any] | None:
        try:
            attrs: dict[str, Any] = self.client.api.inspect_container(self._ref(handle))
            return attrs
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot inspect container of job {handle.job_id}: {_api_error(e)}") from None

    def _measure(self, job_id: int, attrs: dict[str, Any]) -> Usage | None:
        """Read the job's cgroup now and remember the result."""
        labels = attrs.get("Config", {}).get("Labels") or {}
        state = attrs.get("State", {})
        usage = None
        if labels.get(LABEL_CGROUP):
            usage = cgroups.read_cgroup_usage_path(labels[LABEL_CGROUP])
        elif state.get("Running") and state.get("Pid"):
            pid = int(state["Pid"])
            if attrs["Id"] in str(cgroups.pid_cgroups(pid)):
                usage = cgroups.read_cgroup_usage(pid)
            if usage is None:
                usage = self._stats_usage(attrs["Id"])
        if usage is not None:
            with self._lock:
                self._last[job_id] = usage
        return usage

    def _stats_usage(self, ref: str) -> Usage | None:
        try:
            st = self.client.api.stats(ref, stream=False, one_shot=True)
        except (docker.errors.DockerException, OSError):
            return None
        cpu_ns = st.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage")
        mem = st.get("memory_stats", {})
        if cpu_ns is None and not mem:
            return None
        stats = mem.get("stats", {})
        cache = stats.get("total_inactive_file", stats.get("inactive_file", 0))
        return Usage(cpu_s=(cpu_ns or 0) / 1e9, mem_bytes=max(int(mem.get("usage", 0)) - int(cache), 0),
                     max_rss_bytes=mem.get("max_usage"))

    # ---------------------------------------------------------------- contract

    def poll(self, handle: Handle) -> ExitInfo | None:
        attrs = self._inspect(handle)
        if attrs is None:
            last = self._last.get(handle.job_id)
            return ExitInfo(None, False, None, last.cpu_s if last else None,
                            last.max_rss_bytes if last else None, error="container not found")
        state = attrs.get("State", {})
        status = state.get("Status")
        if status in ALIVE:
            self._measure(handle.job_id, attrs)
            return None
        if status == "created":
            return ExitInfo(None, False, None, None, None, error="container was created but never started")
        usage = self._measure(handle.job_id, attrs) or self._last.get(handle.job_id)
        exit_code = state.get("ExitCode")
        oom = bool(state.get("OOMKilled"))
        job_cg = (attrs.get("Config", {}).get("Labels") or {}).get(LABEL_CGROUP)
        if not oom and exit_code == 137 and job_cg:
            oom = (cgroups.read_oom_kills(job_cg) or 0) > 0
        return ExitInfo(
            exit_code=int(exit_code) if exit_code is not None else None,
            oom_killed=oom,
            finished_at=parse_docker_time(state.get("FinishedAt")),
            cpu_s=usage.cpu_s if usage else None,
            max_rss_bytes=usage.max_rss_bytes if usage else None,
            error=one_line(state.get("Error") or ""),
        )

    def stop(self, handle: Handle, grace_s: float) -> None:
        attrs = self._inspect(handle)
        if attrs is None or attrs.get("State", {}).get("Status") not in ALIVE:
            return
        self._measure(handle.job_id, attrs)
        try:
            self.client.api.stop(self._ref(handle), timeout=max(0, math.ceil(grace_s)))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code not in (304, 409):
                raise ExecutorError(f"cannot stop job {handle.job_id}: {_api_error(e)}") from None
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot stop job {handle.job_id}: {_api_error(e)}") from None

    def remove(self, handle: Handle) -> None:
        attrs = self._inspect(handle)
        job_cg = (attrs.get("Config", {}).get("Labels") or {}).get(LABEL_CGROUP) if attrs else None
        self._force_remove(attrs["Id"] if attrs else self._ref(handle))
        if job_cg:
            self._remove_cgroup(job_cg)
        with self._lock:
            self._last.pop(handle.job_id, None)
            self._known.pop(handle.job_id, None)

    def sample(self, handle: Handle) -> Usage | None:
        with self._lock:
            known = self._known.get(handle.job_id)
        if known is None or (handle.ref and known[0] != handle.ref):
            attrs = self._inspect(handle)
            if attrs is None or attrs.get("State", {}).get("Status") not in ALIVE:
                return None
            labels = attrs.get("Config", {}).get("Labels") or {}
            known = (attrs["Id"], int(attrs["State"].get("Pid") or 0), labels.get(LABEL_CGROUP))
            with self._lock:
                self._known[handle.job_id] = known
        ref, pid, job_cg = known
        if job_cg:
            # The job's own cgroup outlives the container: empty means it has exited.
            usage = cgroups.read_cgroup_usage_path(job_cg) if cgroups.cgroup_pids(job_cg) else None
        elif pid and ref in str(cgroups.pid_cgroups(pid)):
            usage = cgroups.read_cgroup_usage(pid) or self._stats_usage(ref)
        else:
            usage = None
        if usage is not None:
            with self._lock:
                self._last[handle.job_id] = usage
        return usage

    def running(self) -> dict[int, Handle]:
        try:
            containers = self.client.containers.list(all=True, sparse=True,
                                                     filters={"label": self._label_filters()})
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot list containers: {_api_error(e)}") from None
        out: dict[int, Handle] = {}
        for c in containers:
            labels = c.attrs.get("Labels") or {}
            if c.attrs.get("State") not in ALIVE:
                continue
            try:
                job_id = int(labels.get(LABEL_JOB, ""))
            except ValueError:
                continue
            out[job_id] = Handle(job_id, c.id)
        return out

    # ---------------------------------------------------------------- events

    def watch(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit
        if self._watch_thread is not None and self._watch_thread.is_alive():
            return
        self._closed.clear()
        self._watch_thread = threading.Thread(target=self._watch_loop, name="ds01q-docker-events", daemon=True)
        self._watch_thread.start()

    def _watch_loop(self) -> None:
        since: int | None = None
        while not self._closed.is_set():
            try:
                filters = {"type": "container", "event": ["die"], "label": self._label_filters()}
                stream = self.client.api.events(since=since, filters=filters, decode=True)
                self._watch_stream = stream
                if self._closed.is_set():
                    stream.close()
                    break
                for event in stream:
                    since = int(event.get("time") or time.time())
                    self._dispatch(event)
            except Exception as e:  # the engine restarted, the socket broke, ...
                if not self._closed.is_set():
                    log.warning("docker event stream failed, reconnecting: %s", one_line(e))
            self._watch_stream = None
            self._closed.wait(1.0)

    def _dispatch(self, event: dict[str, Any]) -> None:
        attrs = (event.get("Actor") or {}).get("Attributes") or {}
        try:
            job_id = int(attrs.get(LABEL_JOB, ""))
        except ValueError:
            return
        callback = self._on_exit
        if callback is None:
            return
        try:
            callback(job_id)
        except Exception:
            log.exception("on_exit callback failed for job %s", job_id)

    def close(self) -> None:
        self._closed.set()
        stream = self._watch_stream
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=5)
            self._watch_thread = None
        for exec_id in list(self._execs):
            self._release_exec(exec_id)

    # ---------------------------------------------------------------- interactive shells

    def exec_tty(self, handle: Handle, cmd: list[str], user: str, env: dict[str, str],
                 workdir: str) -> tuple[socket.socket, str]:
        """Start ``cmd`` with a TTY in the job's container; return (raw socket, exec id).

        The caller pumps bytes between the socket and the user's terminal and
        closes the socket when done; ``exec_exit_code`` then gives the status.
        """
        try:
            created = self.client.api.exec_create(self._ref(handle), cmd, stdin=True, tty=True, user=user,
                                                  environment=dict(env), workdir=workdir)
            exec_id = created["Id"]
            sockio = self.client.api.exec_start(exec_id, socket=True, tty=True)
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot start a shell in job {handle.job_id}: {_api_error(e)}") from None
        with self._lock:
            self._execs[exec_id] = sockio  # keeps the HTTP response (and so the socket) alive
        return getattr(sockio, "_sock", sockio), exec_id

    def exec_resize(self, exec_id: str, rows: int, cols: int) -> None:
        try:
            self.client.api.exec_resize(exec_id, height=rows, width=cols)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code not in (409, 500):  # the exec has already ended
                raise ExecutorError(f"cannot resize terminal: {_api_error(e)}") from None

    def exec_exit_code(self, exec_id: str) -> int | None:
        """The exit code of a finished exec; None while it runs (or if unknown)."""
        try:
            info = self.client.api.exec_inspect(exec_id)
        except docker.errors.NotFound:
            self._release_exec(exec_id)
            return None
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot inspect exec {exec_id[:12]}: {_api_error(e)}") from None
        if info.get("Running"):
            return None
        self._release_exec(exec_id)
        code = info.get("ExitCode")
        return int(code) if code is not None else None

    def _release_exec(self, exec_id: str) -> None:
        with self._lock:
            sockio = self._execs.pop(exec_id, None)
        if sockio is not None:
            try:
                sockio.close()
            except OSError:
                pass
