"""Issue 6 acceptance (accounting) through the real daemon, real containers and real Unix users."""
from __future__ import annotations

import os
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support import Daemon

pytestmark = pytest.mark.docker
# burns ~2 s in a child, then prints its children's CPU ticks (cutime+cstime): the CPU time the job
# measured itself, which the record is compared with (2 s of wall time is less CPU on a busy machine)
BURN = "#!/bin/sh\ntimeout 2 sh -c 'while :; do :; done'\ncat /proc/$$/stat\nexit 0\n"


def db_rows(daemon: Daemon, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{daemon.root / 'ds01q.db'}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def ready(daemon: Daemon) -> Daemon:
    """Wait until the daemon has read its inventory (it does so in the background after start)."""
    deadline = time.monotonic() + 30
    while not daemon.cli_json("root", "status")["gpus"] and time.monotonic() < deadline:
        time.sleep(0.1)
    return daemon


def history_row(daemon: Daemon, user: str, job_id: int) -> dict[str, Any]:
    (row,) = [r for r in daemon.cli_json(user, "history") if r["id"] == job_id]
    return row  # type: ignore[no-any-return]


def test_cpu_burn_of_two_seconds_is_recorded(daemon: Daemon) -> None:
    ready(daemon)
    job_id = daemon.submit("ds01q-stu1", BURN, "--mig", "2g.10gb")
    job = daemon.wait_state(job_id, "COMPLETED", timeout=60)
    fields = Path(job["output"]).read_text().strip().splitlines()[-1].rsplit(")", 1)[1].split()
    measured = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    assert measured > 0.3, f"the burn got too little CPU to compare ({measured} s)"
    ((cpu_s, wall_s, share, gpu_equiv_s),) = db_rows(
        daemon, "SELECT cpu_s, wall_s, gpu_share, gpu_equiv_s FROM job_usage WHERE job_id = ?", job_id)
    assert cpu_s == pytest.approx(measured, rel=0.3)
    assert share == pytest.approx(2 / 7) and gpu_equiv_s == pytest.approx(share * wall_s)
    h = history_row(daemon, "ds01q-stu1", job_id)
    assert h["cpu_s"] == pytest.approx(cpu_s) and h["wall_s"] == pytest.approx(wall_s)
    assert h["gpu_equiv_s"] == pytest.approx(2 / 7 * wall_s) and h["max_rss_bytes"] is not None
    (row,) = daemon.cli_json("ds01q-stu1", "report")
    assert row["user"] == "ds01q-stu1" and row["jobs"] == 1
    assert row["cpu_hours"] * 3600 == pytest.approx(cpu_s, rel=0.01)


def test_report_shows_both_users_with_share_times_wall(daemon: Daemon) -> None:
    ready(daemon)
    a = daemon.submit("ds01q-stu1", "sleep 3\n", "--mig", "2g.10gb")
    b = daemon.submit("ds01q-res1", "sleep 2\n", "--gpus", "1")
    for job_id in (a, b):
        daemon.wait_state(job_id, "COMPLETED", timeout=60)
    expected = {}
    for job_id, user, share in ((a, "ds01q-stu1", 2 / 7), (b, "ds01q-res1", 1.0)):
        ((started, ended),) = db_rows(daemon, "SELECT started_at, ended_at FROM jobs WHERE id = ?", job_id)
        expected[user] = share * (ended - started) / 3600
    rows = {r["user"]: r for r in daemon.cli_json("root", "report")}
    assert set(rows) == {"ds01q-stu1", "ds01q-res1"}
    for user, hours in expected.items():
        assert rows[user]["gpu_equiv_hours"] == pytest.approx(hours, rel=0.01)
        assert rows[user]["jobs"] == 1 and {"group", "cpu_hours"} <= set(rows[user])
    assert rows["ds01q-res1"]["group"] == "researcher"
    assert [r["user"] for r in daemon.cli_json("ds01q-stu1", "report")] == ["ds01q-stu1"]

    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%d")
    r = daemon.cli("ds01q-stu1", "admin", "accounting", "rollup", "--until", tomorrow)
    assert r.rc != 0 and "for admins only" in r.err
    r = daemon.cli("root", "admin", "accounting", "rollup", "--period", "day", "--until", tomorrow)
    assert r.rc == 0, r
    again = {r["user"]: r for r in daemon.cli_json("root", "report", "--until", tomorrow)}  # today from rollups
    for user in expected:
        assert again[user]["gpu_equiv_hours"] == pytest.approx(rows[user]["gpu_equiv_hours"], rel=1e-9)
    assert {u for (u,) in db_rows(daemon, "SELECT user FROM rollups WHERE period = 'day'")} == set(expected)
    r = daemon.cli("root", "report", "--period", "week", "--by", "period")
    assert r.rc != 0 and r.err.strip() == "ds01q: error: --period week is not allowed (allowed: day, month)"


def test_running_jobs_are_sampled(make_daemon: Callable[..., Daemon]) -> None:
    daemon = ready(make_daemon(accounting={"sample_interval": "1s"}))
    job_id = daemon.submit("ds01q-stu1", "sleep 5\n")
    daemon.wait_state(job_id, "COMPLETED", timeout=60)
    samples = db_rows(daemon, "SELECT at, cpu_s, mem_bytes FROM usage_samples WHERE job_id = ? ORDER BY at", job_id)
    assert len(samples) >= 2
    assert all(cpu is not None and mem is not None for _, cpu, mem in samples)
