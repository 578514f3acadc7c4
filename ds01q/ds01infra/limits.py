"""ds01-infra limit values and layers → ds01q group and user keys.

A layer is one mapping of limits: ``defaults``, a group, or a user override.
``layer_limits`` turns one into ds01q keys through ``_TABLE`` (ds01-infra's aliases,
in the order ds01-infra reads them) and reports what mapped and what was ignored;
``apply_aggregate`` folds ds01-infra's per-user ``aggregate.gpu_limit`` into ``max_gpus``.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ds01q.ds01infra.report import Report
from ds01q.errors import ConfigError
from ds01q.units import parse_size

__all__ = [
    "AGGREGATE_KEY",
    "DS01Q_GROUP_KEYS",
    "DS01Q_LIMIT_KEYS",
    "FALLBACKS",
    "apply_aggregate",
    "format_duration",
    "is_number",
    "layer_limits",
]

# ds01q's group and user keys (ds01q.config.GROUP_KEYS / LIMIT_KEYS), kept as they are when
# they appear in a ds01-infra file.
DS01Q_LIMIT_KEYS = frozenset({
    "max_gpus", "max_slices", "max_running_jobs", "max_queued_jobs", "max_interactive", "max_runtime",
    "max_slices_per_job", "allowed_profiles", "allow_full_gpu",
})
DS01Q_GROUP_KEYS = DS01Q_LIMIT_KEYS | {
    "priority", "admin", "share", "idle_timeout", "cpus", "mem", "pids_limit", "shm_size", "default_request",
    "unix_group", "group_max_gpus",
}

# What ds01-infra itself assumes when no layer sets a key (gpu_allocator_v2, get_resource_limits).
FALLBACKS: dict[str, Any] = {
    "max_gpus": 1.0, "max_slices_per_job": 1, "max_running_jobs": 3,
    "cpus": 16, "mem": "32g", "shm_size": "16g", "pids_limit": 4096,
}

_NO_LIMIT_WORDS = {"", "null", "none", "never", "indefinite", "unlimited"}
_DURATION = re.compile(r"^(\d*\.?\d+)\s*([smhdw]?)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_IGNORED_LIMIT_KEYS = {
    "memory_swap": "ds01q sets memory-swap = memory (no swap)",
    "max_tasks": "TasksMax of ds01-infra's user slice; ds01q caps each job with pids_limit",
    "gpu_hold_after_stop_h": "ds01q frees a job's slices when it ends; no stopped container holds a GPU",
    "gpu_hold_after_stop": "ds01q frees a job's slices when it ends; no stopped container holds a GPU",
    "container_hold_after_stop_h": "ds01q removes a job's container when the job ends",
    "container_hold_after_stop": "ds01q removes a job's container when the job ends",
    "policies": "ds01-infra's idle-detection thresholds; ds01q measures idleness itself",
    "gpu_memory": "not enforced by ds01-infra either",
    "ulimit_nofile": "not enforced by ds01-infra either",
}
_IGNORED_PREFIXES = {
    "storage_": "storage quotas are not enforced by ds01-infra either",
    "io_": "I/O limits are not enforced by ds01-infra either",
}
_AGGREGATE_IGNORED = "a limit of ds01-infra's per-user systemd slice; ds01q limits each job instead"
_PER_GROUP_ONLY = "ds01q sets this per group, not per user"


# ------------------------------------------------------------------ values
def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _no_limit(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip().lower() in _NO_LIMIT_WORDS)


def _gpus(v: Any, where: str) -> float | None:
    if _no_limit(v):
        return None
    if is_number(v) and v >= 0:
        return float(v)
    raise ConfigError(f"{where}: {v!r} is not a number of GPU-equivalents (null = unlimited)")


def _count(v: Any, where: str) -> int | None:
    if _no_limit(v):
        return None
    if is_number(v) and v >= 0 and float(v).is_integer():
        return int(v)
    raise ConfigError(f"{where}: {v!r} is not a whole number (null = unlimited)")


def _cpus(v: Any, where: str) -> int | float | None:
    if v is None:
        return None
    if is_number(v) and v > 0:
        return int(v) if float(v).is_integer() else float(v)
    raise ConfigError(f"{where}: {v!r} is not a number of CPUs")


def _size(v: Any, where: str) -> str | int | None:
    if v is None:
        return None
    if parse_size(v) is None:
        raise ConfigError(f"{where}: {v!r} is not a size like 512m, 32g")
    return v.strip() if isinstance(v, str) else v


def _bool(v: Any, where: str) -> bool:
    if isinstance(v, bool):
        return v
    raise ConfigError(f"{where}: {v!r} is not true or false")


def _int(v: Any, where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise ConfigError(f"{where}: {v!r} is not a whole number")


def _seconds(v: Any, where: str) -> float | None:
    """ds01-infra durations: float hours (also in the older `max_runtime`/`idle_timeout` keys),
    or a string with a unit (30m, 24h, 2d, 1w). null, 0 and 'never' mean no limit."""
    if _no_limit(v):
        return None
    if is_number(v):
        if v < 0:
            raise ConfigError(f"{where}: {v!r} must be >= 0 (null = no limit)")
        return float(v) * 3600 or None
    if isinstance(v, str):
        m = _DURATION.match(v.strip().lower())
        if m:
            return float(m.group(1)) * _UNIT_S[m.group(2) or "h"] or None
    raise ConfigError(f"{where}: {v!r} is not a number of hours or a duration like 30m, 24h (null = no limit)")


def format_duration(seconds: float | None) -> str | None:
    """A ds01q duration string that keeps ds01-infra's hours readable: 24h, 72h, 90m, 45s."""
    if seconds is None:
        return None
    s = max(1, round(seconds))
    if s % 3600 == 0:
        return f"{s // 3600}h"
    if s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"


