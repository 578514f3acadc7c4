"""DockerExecutor: one container per job through the Docker Engine API (docker-py).

Container ``<name_prefix>-<job_id>-<attempt>`` (the prefix carries the instance), labelled
with the job and the attempt, created then started; launching an attempt whose container
already exists (a relaunch after a crash) returns that container instead of a second one, running as
``uid:gid`` with ``no-new-privileges``, all capabilities dropped, never
privileged, and ``init`` (docker-init) as PID 1 so the job gets SIGTERM.
The working directory is bind-mounted at the same path. A batch job's
stdout+stderr are appended to ``spec.output_path`` by a ``/bin/sh`` wrapper
inside the container (so the image needs ``/bin/sh``); the executor creates
that file as the user beforehand, so it is the user's and outlives the container.

Accounting. With the cgroupfs driver (and ``job_cgroups``) each container is
put in its own cgroup ``<cgroup_parent>/<name>``, which runc does not delete
when the container exits: its ``cpuacct``/``memory`` totals, peak and OOM
count are read after exit, then ``remove()`` deletes it (one a kill left without its container
goes when the instance's next executor is made). With the systemd
driver the cgroup is the ``docker-<id>.scope`` that vanishes at exit, so
``poll`` reports the last sample taken while it ran (``sample``/``poll``
refresh it).

Exits. A container this executor started is reported from its ``die`` (and
``oom``) events and its own cgroup, without an inspect (docker_exits.py); any
other is inspected.

The container's create arguments and labels are built in docker_api.py, and created and
started in docker_launch.py; the event thread lives in docker_exits.py and the TTY execs of
interactive shells in docker_tty.py.
"""
from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
import requests.exceptions

from ds01q.errors import ExecutorError
from ds01q.executors import cgroups
from ds01q.executors.base import ExitInfo, Found, Handle, Usage, one_line
from ds01q.executors.docker_api import (
    ALIVE,
    LABEL_ATTEMPT,
    LABEL_CGROUP,
    LABEL_JOB,
    api_error,
    engine_errors,
    label_filters,
    parse_docker_time,
    stats_usage,
)
from ds01q.executors.docker_exits import EventExits, EventWatch, killed_for_memory
from ds01q.executors.docker_launch import Creating
from ds01q.executors.docker_signal import signal_container
from ds01q.executors.docker_tty import ExecSessions
from ds01q.executors.heldmount import DEFAULT_ROOT as HELD_ROOT
from ds01q.executors.heldmount import HeldDir

__all__ = ["DockerExecutor", "parse_docker_time"]

log = logging.getLogger(__name__)


def _job_cgroups(prefix: str) -> str:
    """The names of the job cgroups (and containers) of a name prefix, as a regular expression."""
    return re.escape(prefix) + r"-\d+-\d+"


def name_prefix(instance: str | None) -> str:
    """What names an instance's containers, job cgroups and staging points."""
    return f"ds01q-{instance}" if instance else "ds01q"


