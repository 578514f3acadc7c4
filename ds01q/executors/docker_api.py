"""What DockerExecutor says to the Engine API and how it reads the answers.

Pure functions, no engine calls: the labels, command, mounts and
``containers.create`` arguments for a LaunchSpec, and the engine's values read
back (RFC 3339 times, ``stats``, error text, ``engine_errors`` for a call that
could not reach the engine).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import requests.exceptions

from docker.types import DeviceRequest, Mount

from ds01q.errors import ExecutorError
from ds01q.executors.base import (
    BATCH_WRAPPER,
    BATCH_WRAPPER_SPLIT,
    KEEPALIVE_COMMAND,
    LaunchSpec,
    Usage,
    error_file,
    one_line,
)

__all__ = [
    "ALIVE",
    "LABEL_ATTEMPT",
    "DEFAULT_CGROUPFS_PARENT",
    "LABEL_CGROUP",
    "LABEL_GROUP",
    "LABEL_INSTANCE",
    "LABEL_JOB",
    "LABEL_USER",
    "api_error",
    "container_labels",
    "create_kwargs",
    "engine_errors",
    "job_command",
    "label_filters",
    "parse_docker_time",
    "stats_usage",
]

LABEL_JOB = "ds01q.job"
LABEL_USER = "ds01q.user"
LABEL_GROUP = "ds01q.group"
LABEL_INSTANCE = "ds01q.instance"
LABEL_CGROUP = "ds01q.cgroup"
LABEL_ATTEMPT = "ds01q.attempt"
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


def api_error(e: Exception) -> str:
    explanation = getattr(e, "explanation", None)
    return one_line(explanation if explanation else e)


def engine_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An engine that is down or restarting (socket gone, connection reset, read timeout) is an
    ExecutorError like any other engine error, never a raw requests/OSError."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(self, *args, **kw)
        except (requests.exceptions.RequestException, ConnectionError, TimeoutError) as e:
            raise ExecutorError(f"cannot reach the Docker engine: {one_line(e)}") from None

    return wrapper


def stats_usage(st: dict[str, Any]) -> Usage | None:
    """Usage from one ``stats`` answer (page cache not counted); None if it has neither CPU nor memory."""
    cpu_ns = st.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage")
    mem = st.get("memory_stats", {})
    if cpu_ns is None and not mem:
        return None
    stats = mem.get("stats", {})
    cache = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    return Usage(cpu_s=(cpu_ns or 0) / 1e9, mem_bytes=max(int(mem.get("usage", 0)) - int(cache), 0),
                 max_rss_bytes=mem.get("max_usage"))


DEFAULT_INSTANCE = "default"  # the instance label of a daemon configured without ``executor.instance``


def label_filters(instance: str | None) -> list[str]:
    """The ``label`` filter that selects this daemon instance's job containers, and only those: a
    daemon without an instance adopts containers labelled ``default``, never every ds01q container."""
    return [LABEL_JOB, f"{LABEL_INSTANCE}={instance or DEFAULT_INSTANCE}"]


def container_labels(spec: LaunchSpec, cgroup: str | None, instance: str | None) -> dict[str, str]:
    labels = {str(k): str(v) for k, v in spec.labels.items()}
    labels.update({
        LABEL_JOB: str(spec.job_id),
        LABEL_USER: spec.user,
        LABEL_GROUP: spec.group,
        LABEL_ATTEMPT: str(spec.attempt),
        "ds01.user": spec.user,
        "ds01.gpu.uuids": ",".join(spec.slices),
    })
    labels[LABEL_INSTANCE] = instance or DEFAULT_INSTANCE
    if cgroup:
        labels[LABEL_CGROUP] = cgroup
    return labels


def job_command(spec: LaunchSpec, env: dict[str, str]) -> list[str]:
    """The container's command; a batch job's gets the output wrapper and ``DS01Q_OUTPUT`` in ``env``."""
    if spec.interactive:
        return list(KEEPALIVE_COMMAND)
    if not spec.command:
        raise ExecutorError(f"job {spec.job_id} has an empty command")
    if spec.output_path:
        env["DS01Q_OUTPUT"] = spec.output_path
        err = error_file(spec)
        if err:
            env["DS01Q_ERROR"] = err
            return [*BATCH_WRAPPER_SPLIT, *spec.command]
        env.pop("DS01Q_ERROR", None)
        return [*BATCH_WRAPPER, *spec.command]
    return list(spec.command)


def _mounts(spec: LaunchSpec) -> list[Mount]:
    """Workdir (rw, same path), the output file if it lies outside it, and the daemon's extra mounts.

    ``Mounts`` (unlike ``Binds``) fail on a missing source instead of creating it as root.
    """
    mounts = [Mount(spec.workdir, spec.workdir, type="bind", read_only=False)]
    workdir = os.path.abspath(spec.workdir)
    for out in (spec.output_path, error_file(spec)) if not spec.interactive else ():
        if out and os.path.commonpath([os.path.abspath(out), workdir]) != workdir:
            mounts.append(Mount(out, out, type="bind", read_only=False))
    for host, target, mode in spec.mounts:
        if mode not in ("ro", "rw"):
            raise ExecutorError(f"mount {host}: mode '{mode}' is not allowed (allowed: ro, rw)")
        mounts.append(Mount(target, host, type="bind", read_only=mode == "ro"))
    return mounts


def create_kwargs(spec: LaunchSpec, command: list[str], env: dict[str, str], *, name: str,
                  labels: dict[str, str], cgroup_parent: str | None, init: bool) -> dict[str, Any]:
    """The ``containers.create`` arguments: the user, no privileges, the limits and the GPUs of ``spec``."""
    kwargs: dict[str, Any] = dict(
        image=spec.image, command=command, name=name,
        user=f"{spec.uid}:{spec.gid}", working_dir=spec.workdir, environment=env,
        labels=labels, mounts=_mounts(spec), detach=True,
        security_opt=["no-new-privileges"], cap_drop=["ALL"], privileged=False,
        init=init, stdin_open=False, tty=False,
    )
    if cgroup_parent:
        kwargs["cgroup_parent"] = cgroup_parent
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