def _duration(v: Any, where: str) -> str | None:
    return format_duration(_seconds(v, where))


# (ds01q key, ds01-infra keys in the order ds01-infra reads them, converter)
_TABLE: tuple[tuple[str, tuple[str, ...], Callable[[Any, str], Any]], ...] = (
    ("max_gpus", ("max_gpu_equivalents", "max_gpu_slots", "max_gpus_per_user", "max_mig_instances"), _gpus),
    ("max_slices_per_job", ("max_gpu_slots_per_container", "max_gpus_per_container", "max_mig_per_container"),
     _count),
    ("allow_full_gpu", ("allow_full_gpu",), _bool),
    ("cpus", ("max_cpus", "cpus"), _cpus),
    ("mem", ("memory",), _size),
    ("shm_size", ("shm_size",), _size),
    ("pids_limit", ("pids_limit",), _count),
    ("max_running_jobs", ("max_containers_per_user",), _count),
    ("max_runtime", ("max_runtime_h", "max_runtime"), _duration),
    ("idle_timeout", ("idle_timeout_h", "idle_timeout"), _duration),
    ("priority", ("priority",), _int),
)
_TABLE_KEYS = {k for _, keys, _ in _TABLE for k in keys}
AGGREGATE_KEY = "_aggregate_gpu_limit"  # internal: aggregate.gpu_limit of one layer


def layer_limits(d: dict[str, Any], where: str, rep: Report, per_user: bool = False) -> dict[str, Any]:
    """One mapping (defaults, a group or, with per_user, a user override) in ds01q keys. Aliases
    are resolved within the mapping, so a group's legacy key still overrides the defaults' new one."""
    out: dict[str, Any] = {}
    for target, keys, conv in _TABLE:
        present = [k for k in keys if k in d]
        if not present:
            continue
        key = present[0]
        if per_user and target not in DS01Q_LIMIT_KEYS:
            rep.ignored(key, _PER_GROUP_ONLY, where)
            continue
        value = conv(d[key], f"{where}.{key}")
        if target == "pids_limit" and value is None:
            rep.notes.append(f"{where}.pids_limit: null cannot be unlimited in ds01q; its default 4096 applies")
        else:
            out[target] = value
        rep.mapped(key, target, where)
        for shadowed in present[1:]:
            rep.ignored(shadowed, f"{key} is also set and wins", where)
    if "aggregate" in d:
        agg = d["aggregate"] or {}
        if not isinstance(agg, dict):
            raise ConfigError(f"{where}.aggregate: must be a mapping, not {type(agg).__name__}")
        out[AGGREGATE_KEY] = _gpus(agg.get("gpu_limit"), f"{where}.aggregate.gpu_limit")
        if "gpu_limit" in agg:
            rep.mapped("aggregate.gpu_limit", "max_gpus (per user; the lower of the two)", where)
        for k in agg:
            if k != "gpu_limit":
                rep.ignored(f"aggregate.{k}", _AGGREGATE_IGNORED, where)
    for k, v in d.items():
        k = str(k)
        if k in _TABLE_KEYS or k in ("aggregate", "members"):
            continue
        if k in _IGNORED_LIMIT_KEYS:
            rep.ignored(k, _IGNORED_LIMIT_KEYS[k], where)
        elif any(k.startswith(p) for p in _IGNORED_PREFIXES):
            rep.ignored(k, next(r for p, r in _IGNORED_PREFIXES.items() if k.startswith(p)), where)
        elif k in DS01Q_GROUP_KEYS and per_user and k not in DS01Q_LIMIT_KEYS:
            rep.ignored(k, _PER_GROUP_ONLY, where)
        elif k in DS01Q_GROUP_KEYS:
            out[k] = v
            rep.mapped(k, f"{k} (a ds01q key, kept)", where)
        else:
            rep.ignored(k, "unknown key", where)
    return out


def apply_aggregate(limits: dict[str, Any], where: str, rep: Report) -> dict[str, Any]:
    """aggregate.gpu_limit is per user in ds01-infra (one systemd slice per user): the lower of it
    and max_gpu_equivalents is the user's GPU cap."""
    limits = dict(limits)
    agg = limits.pop(AGGREGATE_KEY, None)
    if agg is not None:
        quota = limits.get("max_gpus", FALLBACKS["max_gpus"])
        cap = agg if quota is None else min(quota, agg)
        if quota is not None and cap != quota:
            rep.notes.append(f"{where}: max_gpus {cap:g} is aggregate.gpu_limit, lower than max_gpu_equivalents "
                             f"{quota:g}")
        limits["max_gpus"] = cap
    return limits
