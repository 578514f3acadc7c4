"""Schema upgrades carry existing rows over (SQLite and PostgreSQL)."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from ds01q.db.engine import make_engine, upgrade
from tests.dbs import DATABASES, database_url

OLD_JOB = ("INSERT INTO jobs (id, name, \"user\", uid, gid, \"group\", state, reason, priority, boost, nice, interactive,"
           " request, time_limit_s, image, args, workdir, env, submitted_at, eligible_at, requeue_count,"
           " requeue_on_layout_change, held, cancel_requested, end_state, depends_on)"
           " VALUES (:id, 'j', 'alice', 1000, 1000, 'student', :state, :reason, 0, 0, 0, :inter, '{}', 60, 'img',"
           " '[]', '/tmp', '{}', 1.0, 0, 0, true, :held, :cancel, :end_state, '[]')")


@pytest.mark.parametrize("kind", DATABASES)
def test_0004_moves_free_text_reasons_and_stop_flags(kind: str, tmp_path: Path) -> None:
    url = database_url(kind, tmp_path)
    upgrade(url, "0003")
    engine = make_engine(url)
    rows = [
        dict(id=1, state="FAILED", reason="exit code 137", inter=False,
             held=False, cancel=False, end_state=None),
        dict(id=2, state="PENDING", reason="Resources", inter=False, held=False, cancel=False, end_state=None),
        dict(id=3, state="HELD", reason="Held", inter=False, held=True, cancel=False, end_state=None),
        dict(id=4, state="RUNNING", reason=None, inter=False, held=False, cancel=True, end_state="TIMEOUT"),
        dict(id=5, state="RUNNING", reason="idle timeout", inter=True, held=False, cancel=True,
             end_state="CANCELLED"),
        dict(id=6, state="RUNNING", reason=None, inter=True, held=False, cancel=True, end_state=None),
        dict(id=7, state="COMPLETED", reason="Priority", inter=False, held=False, cancel=False, end_state=None),
    ]
    with engine.begin() as conn:
        for r in rows:
            conn.execute(text(OLD_JOB), r)
    engine.dispose()
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        got = {r.id: (r.state, r.reason, r.end_reason, r.stop_outcome) for r in conn.execute(
            text("SELECT id, state, reason, end_reason, stop_outcome FROM jobs ORDER BY id"))}
        cols = set(conn.execute(text("SELECT * FROM jobs LIMIT 0")).keys())
    engine.dispose()
    assert got == {
        1: ("FAILED", None, "exit code 137", None),
        2: ("PENDING", "Resources", None, None),
        3: ("HELD", "Held", None, None),
        4: ("STOPPING", None, None, "timeout"),
        5: ("STOPPING", None, "idle timeout", "idle"),
        6: ("STOPPING", None, None, "shell_exit"),
        7: ("COMPLETED", None, None, None),
    }
    assert not cols & {"held", "cancel_requested", "end_state"}
