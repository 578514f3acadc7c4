"""The config's sections beside groups and users: ``executor``, ``dispatch``, ``notify``, ``security``
and ``mig``, each a frozen dataclass and the function that reads it from its mapping."""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from typing import Any

from ds01q.config import fields
from ds01q.errors import ConfigError
from ds01q.mig.auto import AutoParams

__all__ = ["DispatchConfig", "ExecutorConfig", "NotifyConfig", "SecurityConfig", "dispatch_config", "executor_config",
           "mig_auto", "notify_config", "security_config"]


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str = "docker"
    default_image: str = "ds01q/busybox:test"
    gpu_runtime: str = "none"
    allowed_images: tuple[str, ...] = ()
    state_dir: str = "/var/lib/ds01q/run"
    cgroup_root: str = "ds01q"
    cgroup_driver: str = "auto"  # auto | systemd | cgroupfs | none
    cgroup_scheme: str = "ds01q"  # ds01q | ds01-infra (group name kept as written, like ds01-infra's slices)
    stop_grace_s: float = 10.0
    launch_backoff_s: float = 5.0  # a failed launch waits this x 2^tries (at most 5 minutes) before the next
    allowed_roots: tuple[str, ...] = ("/home", "/tmp", "/data", "/scratch", "/workspace", "/srv", "/root")
    instance: str | None = None  # names this daemon's containers apart from another daemon's on the same engine
    network: str = "per-user"  # none | per-user (one bridge per user: outbound yes, other users' jobs no) | bridge

    def image_allowed(self, image: str) -> bool:
        return image == self.default_image or any(fnmatch.fnmatchcase(image, p) for p in self.allowed_images)


@dataclass(frozen=True)
class DispatchConfig:
    """How the server reaches executors: ``local`` (in-process, one server) or ``rq`` (agents on
    several nodes, through Redis). Agents send a heartbeat every ``heartbeat_s``; a node that
    missed ``missed_heartbeats`` of them is DOWN."""

    kind: str = "local"
    redis: str | None = None
    heartbeat_s: float = 5.0
    missed_heartbeats: int = 3
    command_timeout_s: float = 120.0  # how long the server waits for an agent to acknowledge a command
    redrive_s: float = 5.0  # an unacknowledged command is sent again after this long

    @property
    def down_after_s(self) -> float:
        return self.heartbeat_s * self.missed_heartbeats


def executor_config(d: dict[str, Any]) -> ExecutorConfig:
    path = "executor"
    kind = fields.get(d, "kind", path, str, "docker")
    if kind not in ("docker", "process"):
        raise ConfigError(f"executor.kind: {kind!r} is not allowed (allowed: docker, process)")
    runtime = fields.get(d, "gpu_runtime", path, str, "none")
    if runtime not in ("nvidia", "none"):
        raise ConfigError(f"executor.gpu_runtime: {runtime!r} is not allowed (allowed: nvidia, none)")
    cg = fields.mapping(d, "cgroup", "executor.")
    driver = fields.get(cg, "driver", "executor.cgroup", str, "auto")
    if driver not in ("auto", "systemd", "cgroupfs", "none"):
        raise ConfigError(f"executor.cgroup.driver: {driver!r} is not allowed (allowed: auto, systemd, cgroupfs, none)")
    scheme = fields.get(cg, "scheme", "executor.cgroup", str, "ds01q")
    if scheme not in ("ds01q", "ds01-infra"):
        raise ConfigError(f"executor.cgroup.scheme: {scheme!r} is not allowed (allowed: ds01q, ds01-infra)")
    defaults = ExecutorConfig()
    return ExecutorConfig(
        kind=kind,
        default_image=fields.get(d, "default_image", path, str, defaults.default_image),
        gpu_runtime=runtime,
        allowed_images=tuple(str(x) for x in fields.get(d, "allowed_images", path, list, [])),
        state_dir=fields.get(d, "state_dir", path, str, defaults.state_dir),
        cgroup_root=fields.get(cg, "root", "executor.cgroup", str, defaults.cgroup_root),
        cgroup_driver=driver,
        cgroup_scheme=scheme,
        stop_grace_s=fields.duration(d, "stop_grace", path) or defaults.stop_grace_s,
        launch_backoff_s=fields.duration(d, "launch_backoff", path) or defaults.launch_backoff_s,
        allowed_roots=tuple(fields.get(d, "allowed_roots", path, list, list(defaults.allowed_roots))),
        instance=fields.get(d, "instance", path, str, None),
        network=_network(d),
    )


