"""Issue 2 acceptance through the real daemon and the real Docker engine."""
from __future__ import annotations

import time

import pytest

from tests.support import Daemon

pytestmark = pytest.mark.docker
DESIGN_KEYS = {"id", "name", "user", "group", "state", "reason", "exit_code", "priority", "request", "slices",
               "submitted_at", "started_at", "ended_at", "events"}


def test_cuda_visible_devices_is_the_allocated_slice(daemon: Daemon) -> None:
    job_id = daemon.submit("ds01q-stu1", "#!/bin/sh\necho CVD=$CUDA_VISIBLE_DEVICES\necho NVD=$NVIDIA_VISIBLE_DEVICES\n"
                           "echo ID=$DS01Q_JOB_ID SL=$SLURM_JOB_ID\nid -u\n", "--mig", "2g.10gb")
    job = daemon.wait_state(job_id, "COMPLETED")
    assert job["exit_code"] == 0 and len(job["slices"]) == 1
    out = daemon.workdir("ds01q-stu1") / f"ds01q-{job_id}.out"
    text = out.read_text()
    assert f"CVD={job['slices'][0]}" in text
    assert f"NVD={job['slices'][0]}" in text
    assert f"ID={job_id} SL={job_id}" in text
    import pwd

    pw = pwd.getpwnam("ds01q-stu1")
    assert str(pw.pw_uid) in text.split()
    assert out.stat().st_uid == pw.pw_uid
    assert set(job) >= DESIGN_KEYS
    states = [e["state"] for e in job["events"]]
    assert states[0] == "PENDING" and states[-1] == "COMPLETED" and "RUNNING" in states


def test_exit_code_3_is_failed(daemon: Daemon) -> None:
    job_id = daemon.submit("ds01q-stu1", "exit 3\n")
    job = daemon.wait_state(job_id, {"FAILED", "COMPLETED"})
    assert job["state"] == "FAILED" and job["exit_code"] == 3


def test_past_mem_limit_is_out_of_memory(daemon: Daemon) -> None:
    body = "x=$(head -c 200000000 /dev/zero | tr '\\0' 'x')\necho survived ${#x}\n"
    job_id = daemon.submit("ds01q-stu1", body, "--mem", "32m")
    job = daemon.wait_state(job_id, {"OUT_OF_MEMORY", "FAILED", "COMPLETED"}, timeout=60)
    assert job["state"] == "OUT_OF_MEMORY", job


def test_cancel_running_frees_slice_within_2s(daemon: Daemon) -> None:
    job_id = daemon.submit("ds01q-stu1", "sleep 300\n")
    job = daemon.wait_state(job_id, "RUNNING")
    slice_uuid = job["slices"][0]
    r = daemon.cli("ds01q-stu1", "cancel", str(job_id))
    assert r.rc == 0, r
    t0 = time.monotonic()
    job = daemon.wait_state(job_id, "CANCELLED", timeout=10)
    gone_after = time.monotonic() - t0
    assert daemon.containers_left(job_id) == []
    st = daemon.cli_json("root", "status")
    states = {s["uuid"]: s["state"] for g in st["gpus"] for s in g["slices"]}
    assert states[slice_uuid] == "free"
    assert gone_after < 2.0, f"took {gone_after:.2f}s"


def test_other_user_cannot_cancel(daemon: Daemon) -> None:
    job_id = daemon.submit("ds01q-stu1", "sleep 30\n")
    r = daemon.cli("ds01q-stu2", "cancel", str(job_id))
    assert r.rc != 0 and "only ds01q-stu1 or an admin" in r.err
    assert daemon.cli("ds01q-stu1", "cancel", str(job_id)).rc == 0


def test_four_at_once_then_fifth_waits_for_resources(daemon: Daemon) -> None:
    ids = [daemon.submit("ds01q-adm1", "sleep 8\n", name=f"j{i}.sh") for i in range(4)]
    fifth = daemon.submit("ds01q-adm1", "echo fifth\n", name="j5.sh")
    jobs = [daemon.wait_state(i, "RUNNING", timeout=30) for i in ids]
    slices = [j["slices"][0] for j in jobs]
    assert len(set(slices)) == 4
    starts = [j["started_at"] for j in jobs]
    ends = [daemon.show(i)["ended_at"] for i in ids]
    assert all(e is None for e in ends), "all four must be running at the same time"
    time.sleep(1.5)
    p = daemon.show(fifth)
    assert p["state"] == "PENDING" and p["reason"] == "Resources", p
    done = daemon.wait_state(fifth, "COMPLETED", timeout=40)
    assert done["started_at"] >= min(starts)
    first_end = min(daemon.show(i)["ended_at"] for i in ids)
    assert done["started_at"] >= first_end


