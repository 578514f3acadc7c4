"""Database trouble as one line: a locked, full or read-only database never shows the user
a driver message ("database is locked") or a traceback, and never hangs a request for ever
(SQLite's busy timeout bounds each wait; PostgreSQL's lock_timeout is the operator's)."""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError, TimeoutError as PoolTimeout

from ds01q.errors import ServerUnavailable

log = logging.getLogger("ds01q.services")
F = TypeVar("F", bound=Callable[..., Any])


def describe(e: BaseException) -> str:
    text = str(getattr(e, "orig", e)).lower()
    if "locked" in text or "busy" in text or isinstance(e, PoolTimeout):
        return "the database is busy (another writer holds it); nothing was changed, try again"
    if "full" in text or "no space" in text:
        return "the database's disk is full; nothing was changed (an admin must free space)"
    if "readonly" in text or "read-only" in text or "read only" in text:
        return "the database is read-only; nothing was changed (an admin must fix it)"
    return "the database cannot be reached; nothing was changed, try again"


def db_guarded(fn: F) -> F:
    """Wrap a service op: database errors become one-line ServerUnavailable (the client retries
    idempotent submits on it)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except (OperationalError, PoolTimeout) as e:
            log.warning("database error in %s: %s", getattr(fn, "__name__", "op"), " ".join(str(e).split())[:300])
            raise ServerUnavailable(describe(e)) from None
        except DBAPIError as e:
            if e.connection_invalidated:
                raise ServerUnavailable(describe(e)) from None
            raise

    return wrapper  # type: ignore[return-value]
