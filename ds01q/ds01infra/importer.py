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

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ds01q.ds01infra.files import exemptions, membership, user_overrides
from ds01q.ds01infra.limits import (
    AGGREGATE_KEY,
    DS01Q_GROUP_KEYS,
    DS01Q_LIMIT_KEYS,
    FALLBACKS,
    apply_aggregate,
    format_duration,
    is_number,
    layer_limits,
)
from ds01q.ds01infra.report import Conversion, Report
from ds01q.errors import ConfigError

__all__ = [
    "DS01Q_GROUP_KEYS",
    "DS01Q_LIMIT_KEYS",
    "FALLBACKS",
    "OTHER_PRIORITY",
    "TIER_PRIORITY",
    "Conversion",
    "convert",
    "format_duration",
    "render",
    "translate",
]

# ds01-infra has no priorities; ds01q orders groups by these (a group's own `priority` wins).
TIER_PRIORITY = {"admin": 40, "faculty": 30, "researcher": 20, "student": 10}
OTHER_PRIORITY = 10

_TOP_IGNORED = {
    "enforcement": "ds01q always runs jobs in its own cgroups and detects Docker's cgroup driver",
    "gpu_allocation": "ds01q reads the GPU and MIG layout from NVML (inventory.source)",
    "container_types": "every ds01q job goes through the queue; there are no external container types",
    "monitoring": "ds01q labels and exports its own containers",
    "policies": "ds01-infra's idle-detection and high-demand tuning; ds01q queues instead",
}
_BARE_METAL_IGNORED = "ds01q does not gate GPU use outside containers"


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


# ------------------------------------------------------------------ top level
def _admin_unix_group(data: dict[str, Any], rep: Report) -> str | None:
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


def _top_level(data: dict[str, Any], rep: Report) -> dict[str, Any]:
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
                    if not is_number(grace) or grace < 0:
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


def _groups(raw_groups: dict[str, dict[str, Any]], defaults: dict[str, Any], admin_unix: str | None,
            rep: Report) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(ds01q groups, each group's effective limits): defaults, then the group, then ds01-infra's fallbacks."""
    groups: dict[str, dict[str, Any]] = {}
    effective: dict[str, dict[str, Any]] = {}
    fallback_used: dict[str, list[str]] = {}
    tiered: list[str] = []
    for name, raw in raw_groups.items():
        merged = apply_aggregate({**defaults, **layer_limits(raw, f"groups.{name}", rep)}, f"groups.{name}", rep)
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
    return groups, effective


def translate(data: dict[str, Any], base_dir: Path, today: date | None = None) -> Conversion:
    """``convert`` with the report of what mapped, what was ignored and why."""
    if not isinstance(data, dict) or not isinstance(data.get("groups"), dict) or "defaults" not in data:
        raise ConfigError("not a ds01-infra resource-limits.yaml (needs top-level defaults: and groups: mappings)")
    defaults_raw = data.get("defaults") or {}
    if not isinstance(defaults_raw, dict):
        raise ConfigError(f"defaults: must be a mapping of limits, not {type(defaults_raw).__name__}")
    today = today or datetime.now(timezone.utc).date()
    base_dir = Path(base_dir)
    rep = Report()

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
    defaults = layer_limits(defaults_raw, "defaults", rep)
    admin_unix = _admin_unix_group(data, rep)
    extra = _top_level(data, rep)

    groups, effective = _groups(raw_groups, defaults, admin_unix, rep)

    member_of = membership(data, list(raw_groups), base_dir, rep)
    users: dict[str, dict[str, Any]] = {u: {"group": g} for u, g in member_of.items()}
    for user, (where, raw) in user_overrides(data, base_dir, rep).items():
        group = member_of.get(user, default_group)
        layer = layer_limits(raw, where, rep, per_user=True)
        if AGGREGATE_KEY in layer:
            base_cap = layer.get("max_gpus", effective[group]["max_gpus"])
            layer = apply_aggregate({**layer, "max_gpus": base_cap}, where, rep)
        users.setdefault(user, {"group": group}).update(layer)

    config: dict[str, Any] = {"inventory": {"source": "auto"}, "default_group": default_group}
    if "admin_users" in extra:
        config["admin_users"] = extra["admin_users"]
    config["groups"] = groups
    if users:
        config["users"] = users
    exempt = exemptions(base_dir, today, rep)
    if exempt:
        config["lifecycle"] = {"exempt_users": exempt}
    if "executor" in extra:
        config["executor"] = extra["executor"]
    rep.notes.append("inventory: ds01-infra has none; ds01q reads the GPUs and MIG slices itself (source: auto)")
    return rep.result(config)