class DockerExecutor(Creating, EventWatch):
    """Runs jobs as Docker containers. See the module docstring for the details."""

    def __init__(self, client: Any = None, cgroup_driver: str | None = None, *,
                 name_prefix: str = "ds01q", instance: str | None = None,
                 job_cgroups: bool = True, init: bool = True, network: str = "bridge") -> None:
        try:
            self.client = client if client is not None else docker.from_env()
            # a Unix socket needs no proxy: without this, requests scans the whole environment for proxy
            # settings at every API call, a third of the CPU the daemon spent per call
            self.client.api.trust_env = False
            info = self.client.info() if cgroup_driver is None else {}
        except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
            raise ExecutorError(f"cannot reach the Docker engine: {api_error(e)}") from None
        self._driver = cgroup_driver or str(info.get("CgroupDriver") or "cgroupfs")
        if self._driver not in ("cgroupfs", "systemd"):
            raise ExecutorError(f"unsupported cgroup driver '{self._driver}' (allowed: cgroupfs, systemd)")
        self.name_prefix = name_prefix
        # this instance's staging points only; the executor is made once by the daemon (or agent) that owns
        # the instance, before any launch: what a crash left between a hold and its release goes now
        self._held_root = os.path.join(HELD_ROOT, name_prefix)
        HeldDir.drop_stale(self._held_root)
        self.instance = instance
        self.job_cgroups = job_cgroups and self._driver == "cgroupfs"
        self._drop_orphan_cgroups()
        self.init = init
        self.network = network  # executor.network: none | per-user | bridge (docker_net.py)
        self._networks: set[str] = set()  # per-user networks found or made: not looked up at each launch
        self._lock = threading.Lock()
        self._last: dict[int, Usage] = {}  # last sample per job, returned at exit when the cgroup is gone
        self._known: dict[int, tuple[str, int, str | None]] = {}  # job -> (container id, State.Pid, job cgroup)
        self._exits = EventExits()  # exits as the events tell them (docker_exits.py)
        self._shells = ExecSessions(self.client)
        self._watch_thread: threading.Thread | None = None
        self._watch_stream: Any = None
        self._on_exit: Callable[[int], None] | None = None
        self._on_lost: Callable[[str], None] | None = None
        self._closed = threading.Event()

    # ---------------------------------------------------------------- naming

    def cgroup_driver(self) -> str:
        """The engine's cgroup driver (``cgroupfs`` or ``systemd``), or the one given to the constructor."""
        return self._driver

    def _ref(self, handle: Handle) -> str:
        return handle.ref or self.container_name(handle.job_id)

    @staticmethod
    def drop_leftovers(name_prefix: str) -> int:
        """What daemons of ``name_prefix`` that were killed left on this host, once their containers are
        removed: staging mounts, and job cgroups (named as the containers; each one left makes every
        later cgroup operation on the host dearer). Returns how many cgroups went."""
        HeldDir.drop_stale(os.path.join(HELD_ROOT, name_prefix))
        return cgroups.remove_named(_job_cgroups(name_prefix)) if os.geteuid() == 0 else 0

    def _drop_orphan_cgroups(self) -> None:
        """This instance's job cgroups whose container is gone (a kill between a container's removal and
        its cgroup's; each one left makes every later cgroup operation on the host dearer). Run before any
        launch, like the staging drop. A container that still exists keeps its cgroup: its exit may not be
        recorded yet, and its usage is read from there."""
        if not self.job_cgroups or os.geteuid() != 0:
            return
        try:
            rows = self._rows()
        except ExecutorError as e:
            log.warning("leftover job cgroups not looked for: %s", e)
            return
        names = frozenset(n.lstrip("/") for c in rows for n in c.get("Names") or ())
        gone = cgroups.remove_named(_job_cgroups(self.name_prefix), keep=names)
        if gone:
            log.info("removed %s job cgroup directories left without a container", gone)

    # ---------------------------------------------------------------- inspect

    def _inspect(self, handle: Handle) -> dict[str, Any] | None:
        try:
            attrs: dict[str, Any] = self.client.api.inspect_container(self._ref(handle))
            return attrs
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot inspect container of job {handle.job_id}: {api_error(e)}") from None

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
        return stats_usage(st)

    # ---------------------------------------------------------------- contract

    @engine_errors
    def poll(self, handle: Handle) -> ExitInfo | None:
        with self._lock:
            known, last = self._known.get(handle.job_id), self._last.get(handle.job_id)
        if known is not None and known[0] == handle.ref:  # started here: its die event may tell it all
            info = self._exits.exit_info(known[0], known[2], last)
            if info is not None:
                return info
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
        job_cg = (attrs.get("Config", {}).get("Labels") or {}).get(LABEL_CGROUP)
        return ExitInfo(
            exit_code=int(exit_code) if exit_code is not None else None,
            oom_killed=killed_for_memory(bool(state.get("OOMKilled")), exit_code, job_cg),
            finished_at=parse_docker_time(state.get("FinishedAt")),
            cpu_s=usage.cpu_s if usage else None,
            max_rss_bytes=usage.max_rss_bytes if usage else None,
            error=one_line(state.get("Error") or ""),
            started_at=parse_docker_time(state.get("StartedAt")),
        )

    @engine_errors
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
                raise ExecutorError(f"cannot stop job {handle.job_id}: {api_error(e)}") from None
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot stop job {handle.job_id}: {api_error(e)}") from None

    @engine_errors
    def signal(self, handle: Handle, signum: int, batch_only: bool = True) -> None:
        """Send ``signum`` to the job's main process (``batch_only``) or every process (docker_signal.py)."""
        signal_container(self.client, self._ref(handle), handle.job_id, signum, batch_only, self.init)

    @engine_errors
    def remove(self, handle: Handle) -> None:
        with self._lock:
            known = self._known.get(handle.job_id)
        if known is not None and handle.ref == known[0]:  # launched here: its id and cgroup are known
            ref, job_cg = known[0], known[2]
        else:
            attrs = self._inspect(handle)
            job_cg = (attrs.get("Config", {}).get("Labels") or {}).get(LABEL_CGROUP) if attrs else None
            ref = attrs["Id"] if attrs else self._ref(handle)
        self._force_remove(ref)
        if job_cg:
            cgroups.drop_cgroup(job_cg)
        self._exits.forget(ref)
        with self._lock:
            self._last.pop(handle.job_id, None)
            self._known.pop(handle.job_id, None)

    @engine_errors
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

    @engine_errors
    def running(self) -> dict[int, Handle]:
        try:
            containers = self.client.containers.list(all=True, sparse=True,
                                                     filters={"label": label_filters(self.instance)})
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot list containers: {api_error(e)}") from None
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

    @engine_errors
    def _rows(self) -> list[dict[str, Any]]:
        """The engine's listing of this instance's job containers, running or not."""
        try:
            rows: list[dict[str, Any]] = self.client.api.containers(
                all=True, filters={"label": label_filters(self.instance)})
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot list containers: {api_error(e)}") from None
        return rows

    @engine_errors
    def containers(self) -> list[Found]:
        rows = self._rows()
        out: list[Found] = []
        for c in rows:
            labels = c.get("Labels") or {}
            try:
                job_id, attempt = int(labels.get(LABEL_JOB, "")), int(labels.get(LABEL_ATTEMPT, "0"))
            except ValueError:
                continue
            h = Handle(job_id, c["Id"])
            status = c.get("State")
            if status in ALIVE:
                out.append(Found(h, attempt, None))
            elif status == "created":
                created = c.get("Created")  # epoch seconds
                out.append(Found(h, attempt, None, started=False,
                                 created_at=float(created) if isinstance(created, (int, float)) else None))
            else:
                info = self.poll(h)
                if info is not None:
                    out.append(Found(h, attempt, info))
        return out

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
        self._shells.close()

    # ---------------------------------------------------------------- interactive shells

    def exec_tty(self, handle: Handle, cmd: list[str], user: str, env: dict[str, str],
                 workdir: str) -> tuple[socket.socket, str]:
        """Start ``cmd`` with a TTY in the job's container; return (raw socket, exec id).

        The caller pumps bytes between the socket and the user's terminal and
        closes the socket when done; ``exec_exit_code`` then gives the status.
        """
        return self._shells.start(self._ref(handle), handle.job_id, cmd, user, env, workdir)

    def exec_resize(self, exec_id: str, rows: int, cols: int) -> None:
        self._shells.resize(exec_id, rows, cols)

    def exec_exit_code(self, exec_id: str) -> int | None:
        """The exit code of a finished exec; None while it runs (or if unknown)."""
        return self._shells.exit_code(exec_id)
