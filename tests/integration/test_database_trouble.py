"""Database trouble: durable commits, a locked database answered in bounded time with one line."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from ds01q.daemon.server import handle
from ds01q.db.engine import BUSY_TIMEOUT_ENV, BUSY_TIMEOUT_MS, make_engine
from ds01q.errors import ConfigError
from tests.controller.test_controller import ROOT, Harness


def test_sqlite_commits_are_durable(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/d.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


def test_the_busy_timeout_is_ten_seconds_unless_the_environment_says(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BUSY_TIMEOUT_ENV, raising=False)
    for env, want in ((None, BUSY_TIMEOUT_MS), ("2500", 2500)):
        if env is not None:
            monkeypatch.setenv(BUSY_TIMEOUT_ENV, env)
        engine = make_engine(f"sqlite:///{tmp_path}/b.db")
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == want
        engine.dispose()
    assert BUSY_TIMEOUT_MS == 10_000
    for bad in ("2s", "0", "-1"):
        monkeypatch.setenv(BUSY_TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match="must be milliseconds from 1 to 600000"):
            make_engine(f"sqlite:///{tmp_path}/b.db")


def test_a_locked_database_is_one_line_in_bounded_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "3000")  # 10 s in production
    h = Harness(tmp_path, f"sqlite:///{tmp_path}/t.db")
    try:
        blocker = sqlite3.connect(f"{tmp_path}/t.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        t0 = time.monotonic()
        resp = handle(h.ctx, ROOT, {"op": "submit", "args": {"script": "echo hi\n", "workdir": str(tmp_path)}})
        waited = time.monotonic() - t0
        assert resp == {"ok": False, "error": {"code": "unavailable", "message":
                        "the database is busy (another writer holds it); nothing was changed, try again"}}
        assert waited < 3 + 5
        reads = handle(h.ctx, ROOT, {"op": "queue", "args": {}})  # reads go on (WAL)
        assert reads["ok"] is True
        blocker.execute("ROLLBACK")
        ok = handle(h.ctx, ROOT, {"op": "submit", "args": {"script": "echo hi\n", "workdir": str(tmp_path)}})
        assert ok["ok"] is True  # writes resume once the lock is gone
        blocker.close()
    finally:
        h.engine.dispose()
