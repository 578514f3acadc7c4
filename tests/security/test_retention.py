"""Finding 9: finished jobs' payloads (script, --env) are pruned on a schedule and spooled scripts
deleted, so a queue of fat submissions does not grow for ever."""
from __future__ import annotations

import sqlite3
import time

from tests.support import Daemon


def test_payloads_of_finished_jobs_are_pruned(make_sec_daemon) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = make_sec_daemon(security={"payload_retention": "2s"})
    done = d.submit("ds01q-stu1", "#!/bin/sh\necho payload-done\n", "--env", "TOKEN=hunter2", name="a.sh")
    held = d.submit("ds01q-stu1", "#!/bin/sh\necho payload-held\n", "--env", "TOKEN=keepme", "--hold", name="b.sh")
    d.wait_state(done, "COMPLETED")
    spool = d.root / "state" / "scripts" / f"{done}.sh"
    db = sqlite3.connect(str(d.root / "ds01q.db"))
    deadline = time.monotonic() + 30
    row = None
    while time.monotonic() < deadline:
        row = db.execute("SELECT script, env, args FROM jobs WHERE id = ?", (done,)).fetchone()
        if row == (None, "{}", "[]") and not spool.exists():
            break
        time.sleep(0.5)
    assert row == (None, "{}", "[]") and not spool.exists(), (row, spool.exists())
    kept = db.execute("SELECT script, env FROM jobs WHERE id = ?", (held,)).fetchone()
    assert "payload-held" in kept[0] and "keepme" in kept[1]  # a queued job keeps its payload
    assert d.show(done)["state"] == "COMPLETED"  # the history stays
