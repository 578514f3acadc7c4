"""ds01-infra's resource-limits.yaml (and the files beside it) → a ds01q config mapping.

``convert(data, base_dir)`` returns the mapping ``ds01q.config.from_dict`` takes;
``config.load`` calls it for a file with top-level ``defaults`` and ``groups`` but no
``inventory``, so a lab's ds01-infra file loads as it is. ``render`` returns the same
config as ds01q YAML text, headed by a comment listing what mapped and what was ignored
(``ds01q admin config import-ds01``). docs/ds01-infra-import.md has the key table.

ds01-infra semantics kept: a group inherits ``defaults`` (a shallow merge, so a group's
``aggregate`` replaces the defaults' one), ``null`` means unlimited, ``*_h`` durations are
float hours and 0 means no limit, a user listed in several ``*.members`` files belongs to
the first of those groups in ``groups`` order. One flaw fixed: a ``user-overrides.yaml``
entry adds to the user's group limits instead of replacing them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml

from ds01q.errors import ConfigError
from ds01q.units import parse_size

# ds01-infra has no priorities; ds01q orders groups by these (a group's own `priority` wins).
TIER_PRIORITY = {"admin": 40, "faculty": 30, "researcher": 20, "student": 10}
OTHER_PRIORITY = 10

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

_TOP_IGNORED = {
    "enforcement": "ds01q always runs jobs in its own cgroups and detects Docker's cgroup driver",
    "gpu_allocation": "ds01q reads the GPU and MIG layout from NVML (inventory.source)",
    "container_types": "every ds01q job goes through the queue; there are no external container types",
    "monitoring": "ds01q labels and exports its own containers",
    "policies": "ds01-infra's idle-detection and high-demand tuning; ds01q queues instead",
}
_BARE_METAL_IGNORED = "ds01q does not gate GPU use outside containers"


@dataclass(frozen=True)
class Conversion:
    """The ds01q config mapping plus what the import did, for the header and the CLI."""

    config: dict[str, Any]
    mapped: tuple[str, ...]
    ignored: tuple[str, ...]
    notes: tuple[str, ...]
    sources: tuple[str, ...]


def convert(data: dict[str, Any], base_dir: Path, today: date | None = None) -> dict[str, Any]:
    """The ds01q config mapping for a ds01-infra resource-limits.yaml mapping whose side files
    (groups/*.members, group-overrides.txt, user-overrides.yaml, lifecycle-exemptions.yaml)
    lie in or under ``base_dir``. ``today`` decides which lifecycle exemptions have expired
    (default: today in UTC)."""
    return translate(data, base_dir, today).config


def render(data: dict[str, Any], base_dir: Path, today: date | None = None, source: str | None = None) -> str:
    """``convert``'s result as ds01q YAML, headed by a comment listing mapped and ignored keys."""
    c = translate(data, base_dir, today)
    head = [f"# ds01q config converted from ds01-infra's {source or 'resource-limits.yaml'}",
            "# (ds01q admin config import-ds01; key table: docs/ds01-infra-import.md)"]
    if c.sources:
        head += ["#", "# Also read:"] + [f"#   {s}" for s in c.sources]
    head += ["#", "# Mapped:"] + [f"#   {line}" for line in c.mapped]
    head += ["#", "# Ignored:"] + ([f"#   {line}" for line in c.ignored] or ["#   nothing"])
    if c.notes:
        head += ["#", "# Notes:"] + [f"#   {line}" for line in c.notes]
    body = yaml.safe_dump(c.config, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)
    return "\n".join(head) + "\n\n" + body


# ------------------------------------------------------------------ report
class _Report:
    def __init__(self) -> None:
        self._mapped: dict[tuple[str, str], list[str]] = {}
        self._ignored: dict[tuple[str, str], list[str]] = {}
        self.notes: list[str] = []
        self.sources: list[str] = []

    def mapped(self, key: str, target: str, where: str) -> None:
        self._mapped.setdefault((key, target), []).append(where)

    def ignored(self, key: str, reason: str, where: str) -> None:
        self._ignored.setdefault((key, reason), []).append(where)

    @staticmethod
    def _lines(entries: dict[tuple[str, str], list[str]], sep: str) -> tuple[str, ...]:
        return tuple(f"{k}{sep}{v}  [{', '.join(dict.fromkeys(w))}]" for (k, v), w in entries.items())

    def result(self, config: dict[str, Any]) -> Conversion:
        return Conversion(config=config, mapped=self._lines(self._mapped, " -> "),
                          ignored=self._lines(self._ignored, ": "), notes=tuple(dict.fromkeys(self.notes)),
                          sources=tuple(self.sources))


# ------------------------------------------------------------------ values
def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _no_limit(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip().lower() in _NO_LIMIT_WORDS)


def _gpus(v: Any, where: str) -> float | None:
    if _no_limit(v):
        return None
    if _num(v) and v >= 0:
        return float(v)
    raise ConfigError(f"{where}: {v!r} is not a number of GPU-equivalents (null = unlimited)")


def _count(v: Any, where: str) -> int | None:
    if _no_limit(v):
        return None
    if _num(v) and v >= 0 and float(v).is_integer():
        return int(v)
    raise ConfigError(f"{where}: {v!r} is not a whole number (null = unlimited)")


def _cpus(v: Any, where: str) -> int | float | None:
    if v is None:
        return None
    if _num(v) and v > 0:
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
    if _num(v):
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
_AGG = "_aggregate_gpu_limit"  # internal: aggregate.gpu_limit of one layer


def _layer(d: dict[str, Any], where: str, rep: _Report, per_user: bool = False) -> dict[str, Any]:
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
        out[_AGG] = _gpus(agg.get("gpu_limit"), f"{where}.aggregate.gpu_limit")
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


def _apply_aggregate(limits: dict[str, Any], where: str, rep: _Report) -> dict[str, Any]:
    """aggregate.gpu_limit is per user in ds01-infra (one systemd slice per user): the lower of it
    and max_gpu_equivalents is the user's GPU cap."""
    limits = dict(limits)
    agg = limits.pop(_AGG, None)
    if agg is not None:
        quota = limits.get("max_gpus", FALLBACKS["max_gpus"])
        cap = agg if quota is None else min(quota, agg)
        if quota is not None and cap != quota:
            rep.notes.append(f"{where}: max_gpus {cap:g} is aggregate.gpu_limit, lower than max_gpu_equivalents "
                             f"{quota:g}")
        limits["max_gpus"] = cap
    return limits


# ------------------------------------------------------------------ side files
def _candidate_dirs(base_dir: Path, parent_ok: bool) -> list[Path]:
    dirs = [base_dir, base_dir / "runtime"]
    if parent_ok and base_dir.name == "runtime":  # ds01-infra HEAD: config/runtime/*, config/group-overrides.txt
        dirs.append(base_dir.parent)
    return dirs


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text") from None


def _find(base_dir: Path, name: str, rep: _Report, parent_ok: bool = False) -> Path | None:
    found = [d / name for d in _candidate_dirs(base_dir, parent_ok) if (d / name).is_file()]
    if not found:
        return None
    for other in found[1:]:
        rep.notes.append(f"{other} not read: {found[0]} is used (the one nearest resource-limits.yaml)")
    rep.sources.append(str(found[0]))
    return found[0]


def _yaml_file(path: Path) -> Any:
    try:
        return yaml.safe_load(_read(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None


def _members(path: Path) -> list[str]:
    """One user per line; `#` starts a comment (as ds01-infra reads it)."""
    return [u for u in (line.split("#", 1)[0].strip() for line in _read(path).splitlines()) if u]


def _membership(data: dict[str, Any], groups: list[str], base_dir: Path, rep: _Report) -> dict[str, str]:
    files: dict[str, list[Path]] = {}
    for d in (base_dir / "groups", base_dir / "runtime" / "groups"):
        if d.is_dir():
            for f in sorted(d.glob("*.members")):
                if f.stem in groups:
                    files.setdefault(f.stem, []).append(f)
                else:
                    rep.ignored(f.name, "no such group in resource-limits.yaml (ds01-infra does not read it either)",
                                str(d))
    member_of: dict[str, str] = {}
    for g in groups:
        inline = (data["groups"].get(g) or {}).get("members") or []
        if not isinstance(inline, list):
            raise ConfigError(f"groups.{g}.members: must be a list of user names")
        if inline:
            rep.mapped("members", "users.<user>.group", f"groups.{g}")
        listed = [str(u) for u in inline]
        for f in files.get(g, []):
            rep.sources.append(str(f))
            listed += _members(f)
        for u in listed:
            first = member_of.setdefault(u, g)
            if first != g:
                rep.notes.append(f"{u} is listed in {first} and {g}: {first} is used (the first in groups order, "
                                 f"as in ds01-infra)")
    path = _find(base_dir, "group-overrides.txt", rep, parent_ok=True)
    if path is not None:
        for n, raw in enumerate(_read(path).splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            user, sep, group = (s.strip() for s in line.rpartition(":"))
            if not sep or not user or not group:
                raise ConfigError(f"{path}:{n}: {line!r} is not user:group")
            if group not in groups:
                rep.notes.append(f"{path.name}:{n}: {group!r} is not a group; {user} keeps their members-file group")
                continue
            member_of[user] = group
    return member_of


def _user_overrides(data: dict[str, Any], base_dir: Path, rep: _Report) -> dict[str, tuple[str, dict[str, Any]]]:
    """{user: (where, raw override)}: inline `user_overrides`, then user-overrides.yaml (which wins)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    sources: list[tuple[str, Any]] = [("user_overrides", data.get("user_overrides"))]
    if data.get("user_overrides"):
        rep.mapped("user_overrides", "users.<user> (merged over the user's group)", "top level")
    path = _find(base_dir, "user-overrides.yaml", rep)
    if path is not None:
        sources.append((path.name, _yaml_file(path)))
    for label, table in sources:
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{label}: must be a mapping of user names to limits")
        for user, d in table.items():
            if d is None:
                continue
            if not isinstance(d, dict):
                raise ConfigError(f"{label}: {user}: must be a mapping of limits, not {type(d).__name__}")
            found[str(user)] = (f"{label}: {user}", d)
    return found


def _expiry(v: Any, where: str) -> date | None:
    if v is None or (isinstance(v, str) and v.strip().lower() in ("", "null", "never")):
        return None
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v.strip())
        except ValueError:
            raise ConfigError(f"{where}: {v!r} is not an ISO date like 2026-06-30 or 2026-06-30T23:59:59Z") from None
    if isinstance(v, datetime):
        return (v.astimezone(timezone.utc) if v.tzinfo else v).date()
    if isinstance(v, date):
        return v
    raise ConfigError(f"{where}: {v!r} is not an ISO date like 2026-06-30 (null = permanent)")


def _exemptions(base_dir: Path, today: date, rep: _Report) -> list[str]:
    path = _find(base_dir, "lifecycle-exemptions.yaml", rep)
    if path is None:
        return []
    doc = _yaml_file(path) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("exemptions") or [], list):
        raise ConfigError(f"{path}: must be a mapping with an exemptions: list")
    users: list[str] = []
    for i, e in enumerate(doc.get("exemptions") or []):
        where = f"{path.name}: exemptions[{i}]"
        if not isinstance(e, dict) or not e.get("username"):
            raise ConfigError(f"{where}: must be a mapping with a username")
        user = str(e["username"])
        expires = _expiry(e.get("expires_on"), f"{where}.expires_on")
        if expires is not None and expires < today:
            rep.notes.append(f"lifecycle exemption of {user} expired on {expires.isoformat()}: not applied")
            continue
        users.append(user)
        rep.mapped("exemptions[].username", "lifecycle.exempt_users", path.name)
        if "exempt_from" in e:
            rep.ignored("exemptions[].exempt_from", "ds01q's lifecycle.exempt_users is one list for all "
                        "lifecycle enforcement", path.name)
        if expires is not None:
            rep.notes.append(f"lifecycle exemption of {user} lasts until {expires.isoformat()}: load the config again "
                             f"after that day to end it")
    return list(dict.fromkeys(users))


# ------------------------------------------------------------------ top level
def _admin_unix_group(data: dict[str, Any], rep: _Report) -> str | None:
    chosen: str | None = None
    for section in ("access_control", "bare_metal_access"):
        sec = data.get(section)
        if not isinstance(sec, dict) or not sec.get("admin_group"):
            continue
        value = str(sec["admin_group"])
        if chosen is None:
            chosen = value
        if value == chosen:
            rep.mapped(f"{section}.admin_group", "groups.admin.unix_group", section)
        else:
            rep.ignored(f"{section}.admin_group", f"access_control.admin_group ({chosen}) is used", section)
    return chosen


def _top_level(data: dict[str, Any], rep: _Report) -> dict[str, Any]:
    """admin_users, executor.stop_grace and the ignored sections."""
    extra: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if key in ("defaults", "groups", "default_group", "user_overrides"):
            continue
        if key in ("access_control", "bare_metal_access", "policies") and value is not None \
                and not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, not {type(value).__name__}")
        if key == "access_control" and isinstance(value, dict):
            admins = value.get("admin_users") or []
            if not isinstance(admins, list):
                raise ConfigError("access_control.admin_users: must be a list of user names")
            if admins:
                extra["admin_users"] = [str(u) for u in admins]
                rep.mapped("access_control.admin_users", "admin_users", key)
            for k in value:
                if k not in ("admin_users", "admin_group"):
                    rep.ignored(f"access_control.{k}", "ds01q's API checks every caller; there is no docker wrapper",
                                key)
        elif key == "bare_metal_access" and isinstance(value, dict):
            for k in value:
                if k != "admin_group":
                    rep.ignored(f"bare_metal_access.{k}", _BARE_METAL_IGNORED, key)
        elif key == "policies" and isinstance(value, dict):
            for k in value:
                if k == "sigterm_grace_s":
                    grace = value[k]
                    if not _num(grace) or grace < 0:
                        raise ConfigError(f"policies.sigterm_grace_s: {grace!r} is not a number of seconds")
                    extra["executor"] = {"stop_grace": f"{int(grace) if float(grace).is_integer() else grace}s"}
                    rep.mapped("policies.sigterm_grace_s", "executor.stop_grace", key)
                else:
                    rep.ignored(f"policies.{k}", _TOP_IGNORED["policies"], key)
        elif key in _TOP_IGNORED:
            rep.ignored(key, _TOP_IGNORED[key], "top level")
        else:
            rep.ignored(key, "unknown key", "top level")
    return extra


def translate(data: dict[str, Any], base_dir: Path, today: date | None = None) -> Conversion:
    """``convert`` with the report of what mapped, what was ignored and why."""
    if not isinstance(data, dict) or not isinstance(data.get("groups"), dict) or "defaults" not in data:
        raise ConfigError("not a ds01-infra resource-limits.yaml (needs top-level defaults: and groups: mappings)")
    defaults_raw = data.get("defaults") or {}
    if not isinstance(defaults_raw, dict):
        raise ConfigError(f"defaults: must be a mapping of limits, not {type(defaults_raw).__name__}")
    today = today or datetime.now(timezone.utc).date()
    base_dir = Path(base_dir)
    rep = _Report()

    raw_groups: dict[str, dict[str, Any]] = {}
    for name, g in data["groups"].items():
        if g is not None and not isinstance(g, dict):
            raise ConfigError(f"groups.{name}: must be a mapping of limits, not {type(g).__name__}")
        raw_groups[str(name)] = g or {}
    default_group = data.get("default_group", "student")
    if not isinstance(default_group, str) or not default_group:
        raise ConfigError(f"default_group: {default_group!r} is not a group name")
    if default_group not in raw_groups:
        raw_groups[default_group] = {}
        rep.notes.append(f"default_group {default_group!r} has no groups entry: it gets the defaults only "
                         f"(as in ds01-infra)")
    data = {**data, "groups": raw_groups}

    rep.mapped("defaults", "every group (a group inherits each key it does not set)", "top level")
    rep.mapped("default_group", "default_group", "top level")
    defaults = _layer(defaults_raw, "defaults", rep)
    admin_unix = _admin_unix_group(data, rep)
    extra = _top_level(data, rep)

    groups: dict[str, dict[str, Any]] = {}
    effective: dict[str, dict[str, Any]] = {}
    fallback_used: dict[str, list[str]] = {}
    tiered: list[str] = []
    for name, raw in raw_groups.items():
        merged = _apply_aggregate({**defaults, **_layer(raw, f"groups.{name}", rep)}, f"groups.{name}", rep)
        for key, value in FALLBACKS.items():
            if key not in merged:
                merged[key] = value
                fallback_used.setdefault(f"{key} {value}", []).append(name)
        effective[name] = merged
        out: dict[str, Any] = {"priority": merged.pop("priority", None)}
        if out["priority"] is None:
            out["priority"] = TIER_PRIORITY.get(name.lower(), OTHER_PRIORITY)
            tiered.append(f"{name} {out['priority']}")
        if name == "admin":
            out["admin"] = True
            if admin_unix and "unix_group" not in merged:
                out["unix_group"] = admin_unix
        out.update(merged)
        groups[name] = out
    if tiered:
        rep.notes.append(f"priority: ds01-infra has none, so groups are ranked by tier ({', '.join(tiered)}; "
                         f"admin 40, faculty 30, researcher 20, student 10, any other 10)")
    for what, names in fallback_used.items():
        rep.notes.append(f"{what}: set in neither defaults nor the group, ds01-infra's built-in value is used "
                         f"({', '.join(names)})")
    if admin_unix and "admin" not in groups:
        rep.notes.append(f"admin_group {admin_unix!r}: there is no admin group to give it to")

    member_of = _membership(data, list(raw_groups), base_dir, rep)
    users: dict[str, dict[str, Any]] = {u: {"group": g} for u, g in member_of.items()}
    for user, (where, raw) in _user_overrides(data, base_dir, rep).items():
        group = member_of.get(user, default_group)
        layer = _layer(raw, where, rep, per_user=True)
        if _AGG in layer:
            base_cap = layer.get("max_gpus", effective[group]["max_gpus"])
            layer = _apply_aggregate({**layer, "max_gpus": base_cap}, where, rep)
        users.setdefault(user, {"group": group}).update(layer)

    config: dict[str, Any] = {"inventory": {"source": "auto"}, "default_group": default_group}
    if "admin_users" in extra:
        config["admin_users"] = extra["admin_users"]
    config["groups"] = groups
    if users:
        config["users"] = users
    exempt = _exemptions(base_dir, today, rep)
    if exempt:
        config["lifecycle"] = {"exempt_users": exempt}
    if "executor" in extra:
        config["executor"] = extra["executor"]
    rep.notes.append("inventory: ds01-infra has none; ds01q reads the GPUs and MIG slices itself (source: auto)")
    return rep.result(config)