DISPATCH_KEYS = {"kind", "redis", "heartbeat", "missed_heartbeats", "command_timeout", "redrive"}


def dispatch_config(d: dict[str, Any]) -> DispatchConfig:
    path = "dispatch"
    unknown = sorted(set(d) - DISPATCH_KEYS)
    if unknown:
        raise ConfigError(f"dispatch.{unknown[0]}: unknown key (allowed: {', '.join(sorted(DISPATCH_KEYS))})")
    kind = fields.get(d, "kind", path, str, "local")
    if kind not in ("local", "rq"):
        raise ConfigError(f"dispatch.kind: {kind!r} is not allowed (allowed: local, rq)")
    redis = fields.get(d, "redis", path, str, None)
    if kind == "rq" and not (redis and redis.startswith(("redis://", "rediss://", "unix://"))):
        raise ConfigError(f"dispatch.redis: {redis!r} is not a Redis URL like redis://10.0.0.1:6379/0 "
                          "(needed with dispatch.kind: rq)")
    missed = fields.get(d, "missed_heartbeats", path, int, 3)
    if missed < 1:
        raise ConfigError(f"dispatch.missed_heartbeats: {missed} must be >= 1")
    defaults = DispatchConfig()
    return DispatchConfig(
        kind=kind, redis=redis, missed_heartbeats=missed,
        heartbeat_s=fields.duration(d, "heartbeat", path) or defaults.heartbeat_s,
        command_timeout_s=fields.duration(d, "command_timeout", path) or defaults.command_timeout_s,
        redrive_s=fields.duration(d, "redrive", path) or defaults.redrive_s,
    )


@dataclass(frozen=True)
class NotifyConfig:
    """``notify:``: the program run for ``--mail-type`` events (Slurm's MailProg); off without ``command``.
    It runs as ``user`` (an unprivileged account, never root), without a shell, for at most ``timeout_s``."""

    command: str | None = None
    user: str = "nobody"
    timeout_s: float = 30.0


NOTIFY_KEYS = {"command", "user", "timeout"}


def notify_config(d: dict[str, Any]) -> NotifyConfig:
    unknown = sorted(set(d) - NOTIFY_KEYS)
    if unknown:
        raise ConfigError(f"notify.{unknown[0]}: unknown key (allowed: {', '.join(sorted(NOTIFY_KEYS))})")
    command = fields.get(d, "command", "notify", str, None)
    if command is not None and not os.path.isabs(command):
        raise ConfigError(f"notify.command: {command!r} must be an absolute path to a program (no shell, no arguments)")
    user = fields.get(d, "user", "notify", str, "nobody")
    if user in ("root", "0") or not user:
        raise ConfigError(f"notify.user: {user!r} is not allowed: the hook never runs as root "
                          "(give an unprivileged account, e.g. nobody or ds01q-notify)")
    timeout = fields.duration(d, "timeout", "notify") or 30.0
    return NotifyConfig(command=command, user=user, timeout_s=timeout)


