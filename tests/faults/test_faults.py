"""The fault suite: the real daemon and Docker engine, made to fail. Each scenario is bounded
in time (pytest-timeout) and ends with the same checks (``checks.check_invariants``): no job
lost or run twice, every job final, no slice held without a job, no container left behind."""
from __future__ import annotations

import multiprocessing as mp
import random
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from ds01q.client.api import Client
from tests.faults.checks import MARKER_SCRIPT, check_invariants, runs
from tests.faults.proxy import EngineProxy
from tests.support import Daemon

pytestmark = [pytest.mark.docker]


def marker_jobs(d: Daemon, n: int, sleep: float, key: str, **opts: Any) -> tuple[list[int], Path]:
    marker = d.root / "marker"
    body = MARKER_SCRIPT.format(marker=marker, sleep=sleep)
    with Client(d.socket, timeout=30) as c:
        ids = c.submit_many([{"script": body, "workdir": str(d.root), "mig": "2g.10gb", **opts}
                             for _ in range(n)] if n else [], ) if n else []
    return ids, marker


@pytest.mark.timeout(240)
def test_sigkill_of_the_daemon_during_a_run_of_jobs(make_daemon: Callable[..., Daemon]) -> None:
    """18 one-second jobs; the daemon SIGKILLed every 2 s, three times, and restarted at once (each
    point of a job's life is hit on purpose in test_crash_points.py; this is the random mix)."""
    d = make_daemon(groups={"student": {"priority": 10, "max_gpus": 7.0, "max_running_jobs": 10}})
    ids, marker = marker_jobs(d, 18, 1, key="k")
    for _ in range(3):
        time.sleep(2)
        d.kill()
        d.start()
    with Client(d.socket, timeout=30) as c:
        jobs = check_invariants(d, c, ids, marker, timeout=150)
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}
    assert sorted(runs(marker)) == sorted(ids)


@pytest.mark.timeout(240)
def test_sigkill_right_after_launch(make_daemon: Callable[..., Daemon]) -> None:
    """Kill the daemon the moment a job is STARTING or just RUNNING: the container it made is
    found again (adopted or recorded), never started a second time."""
    d = make_daemon(groups={"student": {"priority": 10, "max_gpus": 7.0, "max_running_jobs": 10}})
    ids, marker = marker_jobs(d, 3, 0.5, key="k")
    with Client(d.socket, timeout=30) as c:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(c.show(i)["state"] in ("STARTING", "RUNNING") for i in ids):
            time.sleep(0.01)
    d.kill()
    time.sleep(1.5)  # the containers finish while no daemon watches
    d.start()
    with Client(d.socket, timeout=30) as c:
        jobs = check_invariants(d, c, ids, marker, timeout=90)
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}


@pytest.mark.timeout(240)
def test_submit_then_cancel_races(make_daemon: Callable[..., Daemon]) -> None:
    """100 submits, each cancelled 0-10 ms later: a job answered CANCELLED before it ran never
    runs, and no slice stays allocated."""
    d = make_daemon()
    marker = d.root / "marker"
    body = MARKER_SCRIPT.format(marker=marker, sleep=0.2)
    rng = random.Random(11)
    ids, answered = [], set()
    with Client(d.socket, timeout=30) as c:
        for _ in range(100):
            job_id = c.submit_many([{"script": body, "workdir": str(d.root), "mig": "2g.10gb"}])[0]
            time.sleep(rng.uniform(0, 0.010))
            if c.cancel(job_id)[0]["state"] == "CANCELLED":
                answered.add(job_id)
            ids.append(job_id)
        jobs = check_invariants(d, c, ids, marker, timeout=150, answered_cancelled=answered)
    assert {j["state"] for j in jobs.values()} <= {"CANCELLED", "COMPLETED"}
    assert len(answered) >= 50 and sum(j["state"] == "CANCELLED" for j in jobs.values()) >= 90


