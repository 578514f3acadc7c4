"""Migration 0005b_once on a database that already holds jobs: rows, events and allocations
survive the SQLite rebuild, ids are never reused afterwards, and submit keys are unique per user."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from ds01q.db.engine import make_engine, upgrade


def _insert_job(conn, user: str = "u", key: str | None = None) -> int:  # type: ignore[no-untyped-def]
    conn.execute(text(
        "INSERT INTO jobs (name, user, uid, gid, \"group\", state, request, time_limit_s, image, workdir, "
        "submitted_at, priority, boost, nice, interactive, args, env, eligible_at, requeue_count, "
        "requeue_on_layout_change, depends_on" + (", submit_key" if key else "") + ") VALUES "
        "('j', :u, 1, 1, 'g', 'COMPLETED', '{}', 60, 'img', '/tmp', 1, 0, 0, 0, 0, '[]', '{}', 0, 0, 1, '[]'"
        + (", :k" if key else "") + ")"), {"u": user, "k": key})
    return int(conn.execute(text("SELECT max(id) FROM jobs")).scalar_one())


def test_upgrade_keeps_rows_and_never_reuses_an_id(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    upgrade(url, "0004")
    engine = make_engine(url)
    with engine.begin() as conn:
        ids = [_insert_job(conn) for _ in range(3)]
        conn.execute(text("INSERT INTO job_events (job_id, at, state, by) VALUES (:j, 1, 'PENDING', 'x')"),
                     {"j": ids[2]})
    engine.dispose()
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        assert [r[0] for r in conn.execute(text("SELECT id FROM jobs ORDER BY id"))] == ids
        assert conn.execute(text("SELECT count(*) FROM job_events WHERE job_id = :j"), {"j": ids[2]}).scalar() == 1
        assert conn.execute(text("SELECT launch_attempt FROM jobs WHERE id = :j"), {"j": ids[0]}).scalar() == 0
        conn.execute(text("DELETE FROM job_events"))
        conn.execute(text("DELETE FROM jobs WHERE id = :j"), {"j": ids[2]})
        assert _insert_job(conn) == ids[2] + 1  # the highest id ever handed out is never handed out again
        assert conn.execute(text("PRAGMA foreign_key_check")).fetchall() == []
    engine.dispose()


def test_submit_key_is_unique_per_user(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        _insert_job(conn, "alice", "k1")
        _insert_job(conn, "bob", "k1")
        _insert_job(conn, "alice")
        _insert_job(conn, "alice")  # no key: any number
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _insert_job(conn, "alice", "k1")
    engine.dispose()
