"""Issue 3 acceptance through the real daemon: limits, priority, explanations."""
from __future__ import annotations

import time

import pytest

from tests.support import Daemon

pytestmark = pytest.mark.docker


def test_student_at_gpu_limit_waits_with_userlimit_while_a_whole_gpu_is_free(daemon: Daemon) -> None:
    ids = [daemon.submit("ds01q-stu1", "sleep 60\n", "--mig", "2g.10gb", name=f"s{i}.sh") for i in range(3)]
    for i in ids:
        daemon.wait_state(i, "RUNNING")
    fourth = daemon.submit("ds01q-stu1", "sleep 60\n", name="s4.sh")
    time.sleep(2.5)
    job = daemon.show(fourth)
    assert job["state"] == "PENDING" and job["reason"] == "UserLimit", job
    st = daemon.cli_json("root", "status")
    whole = [s for g in st["gpus"] for s in g["slices"] if s["profile"] == "full"]
    assert whole and whole[0]["state"] == "free"
    text = daemon.cli("ds01q-stu1", "show", str(fourth)).out
    assert "UserLimit" in text
    limits = daemon.cli_json("ds01q-stu1", "limits")
    assert limits["group"] == "student" and limits["use"]["slices"] == 3
    daemon.cli("ds01q-stu1", "cancel", *map(str, ids + [fourth]))


def test_researcher_submitted_later_starts_before_earlier_student(daemon: Daemon) -> None:
    fill = [daemon.submit("ds01q-adm1", "sleep 4\n", name=f"f{i}.sh") for i in range(4)]
    for i in fill:
        daemon.wait_state(i, "RUNNING")
    student = daemon.submit("ds01q-stu2", "sleep 1\n", name="student.sh")
    time.sleep(1.2)
    researcher = daemon.submit("ds01q-res1", "sleep 1\n", name="researcher.sh")
    time.sleep(1.2)
    q = daemon.cli_json("root", "queue")
    pending = [j["id"] for j in q if j["state"] == "PENDING"]
    assert pending == [researcher, student], q  # the queue lists pending jobs in priority order
    r = daemon.wait_state(researcher, {"RUNNING", "COMPLETED"}, timeout=30)
    s = daemon.wait_state(student, {"RUNNING", "COMPLETED"}, timeout=30)
    assert r["started_at"] <= s["started_at"]
    ev_r = next(e["at"] for e in daemon.show(researcher)["events"] if e["state"] == "STARTING")
    ev_s = next(e["at"] for e in daemon.show(student)["events"] if e["state"] == "STARTING")
    assert ev_r <= ev_s
    long_q = daemon.cli("root", "queue", "--long")
    assert long_q.rc == 0 and "PRIORITY" in long_q.out


def test_request_that_can_never_pass_is_refused_at_submit(daemon: Daemon) -> None:
    r = daemon.cli("ds01q-stu1", "submit", "--time", "48h", str(daemon.script("ds01q-stu1", "t.sh", "true\n")))
    assert r.rc != 0 and "max_runtime" in r.err and "student" in r.err and r.err.count("\n") == 1, r
    r = daemon.cli("ds01q-stu1", "submit", "--gpus", "2", str(daemon.script("ds01q-stu1", "t.sh", "true\n")))
    assert r.rc != 0 and r.err.count("\n") == 1, r
    assert daemon.cli_json("root", "queue") == []
