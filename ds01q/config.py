"""YAML config → frozen, validated objects. Every error names its key path.

The format is the one in docs (design.md); ``ds01q.ds01infra.importer`` converts
ds01-infra's resource-limits.yaml into the same mapping first.
"""
from __future__ import annotations

import fnmatch
import grp
import math
import os
import pwd
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ds01q.errors import ConfigError
from ds01q.mig.auto import AutoParams
from ds01q.scheduler.snapshot import GroupPolicy, Limits, Weights
from ds01q.types import RequestKind, ResourceRequest
from ds01q.units import parse_duration, parse_size

DEFAULT_PATH = "/etc/ds01q/ds01q.yaml"
DEFAULT_SOCKET = "/run/ds01q/ds01q.sock"


@dataclass(frozen=True)
class GroupConfig:
    name: str
    priority: int = 0
    admin: bool = False
    limits: Limits = field(default_factory=Limits)
    share: float = 1.0
    idle_timeout_s: float | None = None
    cpus: float | None = None  # default per job
    mem_bytes: int | None = None
    pids_limit: int | None = 4096
    shm_bytes: int | None = None
    default_request: ResourceRequest = field(default_factory=ResourceRequest)
    unix_group: str | None = None
    group_max_gpus: float | None = None
    max_cpus: float | None = None  # caps on what one job may ask for (None: the host's size)
    max_mem_bytes: int | None = None
    borrowing: bool = False  # jobs beyond max_gpus may start on slices nobody within quota waits for
    borrow_interactive: bool = False

    def policy(self) -> GroupPolicy:
        return GroupPolicy(name=self.name, priority=self.priority, limits=self.limits, share=self.share,
                           borrowing=self.borrowing, borrow_interactive=self.borrow_interactive)


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


@dataclass(frozen=True)
class Config:
    path: str
    database: str
    socket: str
    tick_s: float
    executor: ExecutorConfig
    inventory_source: str
    inventory_gpus: tuple[dict[str, Any], ...]
    node: str
    default_group: str
    groups: dict[str, GroupConfig]
    users: dict[str, dict[str, Any]]
    user_limits: dict[str, Limits]
    policy: str
    weights: Weights
    admin_users: tuple[str, ...]
    sample_interval_s: float
    carbon_g_per_kwh: float
    requeue_on_layout_change: bool
    lifecycle_exempt: tuple[str, ...]
    security: SecurityConfig = field(default_factory=lambda: SecurityConfig())
    mig_auto: str = "off"  # off | on | propose-only (config key mig.auto: false | true | propose-only)
    mig_auto_params: AutoParams = field(default_factory=AutoParams)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    notify: NotifyConfig = field(default_factory=lambda: NotifyConfig())
    # scheduler.preempt_grace: a reclaimed borrower gets its --signal (or SIGTERM), then this long
    preempt_grace_s: float = 30.0

    # ----- lookups -----
    def group_of(self, user: str) -> GroupConfig:
        explicit = self.users.get(user, {}).get("group")
        if explicit:
            return self.groups[explicit]
        for g in sorted(self.groups.values(), key=lambda g: -g.priority):
            if g.unix_group and _in_unix_group(user, g.unix_group):
                return g
        return self.groups[self.default_group]

    def limits_for(self, user: str) -> Limits:
        return self.user_limits.get(user) or self.group_of(user).limits

    def is_admin(self, user: str, uid: int) -> bool:
        return uid == 0 or user in self.admin_users or self.group_of(user).admin


def _in_unix_group(user: str, group: str) -> bool:
    try:
        g = grp.getgrnam(group)
    except KeyError:
        return False
    if user in g.gr_mem:
        return True
    try:
        return pwd.getpwnam(user).pw_gid == g.gr_gid
    except KeyError:
        return False


# ----------------------------------------------------------------- loading
def read_yaml(p: str | Path) -> Any:
    """A YAML file's data, or a one-line ConfigError naming the file (and line)."""
    try:
        text = Path(p).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: is not UTF-8 text") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None


def load(path: str | None = None) -> Config:
    p = path or os.environ.get("DS01Q_CONFIG") or DEFAULT_PATH
    data = read_yaml(p)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys like database, groups, inventory")
    if "defaults" in data and "groups" in data and "inventory" not in data:
        from ds01q.ds01infra.importer import convert  # ds01-infra resource-limits.yaml, loaded as it is

        data = convert(data, Path(p).parent)
    return from_dict(data, p)


