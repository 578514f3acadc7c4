"""The files beside ds01-infra's resource-limits.yaml that ``translate`` reads.

``groups/*.members`` and ``group-overrides.txt`` (who is in which group),
``user-overrides.yaml`` (per-user limits) and ``lifecycle-exemptions.yaml``, each
looked for under ``base_dir`` and ``base_dir/runtime`` (group-overrides.txt also in
the parent of a ``runtime`` folder, as ds01-infra HEAD lays them out). Every file
read is listed in the report's sources.
"""
from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ds01q.ds01infra.report import Report
from ds01q.errors import ConfigError

__all__ = ["exemptions", "membership", "user_overrides"]


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


def _find(base_dir: Path, name: str, rep: Report, parent_ok: bool = False) -> Path | None:
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


def membership(data: dict[str, Any], groups: list[str], base_dir: Path, rep: Report) -> dict[str, str]:
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


def user_overrides(data: dict[str, Any], base_dir: Path, rep: Report) -> dict[str, tuple[str, dict[str, Any]]]:
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


def exemptions(base_dir: Path, today: date, rep: Report) -> list[str]:
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