def test_bad_input_is_one_line_and_queues_nothing(daemon: Daemon, tmp_path) -> None:
    before = daemon.cli_json("root", "queue")
    r = daemon.cli("ds01q-stu1", "submit", "--mig", "9g.99gb", str(daemon.script("ds01q-stu1", "a.sh", "true\n")))
    assert r.rc != 0 and r.err.count("\n") <= 1 and "is not a MIG profile" in r.err, r
    unreadable = daemon.script("ds01q-stu1", "secret.sh", "true\n")
    unreadable.chmod(0)
    r = daemon.cli("ds01q-stu1", "submit", str(unreadable))
    assert r.rc != 0 and r.err.count("\n") <= 1 and "cannot read script" in r.err, r
    r = daemon.cli("ds01q-stu1", "submit", str(daemon.workdir("ds01q-stu1") / "missing.sh"))
    assert r.rc != 0 and r.err.count("\n") <= 1, r
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  student: {max_runtime: 24 hours}\n")
    r = daemon.cli("root", "--config", str(bad), "admin", "db", "upgrade")
    assert r.rc != 0 and r.err.strip() == ("ds01q: error: groups.student.max_runtime: '24 hours' is not a duration "
                                           "like 30m, 24h, 2d"), r
    assert daemon.cli_json("root", "queue") == before


def test_submit_wait_exits_with_job_exit_code(daemon: Daemon) -> None:
    path = daemon.script("ds01q-stu1", "w.sh", "echo waited\nexit 7\n")
    r = daemon.cli("ds01q-stu1", "submit", "--wait", str(path))
    assert r.rc == 7, r
    job_id = int(r.out.split()[-1])
    logs = daemon.cli("ds01q-stu1", "logs", str(job_id))
    assert logs.out.strip() == "waited"
    assert daemon.cli("ds01q-stu2", "logs", str(job_id)).rc != 0


def test_queue_history_json(daemon: Daemon) -> None:
    a = daemon.submit("ds01q-stu1", "sleep 20\n")
    daemon.wait_state(a, "RUNNING")
    q = daemon.cli_json("ds01q-stu2", "queue")
    assert [j["id"] for j in q] == [a]
    assert "workdir" not in q[0]  # other users do not see private fields
    b = daemon.submit("ds01q-stu1", "true\n")
    daemon.wait_state(b, "COMPLETED")
    h = daemon.cli_json("ds01q-stu1", "history")
    assert [j["id"] for j in h] == [b]
    daemon.cli("ds01q-stu1", "cancel", str(a))


def test_container_runs_under_the_users_cgroup_slice(make_daemon) -> None:
    import json
    import subprocess

    d: Daemon = make_daemon(executor={"cgroup": {"root": "ds01", "scheme": "ds01-infra"}})
    job_id = d.submit("h.baker", "sleep 30\n", name="cg.sh")
    d.wait_state(job_id, "RUNNING")
    (cid,) = d.containers(job_id)
    info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True).stdout)[0]
    driver = subprocess.run(["docker", "info", "--format", "{{.CgroupDriver}}"], capture_output=True,
                            text=True).stdout.strip()
    parent = info["HostConfig"]["CgroupParent"]
    if driver == "systemd":
        assert parent == "ds01-student-h_baker.slice"
    else:
        # the job's own cgroup sits inside the user's slice, so its totals outlive the container
        assert parent.startswith("/ds01.slice/ds01-student.slice/ds01-student-h_baker.slice/")
    with open(f"/proc/{info['State']['Pid']}/cgroup") as f:
        assert "ds01.slice/ds01-student.slice/ds01-student-h_baker.slice" in f.read()
    labels = info["Config"]["Labels"]
    assert labels["ds01q.job"] == str(job_id) and labels["ds01q.user"] == "h.baker" and labels["ds01.user"] == "h.baker"
    assert labels["ds01.gpu.uuids"] == ",".join(d.show(job_id)["slices"])
    assert info["HostConfig"]["SecurityOpt"] == ["no-new-privileges"] and not info["HostConfig"]["Privileged"]
    d.cli("h.baker", "cancel", str(job_id))