def _get(d: dict[str, Any], key: str, path: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if key not in d or d[key] is None:
        return default
    v = d[key]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if not isinstance(v, kind) or (isinstance(v, bool) and kind in (int, float)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{path}.{key}: {v!r} is not a {names}".lstrip("."))
    return v


def _duration(d: dict[str, Any], key: str, path: str) -> float | None:
    if d.get(key) is None:
        return None
    v = parse_duration(d[key])
    if v is None:
        raise ConfigError(f"{path}.{key}: {d[key]!r} is not a duration like 30m, 24h, 2d".lstrip("."))
    return v


def _size(d: dict[str, Any], key: str, path: str) -> int | None:
    if d.get(key) is None:
        return None
    v = parse_size(d[key])
    if v is None:
        raise ConfigError(f"{path}.{key}: {d[key]!r} is not a size like 512m, 32g".lstrip("."))
    return v


def _mapping(d: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    v = d.get(key) or {}
    if not isinstance(v, dict):
        raise ConfigError(f"{path}{key}: must be a mapping, not {type(v).__name__}")
    return v


LIMIT_KEYS = {
    "max_gpus", "max_slices", "max_running_jobs", "max_queued_jobs", "max_interactive", "max_runtime",
    "max_slices_per_job", "allowed_profiles", "allow_full_gpu",
}
GROUP_KEYS = LIMIT_KEYS | {
    "priority", "admin", "share", "idle_timeout", "cpus", "mem", "pids_limit", "shm_size", "default_request",
    "unix_group", "group_max_gpus", "max_cpus", "max_mem", "borrowing", "borrow_interactive",
}


def _limits(d: dict[str, Any], path: str, base: Limits | None = None) -> Limits:
    base = base or Limits()
    changes: dict[str, Any] = {}
    for key, kind in (("max_gpus", float), ("max_slices", int), ("max_running_jobs", int),
                      ("max_queued_jobs", int), ("max_interactive", int), ("max_slices_per_job", int)):
        if key in d:
            v = _get(d, key, path, kind, None)
            if v is not None and v < 0:
                raise ConfigError(f"{path}.{key}: {v} must be >= 0")
            changes[key] = v
    if "max_runtime" in d:
        changes["max_runtime_s"] = _duration(d, "max_runtime", path)
    if "allow_full_gpu" in d:
        changes["allow_full_gpu"] = bool(_get(d, "allow_full_gpu", path, bool, True))
    if "allowed_profiles" in d:
        v = _get(d, "allowed_profiles", path, list, None)
        changes["allowed_profiles"] = frozenset(str(x) for x in v) if v is not None else None
    return replace(base, **changes)


def _request(value: Any, path: str) -> ResourceRequest:
    if value is None or value == "any":
        return ResourceRequest()
    if value == "none" or value == 0:
        return ResourceRequest(kind=RequestKind.NONE, count=0)
    if isinstance(value, int) and not isinstance(value, bool):
        return ResourceRequest(kind=RequestKind.GPUS, count=value)
    if isinstance(value, str):
        return ResourceRequest(kind=RequestKind.MIG, profile=value)
    raise ConfigError(f"{path}: {value!r} is not a request (allowed: any, none, a number of GPUs, a MIG profile)")


def _group(name: str, d: dict[str, Any]) -> GroupConfig:
    path = f"groups.{name}"
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: must be a mapping of limits, not {type(d).__name__}")
    unknown = sorted(set(d) - GROUP_KEYS)
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(GROUP_KEYS))})")
    admin = bool(_get(d, "admin", path, bool, False))
    limits = _limits(d, path)
    if "max_runtime" not in d and not admin:
        limits = replace(limits, max_runtime_s=None)
    return GroupConfig(
        name=name,
        priority=_get(d, "priority", path, int, 0),
        admin=admin,
        limits=limits,
        share=_get(d, "share", path, float, 1.0),
        idle_timeout_s=_duration(d, "idle_timeout", path),
        cpus=_get(d, "cpus", path, float, None),
        mem_bytes=_size(d, "mem", path),
        pids_limit=_get(d, "pids_limit", path, int, 4096),
        shm_bytes=_size(d, "shm_size", path),
        default_request=_request(d.get("default_request"), f"{path}.default_request"),
        unix_group=_get(d, "unix_group", path, str, None),
        group_max_gpus=_get(d, "group_max_gpus", path, float, None),
        max_cpus=_positive(d, "max_cpus", path),
        max_mem_bytes=_size(d, "max_mem", path),
        borrowing=bool(_get(d, "borrowing", path, bool, False)),
        borrow_interactive=bool(_get(d, "borrow_interactive", path, bool, False)),
    )


