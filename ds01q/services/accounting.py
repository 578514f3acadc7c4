"""`ds01q report` (usage like sreport) and `ds01q admin accounting rollup`."""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any

from ds01q.accounting.report import BY, ReportQuery, build_report
from ds01q.accounting.rollup import PERIODS, check_period, date_start, floor_period, rollup
from ds01q.errors import PermissionDenied, RequestError
from ds01q.services.context import Caller, Context
from ds01q.units import parse_duration

DEFAULT_WINDOW_DAYS = 30
MAX_TOP = 10_000
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _time(value: Any, name: str, now: float) -> float:
    """A date (00:00 UTC), an ISO time (naive = UTC), or a duration back from now (7d, 12h)."""
    if isinstance(value, str) and value.strip():
        v = value.strip()
        try:
            if _DATE.match(v):
                return date_start(date.fromisoformat(v))
            t = datetime.fromisoformat(v.replace("Z", "+00:00"))
            return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
        except ValueError:
            d = parse_duration(v)
            if d is not None:
                return now - d
    raise RequestError(f"--{name} {value!r} is not a date (2026-11-29), a time (2026-11-29T12:00Z) "
                       "or a duration back from now (7d)")


def _choice(value: Any, name: str, allowed: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if value not in allowed:
        raise RequestError(f"--{name} {value} is not allowed (allowed: {', '.join(allowed)})")
    return str(value)


def report_query(caller: Caller, a: dict[str, Any], now: float) -> ReportQuery:
    by = _choice(a.get("by"), "by", BY, "user")
    period = _choice(a.get("period"), "period", PERIODS, "day")
    until = _time(a["until"], "until", now) if a.get("until") is not None else now
    since = (_time(a["since"], "since", now) if a.get("since") is not None
             else floor_period("day", now) - DEFAULT_WINDOW_DAYS * 86400.0)
    if since >= until:
        raise RequestError("--since must be before --until")
    top = a.get("top")
    if top is not None:
        if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= MAX_TOP:
            raise RequestError(f"--top {top!r} must be a whole number from 1 to {MAX_TOP}")
        if by == "group":
            raise RequestError("--top ranks users (allowed with --by user, cgroup or period)")
    user = a.get("user")
    if user is not None and (not isinstance(user, str) or not user or len(user) > 128):
        raise RequestError("--user must be a user name")
    if not caller.admin:
        if user not in (None, caller.user):
            raise PermissionDenied("you may report only your own usage; admins may report anyone's")
        user = caller.user
    return ReportQuery(since=since, until=until, by=by, period=period, top=top, user=user)


def report(ctx: Context, caller: Caller, a: dict[str, Any]) -> list[dict[str, Any]]:
    """Usage by user, group, cgroup or period over a window (default: the last 30 days)."""
    now = ctx.clock.now()
    q = report_query(caller, a, now)
    with ctx.sessions() as session:
        return build_report(session, q, now, carbon_g_per_kwh=ctx.config.carbon_g_per_kwh,
                            cgroup_root=ctx.config.executor.cgroup_root)


def rollup_op(ctx: Context, caller: Caller, a: dict[str, Any]) -> dict[str, Any]:
    """Roll job records up by day or month (admins; cron runs it nightly)."""
    ctx.require_admin(caller, "ds01q admin accounting rollup")
    period = check_period(a.get("period") or "day")
    until = None
    if a.get("until") is not None:
        if not isinstance(a["until"], str) or not _DATE.match(a["until"].strip()):
            raise RequestError(f"--until {a['until']!r} is not a date like 2026-11-29")
        try:
            until = date.fromisoformat(a["until"].strip())
        except ValueError:
            raise RequestError(f"--until {a['until']!r} is not a date like 2026-11-29") from None
    return rollup(ctx.sessions, period, until, ctx.clock.now(), rebuild=bool(a.get("rebuild"))).to_dict()
