"""Finding 11 at the store: ``lock_user`` makes "count the queue, then insert" one step per user on
SQLite and PostgreSQL, so concurrent submits never pass a quota."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ds01q.db import store
from ds01q.db.engine import make_engine, make_sessionmaker, upgrade
from ds01q.db.models import Job
from tests.dbs import DATABASES, database_url

LIMIT = 3


@pytest.mark.parametrize("kind", DATABASES)
def test_quota_holds_under_concurrent_writers(kind: str, tmp_path: Path) -> None:
    url = database_url(kind, tmp_path)
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    accepted: list[int] = []
    errors: list[str] = []

    def submit(i: int) -> None:
        try:
            with sessions.begin() as s:
                store.lock_user(s, "alice")
                if store.count_jobs(s, "alice", ("PENDING",)) >= LIMIT:
                    return
                time.sleep(0.02)  # widen the window a missing lock would leave open
                s.add(Job(name=f"j{i}", user="alice", uid=1000, gid=1000, group="student", state="PENDING",
                          request="{}", time_limit_s=60.0, image="x", workdir="/tmp", submitted_at=0.0,
                          args="[]", env="{}"))
            accepted.append(i)
        except Exception as e:
            errors.append(str(e).splitlines()[0])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    assert errors == [] and len(accepted) == LIMIT, (accepted, errors)