def _burst_client(sock: str, workdir: str, n: int, go: Any, out: Any) -> None:
    ids, errors = [], []
    go.wait()
    with Client(sock, timeout=60) as c:
        for _ in range(n):
            try:
                ids.append(c.submit_many([{"script": "true\n", "workdir": workdir, "hold": True}])[0])
            except Exception as e:  # reported by the test
                errors.append(f"{type(e).__name__}: {e}")
    out.put((ids, errors))


@pytest.mark.timeout(240)
def test_burst_of_clients_all_get_ids(make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon()
    go, out = mp.Event(), mp.Queue()
    procs = [mp.Process(target=_burst_client, args=(d.socket, str(d.root), 25, go, out)) for _ in range(20)]
    for p in procs:
        p.start()
    go.set()
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join()
    ids = [i for r, _ in results for i in r]
    errors = [e for _, es in results for e in es]
    assert errors == [] and len(ids) == 500 and len(set(ids)) == 500


@pytest.mark.timeout(240)
def test_engine_down_at_start_then_back(make_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    proxy = EngineProxy(str(tmp_path / "engine.sock"))
    monkeypatch.setenv("DOCKER_HOST", proxy.docker_host)
    d = make_daemon()  # starts although the engine cannot be reached
    ids, marker = marker_jobs(d, 1, 0.1, key="k")
    with Client(d.socket, timeout=30) as c:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and c.show(ids[0])["reason"] != "ExecutorDown":
            time.sleep(0.2)
        job = c.show(ids[0])
        assert job["state"] == "PENDING" and job["reason"] == "ExecutorDown", job
        st = c.status()
        assert st["daemon"]["executor"] == "down" and "Docker engine" in st["daemon"]["executor_error"]
        assert "EXECUTOR DOWN" in d.cli("root", "status").out
        proxy.up()
        check_invariants(d, c, ids, marker, timeout=60)
        assert c.status()["daemon"]["executor"] == "up"
    proxy.down()


@pytest.mark.timeout(240)
def test_a_stop_during_an_engine_outage_is_retried(make_daemon: Callable[..., Daemon],
                                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    proxy = EngineProxy(str(tmp_path / "engine.sock"))
    proxy.up()
    monkeypatch.setenv("DOCKER_HOST", proxy.docker_host)
    d = make_daemon()
    ids, marker = marker_jobs(d, 1, 60, key="k")
    with Client(d.socket, timeout=30) as c:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and c.show(ids[0])["state"] != "RUNNING":
            time.sleep(0.2)
        proxy.down()
        assert c.cancel(ids[0])[0]["state"] == "STOPPING"
        time.sleep(4)
        assert c.show(ids[0])["state"] == "STOPPING"  # the stop failed: kept, retried
        later, _ = marker_jobs(d, 1, 0.1, key="k2")
        proxy.up()
        jobs = check_invariants(d, c, ids + later, marker, timeout=60)
    assert jobs[ids[0]]["state"] == "CANCELLED" and jobs[later[0]]["state"] == "COMPLETED"
    proxy.down()


@pytest.mark.timeout(180)
def test_submit_wait_survives_a_daemon_restart(make_daemon: Callable[..., Daemon]) -> None:
    import threading

    d = make_daemon()
    path = d.script("ds01q-stu1", "w.sh", "sleep 4\nexit 3\n")
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(d.cli("ds01q-stu1", "submit", "--wait", str(path))))
    t.start()
    time.sleep(2)
    d.kill()
    time.sleep(1)
    d.start()
    t.join(timeout=120)
    (r,) = result
    assert r.rc == 3 and "Submitted batch job" in r.out and "Traceback" not in r.err, r


@pytest.mark.timeout(120)
def test_logs_prints_the_whole_file(make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon()
    job_id = d.submit("ds01q-stu1", "i=0; while [ $i -lt 3000 ]; do printf '%01000d\\n' $i; i=$((i+1)); done\n"
                      "echo the-end\n", "--gpus", "0")
    d.wait_state(job_id, "COMPLETED", timeout=60)
    r = d.cli("ds01q-stu1", "logs", str(job_id))
    assert r.rc == 0 and len(r.out) > 3_000_000 and r.out.rstrip().endswith("the-end"), (r.rc, len(r.out))
