"""SIGKILL of the daemon at each point of a job's life, deterministically: the daemon starts with
``DS01Q_CRASH_AT=<point>`` (``ds01q.faultpoints``) and kills itself there; "create" is done by
the engine proxy, which kills the daemon when it asks the engine to start a container it has
created. The test then restarts the daemon without the variable and checks that every job ran
exactly once and that nothing leaked (``checks.check_invariants``)."""
from __future__ import annotations

import collections
import datetime as dt
import os
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from ds01q.client.api import Client
from ds01q.errors import ServerUnavailable
from ds01q.faultpoints import POINTS
from ds01q.controller.reconcile import NEVER_STARTED
from tests.faults.checks import MARKER_SCRIPT, check_invariants, runs
from tests.faults.engine import PrivateEngine
from tests.faults.proxy import EngineProxy, Faults
from tests.support import REPO, Daemon

pytestmark = [pytest.mark.docker]
GROUPS = {"student": {"priority": 10, "max_gpus": 7.0, "max_running_jobs": 10}}
ONE_AT_A_TIME = {"student": {"priority": 10, "max_gpus": 7.0, "max_running_jobs": 1}}
FORGOTTEN = "no container after the launch (daemon restarted?)"


def crashing_daemon(make_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch, point: str,
                    groups: dict[str, Any] = GROUPS) -> Daemon:
    """A daemon that SIGKILLs itself at ``point``; its restarts (``d.start()``) do not."""
    monkeypatch.setenv("DS01Q_CRASH_AT", point)
    try:
        return make_daemon(groups=groups)
    finally:
        monkeypatch.delenv("DS01Q_CRASH_AT")


def requests(d: Daemon, n: int, sleep: float) -> tuple[list[dict[str, Any]], Path]:
    marker = d.root / "marker"
    body = MARKER_SCRIPT.format(marker=marker, sleep=sleep)
    return [{"script": body, "workdir": str(d.root), "mig": "2g.10gb"} for _ in range(n)], marker


def submit(d: Daemon, n: int, sleep: float) -> tuple[list[int], Path]:
    reqs, marker = requests(d, n, sleep)
    with Client(d.socket, timeout=30) as c:
        return c.submit_many(reqs), marker


def submit_across_the_crash(d: Daemon, n: int, sleep: float) -> tuple[list[int], Path]:
    """Submit while the daemon is about to kill itself, then restart it. The loop may reach its
    crash point before the submit's answer is written: the client's retry (same idempotency key)
    then gets the ids from the restarted daemon."""
    reqs, marker = requests(d, n, sleep)
    got: list[Any] = []

    def client() -> None:
        try:
            with Client(d.socket, timeout=40) as c:
                got.append(c.submit_many(reqs))
        except Exception as e:  # reported below
            got.append(e)

    t = threading.Thread(target=client)
    t.start()
    killed_and_restarted(d)
    t.join(timeout=60)
    (ids,) = got
    assert isinstance(ids, list) and len(ids) == n, ids
    return ids, marker


def killed_and_restarted(d: Daemon) -> None:
    """Wait for the daemon to kill itself at its crash point, then start it again (no crash point)."""
    assert d.proc is not None
    try:
        rc = d.proc.wait(timeout=40)
    except Exception:
        raise AssertionError("the daemon never reached its crash point:\n" + d.log_tail()) from None
    assert rc == -signal.SIGKILL, (rc, d.log_tail())
    d.start()


def jobs_in_db(d: Daemon) -> int:
    db = sqlite3.connect(f"file:{d.root / 'ds01q.db'}?mode=ro", uri=True, timeout=30)
    try:
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])
    finally:
        db.close()


def history(jobs: dict[int, dict[str, Any]]) -> dict[int, list[tuple[str, str]]]:
    return {i: [(e["state"], e["reason"]) for e in j.get("events", [])] for i, j in jobs.items()}


def info_log(d: Daemon) -> str:
    return "\n".join(x for x in d.log_path.read_text().splitlines() if " DEBUG " not in x)[-4000:]


def reasons(job: dict[str, Any]) -> list[str]:
    return [e["reason"] or "" for e in job.get("events", [])]