def _executor(d: dict[str, Any]) -> ExecutorConfig:
    path = "executor"
    kind = _get(d, "kind", path, str, "docker")
    if kind not in ("docker", "process"):
        raise ConfigError(f"executor.kind: {kind!r} is not allowed (allowed: docker, process)")
    runtime = _get(d, "gpu_runtime", path, str, "none")
    if runtime not in ("nvidia", "none"):
        raise ConfigError(f"executor.gpu_runtime: {runtime!r} is not allowed (allowed: nvidia, none)")
    cg = _mapping(d, "cgroup", "executor.")
    driver = _get(cg, "driver", "executor.cgroup", str, "auto")
    if driver not in ("auto", "systemd", "cgroupfs", "none"):
        raise ConfigError(f"executor.cgroup.driver: {driver!r} is not allowed (allowed: auto, systemd, cgroupfs, none)")
    scheme = _get(cg, "scheme", "executor.cgroup", str, "ds01q")
    if scheme not in ("ds01q", "ds01-infra"):
        raise ConfigError(f"executor.cgroup.scheme: {scheme!r} is not allowed (allowed: ds01q, ds01-infra)")
    defaults = ExecutorConfig()
    return ExecutorConfig(
        kind=kind,
        default_image=_get(d, "default_image", path, str, defaults.default_image),
        gpu_runtime=runtime,
        allowed_images=tuple(str(x) for x in _get(d, "allowed_images", path, list, [])),
        state_dir=_get(d, "state_dir", path, str, defaults.state_dir),
        cgroup_root=_get(cg, "root", "executor.cgroup", str, defaults.cgroup_root),
        cgroup_driver=driver,
        cgroup_scheme=scheme,
        stop_grace_s=_duration(d, "stop_grace", path) or defaults.stop_grace_s,
        launch_backoff_s=_duration(d, "launch_backoff", path) or defaults.launch_backoff_s,
        allowed_roots=tuple(_get(d, "allowed_roots", path, list, list(defaults.allowed_roots))),
        instance=_get(d, "instance", path, str, None),
        network=_network(d),
    )


DISPATCH_KEYS = {"kind", "redis", "heartbeat", "missed_heartbeats", "command_timeout", "redrive"}


def _dispatch(d: dict[str, Any]) -> DispatchConfig:
    path = "dispatch"
    unknown = sorted(set(d) - DISPATCH_KEYS)
    if unknown:
        raise ConfigError(f"dispatch.{unknown[0]}: unknown key (allowed: {', '.join(sorted(DISPATCH_KEYS))})")
    kind = _get(d, "kind", path, str, "local")
    if kind not in ("local", "rq"):
        raise ConfigError(f"dispatch.kind: {kind!r} is not allowed (allowed: local, rq)")
    redis = _get(d, "redis", path, str, None)
    if kind == "rq" and not (redis and redis.startswith(("redis://", "rediss://", "unix://"))):
        raise ConfigError(f"dispatch.redis: {redis!r} is not a Redis URL like redis://10.0.0.1:6379/0 "
                          "(needed with dispatch.kind: rq)")
    missed = _get(d, "missed_heartbeats", path, int, 3)
    if missed < 1:
        raise ConfigError(f"dispatch.missed_heartbeats: {missed} must be >= 1")
    defaults = DispatchConfig()
    return DispatchConfig(
        kind=kind, redis=redis, missed_heartbeats=missed,
        heartbeat_s=_duration(d, "heartbeat", path) or defaults.heartbeat_s,
        command_timeout_s=_duration(d, "command_timeout", path) or defaults.command_timeout_s,
        redrive_s=_duration(d, "redrive", path) or defaults.redrive_s,
    )


def _weights(d: dict[str, Any]) -> Weights:
    path, w = "scheduler.weights", Weights()
    return Weights(
        group=_get(d, "group", path, float, w.group),
        age=_get(d, "age", path, float, w.age),
        age_cap_s=_duration(d, "age_cap", path) or w.age_cap_s,
        fairshare=_get(d, "fairshare", path, float, w.fairshare),
        halflife_s=_duration(d, "halflife", path) or w.halflife_s,
    )


