"""The Docker engine itself SIGKILLed under running jobs, on a private engine (tests/faults/engine.py).

- Without live-restore, the restarted engine kills every container it finds (exit 137): the
  daemon, which saw the engine down, reads that as a lost node, not the job's failure: the run ends
  NODE_FAIL and the batch job is requeued and completes on its second run.
- With live-restore, the containers live through the engine's restart: each job runs once and
  completes, and nothing ends NODE_FAIL.
- A restart quicker than the daemon's container sweep is seen all the same: the executor's event
  stream breaks, and the daemon marks the engine down at once.
Either way the daemon keeps answering while the engine is away, and nothing is left held."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ds01q.client.api import FINAL, Client
from tests.faults.checks import runs, wait_all_final
from tests.faults.engine import PrivateEngine
from tests.support import Daemon

pytestmark = [pytest.mark.docker]
# Each run appends its id to the marker, then runs until the test makes the flag (at most 2 minutes).
FLAG_SCRIPT = ("#!/bin/sh\necho $DS01Q_JOB_ID >> {marker}\n"
               "i=0\nwhile [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done\n")


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateEngine]:
    pe = PrivateEngine()
    try:
        pe.start()
        pe.load_test_image()
        monkeypatch.setenv("DOCKER_HOST", pe.docker_host)  # the daemon and `docker ps` in checks use it
        yield pe
    finally:
        pe.close()


def wait_for(pred: Callable[[], Any], timeout: float, what: str, d: Daemon | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.3)
    lines = d.log_path.read_text(errors="replace").splitlines() if d is not None else []
    log = "\n".join([ln for ln in lines if "urllib3" not in ln][-40:])
    raise AssertionError(f"timed out waiting for {what}\n{log}")


def run_and_kill_engine(d: Daemon, engine: PrivateEngine, live_restore: bool,
                        quick: bool = False) -> tuple[list[int], dict[int, Any]]:
    """``quick``: the engine is started again at once, before the daemon's next container sweep
    (``systemctl restart docker``); otherwise only once the daemon shows it down."""
    marker, go = d.root / "marker", d.root / "go"
    with Client(d.socket, timeout=30) as c:
        ids = c.submit_many([{"script": FLAG_SCRIPT.format(marker=marker, go=go), "workdir": str(d.root),
                              "mig": "2g.10gb"} for _ in range(2)])
        wait_for(lambda: all(c.show(i)["state"] == "RUNNING" for i in ids), 120, "both jobs RUNNING", d)
        engine.kill()  # the jobs run until the flag: none can end before the engine dies
        if not quick:
            wait_for(lambda: c.status()["daemon"]["executor"] == "down", 20, "the executor shown down", d)
            assert c.submit_many([{"script": "true\n", "workdir": str(d.root), "hold": True}])  # still serving
            time.sleep(1)
        engine.start(live_restore=live_restore)
        if not live_restore:  # the restarted engine killed the first runs: only the requeued ones see the flag
            wait_for(lambda: all(runs(marker)[i] >= 2 or c.show(i)["state"] in FINAL for i in ids), 120,
                     "the requeued runs started", d)
        go.touch()
        jobs = wait_all_final(c, ids, 120)
        wait_for(lambda: c.status()["daemon"]["executor"] == "up", 30, "the executor back up", d)
        wait_for(lambda: not [s for g in c.status()["gpus"] for s in g["slices"] if s["state"] == "busy"],
                 30, "every slice free", d)
    assert d.containers_left() == [], "containers left behind"
    return ids, {**jobs, "runs": runs(marker)}


@pytest.mark.timeout(300)
def test_engine_killed_without_live_restore_requeues_the_lost_runs(make_daemon: Callable[..., Daemon],
                                                                    engine: PrivateEngine) -> None:
    engine.kill()  # the first engine ran without live-restore: start it again the same way
    engine.start(live_restore=False)
    d = make_daemon()
    ids, jobs = run_and_kill_engine(d, engine, live_restore=False)
    for i in ids:
        states = [e["state"] for e in jobs[i]["events"]]
        assert jobs[i]["state"] == "COMPLETED", (i, states)
        assert states.count("NODE_FAIL") == 1 and states.count("COMPLETED") == 1, (i, states)
        assert states[states.index("NODE_FAIL") + 1] == "PENDING", (i, states)
        assert jobs["runs"][i] == 2, (i, jobs["runs"])  # the killed run, then the requeued one


@pytest.mark.timeout(300)
def test_a_quick_engine_restart_without_live_restore_requeues_the_lost_runs(make_daemon: Callable[..., Daemon],
                                                                          engine: PrivateEngine) -> None:
    d = make_daemon()  # the fixture's engine runs without live-restore
    ids, jobs = run_and_kill_engine(d, engine, live_restore=False, quick=True)
    for i in ids:
        states = [e["state"] for e in jobs[i]["events"]]
        assert jobs[i]["state"] == "COMPLETED" and states.count("NODE_FAIL") == 1, (i, states)
        assert jobs["runs"][i] == 2, (i, jobs["runs"])


@pytest.mark.timeout(300)
def test_engine_killed_with_live_restore_keeps_the_runs(make_daemon: Callable[..., Daemon],
                                                        engine: PrivateEngine) -> None:
    engine.kill()
    engine.start(live_restore=True)
    d = make_daemon()
    ids, jobs = run_and_kill_engine(d, engine, live_restore=True)
    for i in ids:
        states = [e["state"] for e in jobs[i]["events"]]
        assert jobs[i]["state"] == "COMPLETED" and "NODE_FAIL" not in states, (i, states)
        assert jobs["runs"][i] == 1, (i, jobs["runs"])