@dataclass(frozen=True)
class SecurityConfig:
    """``security:``: who may be a caller, how much of the socket one user may hold, how long payloads live."""

    allow_unmapped_uids: bool = False  # a uid with no passwd entry may use the queue (as the name "uid<N>")
    allow_subordinate_uids: bool = False  # a uid inside another user's /etc/subuid range may use the queue
    subuid_file: str = "/etc/subuid"
    max_connections_per_user: int = 16
    read_timeout_s: float = 30.0  # an idle or slow request is dropped after this long
    payload_retention_s: float = 7 * 86400.0  # finished jobs' scripts and env are dropped after this long
    metrics_show_users: bool = False  # usernames in the Prometheus labels (else a stable hash)
    foreign_gpu_processes: str = "report"  # GPU processes of no ds01q job: report | warn | signal
    foreign_gpu_grace_s: float = 300.0  # warn, then signal (mode signal) after this long
    foreign_gpu_exempt: tuple[str, ...] = ()  # users whose GPU processes are only reported


def security_config(d: dict[str, Any]) -> SecurityConfig:
    path, base = "security", SecurityConfig()
    keys = {"allow_unmapped_uids", "allow_subordinate_uids", "subuid_file", "max_connections_per_user",
            "read_timeout", "payload_retention", "metrics_show_users", "foreign_gpu_processes",
            "foreign_gpu_grace", "foreign_gpu_exempt"}
    unknown = sorted(set(d) - keys)
    if unknown:
        raise ConfigError(f"security.{unknown[0]}: unknown key (allowed: {', '.join(sorted(keys))})")
    conns = fields.get(d, "max_connections_per_user", path, int, base.max_connections_per_user)
    if conns < 1:
        raise ConfigError(f"security.max_connections_per_user: {conns} must be at least 1")
    return SecurityConfig(
        allow_unmapped_uids=fields.get(d, "allow_unmapped_uids", path, bool, False),
        allow_subordinate_uids=fields.get(d, "allow_subordinate_uids", path, bool, False),
        subuid_file=fields.get(d, "subuid_file", path, str, base.subuid_file),
        max_connections_per_user=conns,
        read_timeout_s=fields.duration(d, "read_timeout", path) or base.read_timeout_s,
        payload_retention_s=fields.duration(d, "payload_retention", path) or base.payload_retention_s,
        metrics_show_users=fields.get(d, "metrics_show_users", path, bool, False),
        foreign_gpu_processes=fields.choice(d, "foreign_gpu_processes", path, ("report", "warn", "signal")),
        foreign_gpu_grace_s=fields.duration(d, "foreign_gpu_grace", path) or base.foreign_gpu_grace_s,
        foreign_gpu_exempt=tuple(str(u) for u in fields.get(d, "foreign_gpu_exempt", path, list, [])),
    )


NETWORKS = ("none", "per-user", "bridge")


def _network(d: dict[str, Any]) -> str:
    v = fields.get(d, "network", "executor", str, "per-user")
    if v not in NETWORKS:
        raise ConfigError(f"executor.network: {v!r} is not allowed (allowed: {', '.join(NETWORKS)})")
    return v  # type: ignore[no-any-return]


MIG_KEYS = ("auto", "min_interval", "min_gain", "max_per_day")


def mig_auto(d: dict[str, Any]) -> dict[str, Any]:
    """``mig: {auto: true|false|propose-only, min_interval: 10m, min_gain: 1, max_per_day: 24}``."""
    unknown = sorted(set(d) - set(MIG_KEYS))
    if unknown:
        raise ConfigError(f"mig.{unknown[0]}: unknown key (allowed: {', '.join(MIG_KEYS)})")
    auto = d.get("auto", False)
    modes = {False: "off", True: "on", "propose-only": "propose-only"}
    if isinstance(auto, str) and auto not in modes or not isinstance(auto, (bool, str)):
        raise ConfigError(f"mig.auto: {auto!r} is not allowed (allowed: true, false, propose-only)")
    base = AutoParams()
    gain = fields.get(d, "min_gain", "mig", int, base.min_gain)
    per_day = fields.get(d, "max_per_day", "mig", int, base.max_per_day)
    if gain < 1 or per_day < 1:
        raise ConfigError("mig.min_gain and mig.max_per_day: at least 1")
    interval = fields.duration(d, "min_interval", "mig")
    params = AutoParams(base.min_interval_s if interval is None else interval, gain, per_day)
    return {"mig_auto": modes[auto], "mig_auto_params": params}