def from_dict(data: dict[str, Any], path: str = "<config>") -> Config:
    server = _mapping(data, "server", "")
    inventory = _mapping(data, "inventory", "")
    source = _get(inventory, "source", "inventory", str, "nvml")
    if source not in ("nvml", "static", "auto"):
        raise ConfigError(f"inventory.source: {source!r} is not allowed (allowed: nvml, static, auto)")
    gpus = _get(inventory, "gpus", "inventory", list, [])
    for i, g in enumerate(gpus):
        if not isinstance(g, dict) or "uuid" not in g:
            raise ConfigError(f"inventory.gpus[{i}]: must be a mapping with uuid, name and optional mig list")
    groups_raw = _mapping(data, "groups", "")
    groups = {str(n): _group(str(n), g) for n, g in groups_raw.items()}
    if not groups:
        groups = {"default": GroupConfig(name="default")}
    default_group = _get(data, "default_group", "", str, next(iter(groups)))
    if default_group not in groups:
        raise ConfigError(f"default_group: {default_group!r} is not a group (allowed: {', '.join(groups)})")
    users = _mapping(data, "users", "")
    user_limits: dict[str, Limits] = {}
    for u, ud in users.items():
        if not isinstance(ud, dict):
            raise ConfigError(f"users.{u}: must be a mapping like {{group: researcher}}")
        bad = sorted(set(ud) - LIMIT_KEYS - {"group"})
        if bad:
            raise ConfigError(f"users.{u}.{bad[0]}: unknown key (allowed: group, {', '.join(sorted(LIMIT_KEYS))})")
        g = ud.get("group")
        if g is not None and g not in groups:
            raise ConfigError(f"users.{u}.group: {g!r} is not a group (allowed: {', '.join(groups)})")
        extra = set(ud) & LIMIT_KEYS
        if extra:  # a user override adds to the group's limits, it does not replace them
            user_limits[str(u)] = _limits(ud, f"users.{u}", groups[g or default_group].limits)
    sched = _mapping(data, "scheduler", "")
    policy = _get(sched, "policy", "scheduler", str, "backfill")
    if policy not in ("fifo", "priority", "backfill"):
        raise ConfigError(f"scheduler.policy: {policy!r} is not allowed (allowed: fifo, priority, backfill)")
    acct = _mapping(data, "accounting", "")
    lifecycle = _mapping(data, "lifecycle", "")
    return Config(
        path=path,
        database=_get(data, "database", "", str, "sqlite:////var/lib/ds01q/ds01q.db"),
        socket=os.environ.get("DS01Q_SOCKET") or _get(server, "socket", "server", str, DEFAULT_SOCKET),
        tick_s=_duration(server, "tick", "server") or 1.0,
        executor=_executor(_mapping(data, "executor", "")),
        inventory_source=source,
        inventory_gpus=tuple(gpus),
        node=_get(data, "node", "", str, "local"),
        default_group=default_group,
        groups=groups,
        users={str(k): v for k, v in users.items()},
        user_limits=user_limits,
        policy=policy,
        weights=_weights(_mapping(sched, "weights", "scheduler.")),
        admin_users=tuple(_get(data, "admin_users", "", list, [])),
        sample_interval_s=_duration(acct, "sample_interval", "accounting") or 30.0,
        carbon_g_per_kwh=_get(acct, "carbon_g_per_kwh", "accounting", float, 0.0),
        requeue_on_layout_change=bool(_get(data, "requeue_on_layout_change", "", bool, True)),
        lifecycle_exempt=tuple(_get(lifecycle, "exempt_users", "lifecycle", list, [])),
        security=_security(_mapping(data, "security", "")),
        **_mig_auto(_mapping(data, "mig", "")),
        dispatch=_dispatch(_mapping(data, "dispatch", "")),
        notify=_notify(_mapping(data, "notify", "")),
        preempt_grace_s=_preempt_grace(sched),
    )


def _preempt_grace(sched: dict[str, Any]) -> float:
    """``scheduler.preempt_grace``: how long a preempted borrower has between its signal and SIGKILL."""
    v = _duration(sched, "preempt_grace", "scheduler")
    return 30.0 if v is None else v


@dataclass(frozen=True)
class NotifyConfig:
    """``notify:``: the program run for ``--mail-type`` events (Slurm's MailProg); off without ``command``.
    It runs as ``user`` (an unprivileged account, never root), without a shell, for at most ``timeout_s``."""

    command: str | None = None
    user: str = "nobody"
    timeout_s: float = 30.0


NOTIFY_KEYS = {"command", "user", "timeout"}


def _notify(d: dict[str, Any]) -> NotifyConfig:
    unknown = sorted(set(d) - NOTIFY_KEYS)
    if unknown:
        raise ConfigError(f"notify.{unknown[0]}: unknown key (allowed: {', '.join(sorted(NOTIFY_KEYS))})")
    command = _get(d, "command", "notify", str, None)
    if command is not None and not os.path.isabs(command):
        raise ConfigError(f"notify.command: {command!r} must be an absolute path to a program (no shell, no arguments)")
    user = _get(d, "user", "notify", str, "nobody")
    if user in ("root", "0") or not user:
        raise ConfigError(f"notify.user: {user!r} is not allowed: the hook never runs as root "
                          "(give an unprivileged account, e.g. nobody or ds01q-notify)")
    timeout = _duration(d, "timeout", "notify") or 30.0
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


