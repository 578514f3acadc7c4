"""Docker engine API errors, injected by the engine proxy (``proxy.Faults``): the first container
create, start, stop and remove calls answer 500, or have their connection cut before they reach
the engine, or reach it and have the answer cut. Every job still ends once and nothing leaks."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest

from ds01q.client.api import Client
from tests.faults.checks import MARKER_SCRIPT, check_invariants, runs
from tests.faults.proxy import EngineProxy, Faults
from tests.support import Daemon

pytestmark = [pytest.mark.docker]
GROUPS = {"student": {"priority": 10, "max_gpus": 7.0, "max_running_jobs": 10}}
CREATE, START = r"/containers/create", r"/containers/[0-9a-f]+/start"
STOP, REMOVE = r"/containers/[0-9a-f]+/stop", r"/containers/[0-9a-f]+"


@pytest.mark.timeout(150)
@pytest.mark.parametrize("actions", [("500", "drop"), ("lose-reply", "lose-reply")], ids=["refused", "lose-reply"])
def test_engine_api_errors(actions: tuple[str, str], make_daemon: Callable[..., Daemon],
                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Three short jobs and one long one that is cancelled. "refused": 500 answers to create and
    stop, calls cut before the engine on start and remove. "lose-reply" is the hardest: the engine
    created or started the container but the daemon never heard; it must not start a second."""
    answer, cut = actions
    faults = Faults()
    faults.add("POST", CREATE, answer, times=2)
    faults.add("POST", START, cut, times=1)
    faults.add("POST", STOP, answer, times=2)
    faults.add("DELETE", REMOVE, cut, times=2)
    proxy = EngineProxy(str(tmp_path / "engine.sock"), faults=faults)
    proxy.up()
    monkeypatch.setenv("DOCKER_HOST", proxy.docker_host)
    d = make_daemon(groups=GROUPS, executor={"launch_backoff": "0.5s"})  # a refused create is tried again soon
    marker = d.root / "marker"
    short = {"script": MARKER_SCRIPT.format(marker=marker, sleep=0.3), "workdir": str(d.root), "mig": "2g.10gb"}
    long = {"script": MARKER_SCRIPT.format(marker=marker, sleep=600), "workdir": str(d.root), "gpus": 1}
    with Client(d.socket, timeout=30) as c:
        ids = c.submit_many([short, short, short, long])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and c.show(ids[3])["state"] != "RUNNING":
            time.sleep(0.2)
        assert c.show(ids[3])["state"] == "RUNNING", (faults.failed, d.log_tail())
        assert c.cancel(ids[3])[0]["state"] == "STOPPING"
        jobs = check_invariants(d, c, ids, marker, timeout=90)
    states = [jobs[i]["state"] for i in ids]
    assert states == ["COMPLETED"] * 3 + ["CANCELLED"], (states, faults.failed)
    assert runs(marker) == {i: 1 for i in ids}, (runs(marker), faults.failed)
    assert faults.unmet() == [], (faults.failed, faults.seen)  # every kind of fault was met
    # (a stop or removal whose answer was lost did take effect: it is not tried a second time)
    proxy.down()
