"""YAML config → frozen, validated objects. Every error names its key path.

The format is the one in docs (design.md); ``ds01q.ds01infra.importer`` converts
ds01-infra's resource-limits.yaml into the same mapping first. Groups, users, the scheduler and
the whole ``Config`` are read here; the other sections in sections.py, one value in fields.py.
"""
from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ds01q.config import fields
from ds01q.config.sections import (
    DispatchConfig,
    ExecutorConfig,
    NotifyConfig,
    SecurityConfig,
    dispatch_config,
    executor_config,
    mig_auto,
    notify_config,
    security_config,
)
from ds01q.errors import ConfigError
from ds01q.mig.auto import AutoParams
from ds01q.scheduler.snapshot import GroupPolicy, Limits, Weights
from ds01q.types import RequestKind, ResourceRequest

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
            v = fields.get(d, key, path, kind, None)
            if v is not None and v < 0:
                raise ConfigError(f"{path}.{key}: {v} must be >= 0")
            changes[key] = v
    if "max_runtime" in d:
        changes["max_runtime_s"] = fields.duration(d, "max_runtime", path)
    if "allow_full_gpu" in d:
        changes["allow_full_gpu"] = bool(fields.get(d, "allow_full_gpu", path, bool, True))
    if "allowed_profiles" in d:
        v = fields.get(d, "allowed_profiles", path, list, None)
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
    admin = bool(fields.get(d, "admin", path, bool, False))
    limits = _limits(d, path)
    if "max_runtime" not in d and not admin:
        limits = replace(limits, max_runtime_s=None)
    return GroupConfig(
        name=name,
        priority=fields.get(d, "priority", path, int, 0),
        admin=admin,
        limits=limits,
        share=fields.get(d, "share", path, float, 1.0),
        idle_timeout_s=fields.duration(d, "idle_timeout", path),
        cpus=fields.get(d, "cpus", path, float, None),
        mem_bytes=fields.size(d, "mem", path),
        pids_limit=fields.get(d, "pids_limit", path, int, 4096),
        shm_bytes=fields.size(d, "shm_size", path),
        default_request=_request(d.get("default_request"), f"{path}.default_request"),
        unix_group=fields.get(d, "unix_group", path, str, None),
        group_max_gpus=fields.get(d, "group_max_gpus", path, float, None),
        max_cpus=fields.positive(d, "max_cpus", path),
        max_mem_bytes=fields.size(d, "max_mem", path),
        borrowing=bool(fields.get(d, "borrowing", path, bool, False)),
        borrow_interactive=bool(fields.get(d, "borrow_interactive", path, bool, False)),
    )


def _weights(d: dict[str, Any]) -> Weights:
    path, w = "scheduler.weights", Weights()
    return Weights(
        group=fields.get(d, "group", path, float, w.group),
        age=fields.get(d, "age", path, float, w.age),
        age_cap_s=fields.duration(d, "age_cap", path) or w.age_cap_s,
        fairshare=fields.get(d, "fairshare", path, float, w.fairshare),
        halflife_s=fields.duration(d, "halflife", path) or w.halflife_s,
    )


def from_dict(data: dict[str, Any], path: str = "<config>") -> Config:
    server = fields.mapping(data, "server", "")
    inventory = fields.mapping(data, "inventory", "")
    source = fields.get(inventory, "source", "inventory", str, "nvml")
    if source not in ("nvml", "static", "auto"):
        raise ConfigError(f"inventory.source: {source!r} is not allowed (allowed: nvml, static, auto)")
    gpus = fields.get(inventory, "gpus", "inventory", list, [])
    for i, g in enumerate(gpus):
        if not isinstance(g, dict) or "uuid" not in g:
            raise ConfigError(f"inventory.gpus[{i}]: must be a mapping with uuid, name and optional mig list")
    groups_raw = fields.mapping(data, "groups", "")
    groups = {str(n): _group(str(n), g) for n, g in groups_raw.items()}
    if not groups:
        groups = {"default": GroupConfig(name="default")}
    default_group = fields.get(data, "default_group", "", str, next(iter(groups)))
    if default_group not in groups:
        raise ConfigError(f"default_group: {default_group!r} is not a group (allowed: {', '.join(groups)})")
    users = fields.mapping(data, "users", "")
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
    sched = fields.mapping(data, "scheduler", "")
    policy = fields.get(sched, "policy", "scheduler", str, "backfill")
    if policy not in ("fifo", "priority", "backfill"):
        raise ConfigError(f"scheduler.policy: {policy!r} is not allowed (allowed: fifo, priority, backfill)")
    acct = fields.mapping(data, "accounting", "")
    lifecycle = fields.mapping(data, "lifecycle", "")
    return Config(
        path=path,
        database=fields.get(data, "database", "", str, "sqlite:////var/lib/ds01q/ds01q.db"),
        socket=os.environ.get("DS01Q_SOCKET") or fields.get(server, "socket", "server", str, DEFAULT_SOCKET),
        tick_s=fields.duration(server, "tick", "server") or 1.0,
        executor=executor_config(fields.mapping(data, "executor", "")),
        inventory_source=source,
        inventory_gpus=tuple(gpus),
        node=fields.get(data, "node", "", str, "local"),
        default_group=default_group,
        groups=groups,
        users={str(k): v for k, v in users.items()},
        user_limits=user_limits,
        policy=policy,
        weights=_weights(fields.mapping(sched, "weights", "scheduler.")),
        admin_users=tuple(fields.get(data, "admin_users", "", list, [])),
        sample_interval_s=fields.duration(acct, "sample_interval", "accounting") or 30.0,
        carbon_g_per_kwh=fields.get(acct, "carbon_g_per_kwh", "accounting", float, 0.0),
        requeue_on_layout_change=bool(fields.get(data, "requeue_on_layout_change", "", bool, True)),
        lifecycle_exempt=tuple(fields.get(lifecycle, "exempt_users", "lifecycle", list, [])),
        security=security_config(fields.mapping(data, "security", "")),
        **mig_auto(fields.mapping(data, "mig", "")),
        dispatch=dispatch_config(fields.mapping(data, "dispatch", "")),
        notify=notify_config(fields.mapping(data, "notify", "")),
        preempt_grace_s=_preempt_grace(sched),
    )


def _preempt_grace(sched: dict[str, Any]) -> float:
    """``scheduler.preempt_grace``: how long a preempted borrower has between its signal and SIGKILL."""
    v = fields.duration(sched, "preempt_grace", "scheduler")
    return 30.0 if v is None else v




class ConfigRef:
    """The daemon's current config, shared by the loop and the services. ``reload()`` reads
    the file again (``ds01q admin inventory refresh``, SIGHUP); nothing else changes it."""

    def __init__(self, config: Config) -> None:
        self.current = config

    def reload(self) -> Config:
        if self.current.path != "<config>":
            self.current = load(self.current.path)
        return self.current