def _security(d: dict[str, Any]) -> SecurityConfig:
    path, base = "security", SecurityConfig()
    keys = {"allow_unmapped_uids", "allow_subordinate_uids", "subuid_file", "max_connections_per_user",
            "read_timeout", "payload_retention", "metrics_show_users", "foreign_gpu_processes",
            "foreign_gpu_grace", "foreign_gpu_exempt"}
    unknown = sorted(set(d) - keys)
    if unknown:
        raise ConfigError(f"security.{unknown[0]}: unknown key (allowed: {', '.join(sorted(keys))})")
    conns = _get(d, "max_connections_per_user", path, int, base.max_connections_per_user)
    if conns < 1:
        raise ConfigError(f"security.max_connections_per_user: {conns} must be at least 1")
    return SecurityConfig(
        allow_unmapped_uids=_get(d, "allow_unmapped_uids", path, bool, False),
        allow_subordinate_uids=_get(d, "allow_subordinate_uids", path, bool, False),
        subuid_file=_get(d, "subuid_file", path, str, base.subuid_file),
        max_connections_per_user=conns,
        read_timeout_s=_duration(d, "read_timeout", path) or base.read_timeout_s,
        payload_retention_s=_duration(d, "payload_retention", path) or base.payload_retention_s,
        metrics_show_users=_get(d, "metrics_show_users", path, bool, False),
        foreign_gpu_processes=_choice(d, "foreign_gpu_processes", path, ("report", "warn", "signal")),
        foreign_gpu_grace_s=_duration(d, "foreign_gpu_grace", path) or base.foreign_gpu_grace_s,
        foreign_gpu_exempt=tuple(str(u) for u in _get(d, "foreign_gpu_exempt", path, list, [])),
    )


def _choice(d: dict[str, Any], key: str, path: str, allowed: tuple[str, ...]) -> str:
    v = _get(d, key, path, str, allowed[0])
    if v not in allowed:
        raise ConfigError(f"{path}.{key}: {v!r} is not allowed (allowed: {', '.join(allowed)})")
    return v  # type: ignore[no-any-return]


def _positive(d: dict[str, Any], key: str, path: str) -> float | None:
    v = _get(d, key, path, float, None)
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{path}.{key}: {v!r} must be a positive number")
    return v  # type: ignore[no-any-return]


NETWORKS = ("none", "per-user", "bridge")


def _network(d: dict[str, Any]) -> str:
    v = _get(d, "network", "executor", str, "per-user")
    if v not in NETWORKS:
        raise ConfigError(f"executor.network: {v!r} is not allowed (allowed: {', '.join(NETWORKS)})")
    return v  # type: ignore[no-any-return]


MIG_KEYS = ("auto", "min_interval", "min_gain", "max_per_day")


def _mig_auto(d: dict[str, Any]) -> dict[str, Any]:
    """``mig: {auto: true|false|propose-only, min_interval: 10m, min_gain: 1, max_per_day: 24}``."""
    unknown = sorted(set(d) - set(MIG_KEYS))
    if unknown:
        raise ConfigError(f"mig.{unknown[0]}: unknown key (allowed: {', '.join(MIG_KEYS)})")
    auto = d.get("auto", False)
    modes = {False: "off", True: "on", "propose-only": "propose-only"}
    if isinstance(auto, str) and auto not in modes or not isinstance(auto, (bool, str)):
        raise ConfigError(f"mig.auto: {auto!r} is not allowed (allowed: true, false, propose-only)")
    base = AutoParams()
    gain = _get(d, "min_gain", "mig", int, base.min_gain)
    per_day = _get(d, "max_per_day", "mig", int, base.max_per_day)
    if gain < 1 or per_day < 1:
        raise ConfigError("mig.min_gain and mig.max_per_day: at least 1")
    interval = _duration(d, "min_interval", "mig")
    params = AutoParams(base.min_interval_s if interval is None else interval, gain, per_day)
    return {"mig_auto": modes[auto], "mig_auto_params": params}



class ConfigRef:
    """The daemon's current config, shared by the loop and the services. ``reload()`` reads
    the file again (``ds01q admin inventory refresh``, SIGHUP); nothing else changes it."""

    def __init__(self, config: Config) -> None:
        self.current = config

    def reload(self) -> Config:
        if self.current.path != "<config>":
            self.current = load(self.current.path)
        return self.current
