"""A daemon killed at any point recovers on restart; the process executor keeps the same contract."""
from __future__ import annotations

import subprocess

import pytest

from tests.support import Daemon

pytestmark = pytest.mark.docker


def test_kill_9_while_jobs_run_then_restart(make_daemon) -> None:
    d: Daemon = make_daemon()
    running = d.submit("ds01q-adm1", "sleep 4\necho done-running\n", name="a.sh")
    d.wait_state(running, "RUNNING")
    queued = [d.submit("ds01q-adm1", "echo queued $DS01Q_JOB_ID\n", "--gpus", "1", name=f"q{i}.sh") for i in range(2)]
    d.kill()
    d.start()
    job = d.wait_state(running, "COMPLETED", timeout=40)
    assert job["exit_code"] == 0
    assert "done-running" in (d.workdir("ds01q-adm1") / f"ds01q-{running}.out").read_text()
    for q in queued:
        assert d.wait_state(q, "COMPLETED", timeout=40)["exit_code"] == 0
    # nothing is left allocated, and no container is left behind
    st = d.cli_json("root", "status")
    assert all(s["state"] == "free" for g in st["gpus"] for s in g["slices"])
    assert d.containers_left() == []


def test_job_that_ended_while_daemon_was_down_is_recorded(make_daemon) -> None:
    d: Daemon = make_daemon()
    job_id = d.submit("ds01q-stu1", "sleep 1\nexit 4\n")
    d.wait_state(job_id, "RUNNING")
    d.kill()
    subprocess.run(["sleep", "2"])
    d.start()
    job = d.wait_state(job_id, {"FAILED", "COMPLETED"}, timeout=30)
    assert job["state"] == "FAILED" and job["exit_code"] == 4


def test_process_executor_same_contract(make_daemon) -> None:
    d: Daemon = make_daemon(executor={"kind": "process"})
    ok = d.submit("ds01q-stu1", "#!/bin/sh\necho CVD=$CUDA_VISIBLE_DEVICES NVD=$NVIDIA_VISIBLE_DEVICES\nid -u\n",
                  "--mig", "2g.10gb")
    job = d.wait_state(ok, "COMPLETED")
    text = (d.workdir("ds01q-stu1") / f"ds01q-{ok}.out").read_text()
    assert f"CVD={job['slices'][0]} NVD={job['slices'][0]}" in text
    import pwd

    assert str(pwd.getpwnam("ds01q-stu1").pw_uid) in text.split()
    bad = d.submit("ds01q-stu1", "exit 3\n")
    assert d.wait_state(bad, {"FAILED", "COMPLETED"})["exit_code"] == 3
    long = d.submit("ds01q-stu1", "sleep 300\n")
    d.wait_state(long, "RUNNING")
    assert d.cli("ds01q-stu1", "cancel", str(long)).rc == 0
    d.wait_state(long, "CANCELLED", timeout=10)
