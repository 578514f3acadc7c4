"""Finding 5: a script whose launch fails (a one-character bad `#!` line, a spool error) must not
hold its slices: it goes back to the queue with the reason, and can be cancelled."""
from __future__ import annotations

import time

from tests.security.conftest import assert_served
from tests.support import Daemon


def free_slices(daemon: Daemon) -> int:
    st = daemon.cli_json("root", "status")
    return sum(s["state"] == "free" for g in st["gpus"] for s in g["slices"])


def test_bad_shebang_releases_its_slice_and_can_be_cancelled(sec_daemon: Daemon) -> None:
    before = free_slices(sec_daemon)
    job = sec_daemon.submit("ds01q-stu1", "#!/bin/sh '\necho never\n", "--gpus", "1")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        j = sec_daemon.show(job)
        if j["requeue_count"] >= 1 and j["state"] in ("PENDING", "FAILED"):
            break
        time.sleep(0.2)
    assert j["state"] in ("PENDING", "FAILED") and "launch failed" in str(j["events"]), j
    assert free_slices(sec_daemon) == before  # nothing held while it waits
    r = sec_daemon.cli("ds01q-stu1", "cancel", str(job))
    assert r.rc == 0 or j["state"] == "FAILED", r
    final = sec_daemon.wait_state(job, {"CANCELLED", "FAILED"})
    assert final["state"] in ("CANCELLED", "FAILED") and sec_daemon.containers(job) == []
    assert free_slices(sec_daemon) == before
    assert_served(sec_daemon)
