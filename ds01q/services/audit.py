"""Audit of every state-changing request: recorded after it is answered, listed for admins."""
from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.exc import OperationalError

from ds01q.db.audit import AuditEntry, entries
from ds01q.services.context import Caller, Context
from ds01q.services.validate import printable, strict_int
from ds01q.errors import RequestError
from ds01q.units import iso, parse_duration

log = logging.getLogger("ds01q.audit")

# Requests that change nothing; every other op (including unknown ones and refusals) is audited.
READ_ONLY = frozenset({"ping", "queue", "show", "wait", "history", "logs", "status", "limits", "report",
                       "admin.mig.plan", "admin.audit"})
_TARGET_KEYS = ("id", "ids", "user", "uuid", "uuids", "gpu", "boost", "name", "image")


def _target(args: dict[str, Any]) -> str | None:
    parts = {k: args[k] for k in _TARGET_KEYS if k in args and isinstance(args[k], (int, str, list))}
    if not parts:
        return None
    return printable(json.dumps(parts, separators=(",", ":"), default=str))[:200]


def _result(answer: dict[str, Any]) -> str:
    if answer.get("ok"):
        res = answer.get("result")
        if isinstance(res, dict) and "id" in res:
            return f"ok: job {res['id']}"
        if isinstance(res, list):
            return printable(("ok: " + json.dumps(res, separators=(",", ":"), default=str)))[:300]
        return "ok"
    err = answer.get("error") or {}
    return printable(f"{err.get('code', 'error')}: {err.get('message', '')}")[:300]


def record(ctx: Context, caller: Caller, op: Any, args: Any, answer: dict[str, Any]) -> None:
    """One row for a state-changing request. Never raises: a failed audit write is logged."""
    name = op if isinstance(op, str) else repr(op)
    if name in READ_ONLY:
        return
    try:
        with ctx.sessions.begin() as session:
            session.add(AuditEntry(at=ctx.clock.now(), uid=caller.uid, user=caller.user[:64],
                                   op=printable(name)[:64], target=_target(args if isinstance(args, dict) else {}),
                                   ok=bool(answer.get("ok")), result=_result(answer)))
    except OperationalError as e:  # the database locked, full or read-only: one line, no stack
        log.warning("audit record of %s by %s not written: %s", printable(name)[:64], caller.user,
                    " ".join(str(e.orig).split())[:200])
    except Exception:
        log.exception("audit record of %s by %s failed", printable(name)[:64], caller.user)


def audit(ctx: Context, caller: Caller, a: dict[str, Any]) -> list[dict[str, Any]]:
    """``ds01q admin audit``: the newest entries first."""
    ctx.require_admin(caller, "ds01q admin audit")
    user, op = a.get("user"), a.get("operation")
    if user is not None and not isinstance(user, str) or op is not None and not isinstance(op, str):
        raise RequestError("--user and --op must be names")
    since_s = parse_duration(a["since"]) if isinstance(a.get("since"), str) else None
    if a.get("since") is not None and since_s is None:
        raise RequestError("--since must be a duration like 2d or 12h")
    since = ctx.clock.now() - since_s if since_s is not None else None
    limit = strict_int(a, "limit", 100, 1, 100000)
    with ctx.sessions() as session:
        rows = entries(session, user=user, op=op, since=since, limit=limit)
    return [{"id": r.id, "at": iso(r.at), "uid": r.uid, "user": r.user, "op": r.op, "target": r.target,
             "ok": r.ok, "result": r.result} for r in rows]