def test_every_crash_point_is_in_the_product_once() -> None:
    """Each point but "create" (the proxy's) is called at exactly one place, or two for submit
    (submit and submit_many); this file tests each of them."""
    calls = collections.Counter(m for f in (REPO / "ds01q").rglob("*.py") if f.name != "faultpoints.py"
                                for m in re.findall(r'crash_point\("(\w+)"\)', f.read_text()))
    assert calls == {"submit": 2, "assume": 1, "start": 1, "exit": 1, "cancel": 1, "rollup": 1}
    assert set(calls) | {"create"} == POINTS


@pytest.mark.timeout(120)
def test_crash_after_a_submit_committed_before_its_answer(make_daemon: Callable[..., Daemon],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's retry (same idempotency key) gets the ids of the jobs already queued: none twice."""
    d = crashing_daemon(make_daemon, monkeypatch, "submit")
    ids, marker = submit_across_the_crash(d, 3, 0.5)
    assert jobs_in_db(d) == 3
    with Client(d.socket, timeout=30) as c:
        jobs = check_invariants(d, c, ids, marker, timeout=60)
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}
    assert runs(marker) == {i: 1 for i in ids}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("point", ["assume", "create", "start", "exit"])
def test_crash_at_a_point_of_the_launch(point: str, make_daemon: Callable[..., Daemon],
                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """assume: slices reserved, no container; create: container created, never started; start:
    started, RUNNING not recorded; exit: exited, the exit not recorded. Each job runs once. One job
    runs at a time, so the first job is the one the crash hits and the second is still PENDING."""
    proxy = None
    if point == "create":  # the proxy sees the daemon ask to start a created container: kill it then
        holder: list[Daemon] = []

        def kill() -> None:
            assert holder[0].proc is not None
            os.kill(holder[0].proc.pid, signal.SIGKILL)

        faults = Faults()
        faults.add("POST", r"/containers/[^/]+/start", kill)
        proxy = EngineProxy(str(tmp_path / "engine.sock"), faults=faults)
        proxy.up()
        monkeypatch.setenv("DOCKER_HOST", proxy.docker_host)
        d = make_daemon(groups=ONE_AT_A_TIME)
        holder.append(d)
    else:
        d = crashing_daemon(make_daemon, monkeypatch, point, ONE_AT_A_TIME)
    ids, marker = submit_across_the_crash(d, 2, 0.5)
    with Client(d.socket, timeout=30) as c:
        jobs = check_invariants(d, c, ids, marker, timeout=60)
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}, (history(jobs), info_log(d))
    assert runs(marker) == {i: 1 for i in ids}
    first = jobs[min(ids)]
    if point == "assume":  # reserved without a container: forgotten, launched again
        assert FORGOTTEN in reasons(first), history(jobs)
    if point == "create":  # created, its start never reached the engine: forgotten after SETTLE_S
        assert NEVER_STARTED in reasons(first), history(jobs)
    if point in ("start", "exit"):  # a started container is adopted or its exit recorded: no relaunch
        assert [e["state"] for e in first["events"]].count("STARTING") == 1, (history(jobs), info_log(d))
    if proxy is not None:
        assert faults.left() == 0
        proxy.down()


