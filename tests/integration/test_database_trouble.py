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


def _writes(tmp_path: Path):  # type: ignore[no-untyped-def]
    from ds01q.db.engine import make_sessionmaker
    engine = make_engine(f"sqlite:///{tmp_path}/w.db")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT)"))
    return engine, make_sessionmaker(engine)


def test_writers_of_one_process_take_turns(tmp_path: Path) -> None:
    """A second write transaction of the same process starts only when the first has ended (handed over
    by a lock, not by SQLite's busy handler, which sleeps between tries)."""
    import threading
    engine, sessions = _writes(tmp_path)
    seen: list[str] = []
    holding, go_on = threading.Event(), threading.Event()

    def first() -> None:
        with sessions.begin() as s:
            s.execute(text("INSERT INTO t VALUES ('first')"))
            holding.set()
            go_on.wait(10)
            seen.append("first ends")

    def second() -> None:
        with sessions.begin() as s:
            seen.append("second begins")
            s.execute(text("INSERT INTO t VALUES ('second')"))

    a = threading.Thread(target=first)
    a.start()
    assert holding.wait(10)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.5)  # without the lock the second transaction would begin now
    with sessions() as s:  # reads take no lock
        assert s.execute(text("SELECT count(*) FROM t")).scalar() == 0
    go_on.set()
    a.join(10)
    b.join(10)
    assert seen == ["first ends", "second begins"]
    with sessions() as s:
        assert s.execute(text("SELECT who FROM t ORDER BY rowid")).scalars().all() == ["first", "second"]
    engine.dispose()


def test_a_writer_waiting_for_another_of_its_process_gets_the_busy_error(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import threading

    from sqlalchemy.exc import OperationalError

    from ds01q.services.dbguard import describe
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "200")
    engine, sessions = _writes(tmp_path)
    holding, go_on = threading.Event(), threading.Event()

    def hold() -> None:
        with sessions.begin() as s:
            s.execute(text("INSERT INTO t VALUES ('holder')"))
            holding.set()
            go_on.wait(10)

    a = threading.Thread(target=hold)
    a.start()
    assert holding.wait(10)
    try:
        try:
            with sessions.begin():
                raise AssertionError("entered while another writer of this process held the database")
        except OperationalError as e:
            assert describe(e) == "the database is busy (another writer holds it); nothing was changed, try again"
    finally:
        go_on.set()
        a.join(10)
    with sessions.begin() as s:  # free again
        s.execute(text("INSERT INTO t VALUES ('after')"))
    engine.dispose()