@pytest.mark.timeout(180)
def test_a_start_still_under_way_when_the_daemon_died_runs_the_job_once(
        make_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The daemon is killed while the engine starts a container, and the start takes long (a loaded
    machine; here a private engine whose runtime waits 4 s): the restarted daemon lists that container
    as created, not started. Forgetting the job then ran it twice in the soak (that start, and the next
    attempt's). It is adopted once it runs, and runs once. (A removal of it would wait for the start in
    the engine; the proxy holds one until the job has run, so a wrong removal cannot hide a second run.)"""
    engine = PrivateEngine()
    proxy = EngineProxy(str(tmp_path / "engine.sock"), upstream=str(engine.sock), faults=Faults())
    try:
        engine.start(start_delay_s=4)
        engine.load_test_image()
        holder: list[Daemon] = []
        marker = tmp_path / "unused"

        def kill() -> str:
            assert holder[0].proc is not None
            os.kill(holder[0].proc.pid, signal.SIGKILL)
            return "forward"  # the engine starts it all the same, slowly

        def removal_after_the_run() -> str:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not runs(marker):
                time.sleep(0.1)
            return "forward"

        assert proxy.faults is not None
        proxy.faults.add("POST", r"/containers/[^/]+/start", kill)
        proxy.faults.add("DELETE", r"/containers/[^/]+", removal_after_the_run)
        proxy.up()
        monkeypatch.setenv("DOCKER_HOST", proxy.docker_host)
        d = make_daemon(groups=ONE_AT_A_TIME)
        holder.append(d)
        marker = d.root / "marker"
        ids, marker = submit_across_the_crash(d, 2, 0.5)
        with Client(d.socket, timeout=30) as c:
            jobs = check_invariants(d, c, ids, marker, timeout=90)
        assert runs(marker) == {i: 1 for i in ids}, (runs(marker), history(jobs), info_log(d))
        assert {j["state"] for j in jobs.values()} == {"COMPLETED"}, (history(jobs), info_log(d))
        first = jobs[min(ids)]
        assert [e["state"] for e in first["events"]].count("STARTING") == 1, (history(jobs), info_log(d))
        assert not {FORGOTTEN, NEVER_STARTED} & set(reasons(first)), history(jobs)  # adopted, or its exit recorded
        assert proxy.faults.left() == 0
    finally:
        proxy.down()
        engine.close()


@pytest.mark.timeout(120)
def test_crash_after_a_cancel_committed_before_the_stop(make_daemon: Callable[..., Daemon],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The job is STOPPING when the daemon dies; after the restart its container is stopped (it
    would otherwise run for 10 minutes), and it ends CANCELLED, having run once. (The daemon may
    die before it answers the cancel; the job ending CANCELLED shows the cancel was committed.)"""
    d = crashing_daemon(make_daemon, monkeypatch, "cancel")
    ids, marker = submit(d, 1, 600)
    with Client(d.socket, timeout=30) as c:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and c.show(ids[0])["state"] != "RUNNING":
            time.sleep(0.1)
        try:
            answer = c.cancel(ids[0])[0]["state"]
        except ServerUnavailable:  # the loop hit the crash point before the answer was sent: committed all the same
            answer = "STOPPING"
        assert answer == "STOPPING"
    killed_and_restarted(d)
    with Client(d.socket, timeout=30) as c:
        jobs = check_invariants(d, c, ids, marker, timeout=60)
    assert jobs[ids[0]]["state"] == "CANCELLED" and runs(marker) == {ids[0]: 1}


def rollup(c: Client, until: str) -> dict[str, Any]:
    return c.call("admin.accounting.rollup", period="day", until=until)  # type: ignore[no-any-return]


@pytest.mark.timeout(120)
def test_crash_in_the_middle_of_a_rollup(make_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon dies after the rollup committed its first period; the next rollup resumes and the
    rolled-up sums equal the per-job records (nothing counted twice or left out)."""
    d = crashing_daemon(make_daemon, monkeypatch, "rollup")
    ids, marker = submit(d, 2, 0.5)
    until = (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=3)).isoformat()  # 3+ periods
    with Client(d.socket, timeout=30) as c:
        check_invariants(d, c, ids, marker, timeout=60)
        with pytest.raises(ServerUnavailable):
            rollup(c, until)
    killed_and_restarted(d)
    with Client(d.socket, timeout=30) as c:
        first = rollup(c, until)
        again = rollup(c, until)
        check_invariants(d, c, ids, marker, timeout=60)
    assert first["dirty_left"] == 0 and first["done_until"] == until + "T00:00:00Z", first
    assert again["periods"] == 0, again  # nothing left to do
    db = sqlite3.connect(f"file:{d.root / 'ds01q.db'}?mode=ro", uri=True, timeout=30)
    try:
        usage = db.execute("SELECT count(*), sum(wall_s), sum(gpu_equiv_s) FROM job_usage").fetchone()
        rolled = db.execute("SELECT sum(jobs), sum(wall_s), sum(gpu_equiv_s) FROM rollups "
                            "WHERE period = 'day'").fetchone()
    finally:
        db.close()
    assert usage[0] == 2 and rolled[0] == 2, (usage, rolled)
    assert abs(usage[1] - rolled[1]) < 1e-6 and abs(usage[2] - rolled[2]) < 1e-6, (usage, rolled)
