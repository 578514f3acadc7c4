"""Issue 4: the inventory changes under running jobs; drain; mig plan; NVML through the pynvml fake."""
from __future__ import annotations

import sys
import time

import pytest
import yaml

from ds01q.mig.profiles import gpu_model, is_valid_layout
from tests.fakes import FakePynvml
from tests.support import Daemon, InProcessDaemon

pytestmark = pytest.mark.docker
GONE = "MIG-00000000-0000-0000-0000-000000000013"


def test_removed_busy_slice_fails_job_which_requeues_and_runs_elsewhere(daemon: Daemon) -> None:
    ids = [daemon.submit("ds01q-adm1", "sleep 6\n", name=f"l{i}.sh") for i in range(4)]
    jobs = {i: daemon.wait_state(i, "RUNNING") for i in ids}
    victim = next(i for i, j in jobs.items() if j["slices"] == [GONE])
    cfg = yaml.safe_load(daemon.config_path.read_text())
    cfg["inventory"]["gpus"][0]["mig"] = [m for m in cfg["inventory"]["gpus"][0]["mig"] if m["uuid"] != GONE]
    daemon.write_config(cfg)
    r = daemon.cli("root", "admin", "inventory", "refresh", "--json")
    assert r.rc == 0, r
    assert r.json()["removed"] == [GONE] and r.json()["failed_jobs"] == [victim]
    ev = daemon.cli_json("root", "status")["events"]
    assert [(e["kind"], e["uuid"]) for e in ev if e["kind"] == "removed"] == [("removed", GONE)]
    assert f"job {victim} stops (NODE_FAIL)" in ev[-1]["detail"]
    deadline = time.monotonic() + 20  # the old container is stopped first, then the job ends and requeues
    while True:
        job = daemon.show(victim)
        states = [(e["state"], e["reason"]) for e in job["events"]]
        if any(s == "NODE_FAIL" for s, _ in states) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ("STOPPING", "stop requested: mig layout changed: its slice is gone") in states
    assert ("NODE_FAIL", "mig layout changed") in states
    assert job["state"] in ("PENDING", "STARTING", "RUNNING")
    assert job["requeue_count"] == 1
    rerun = daemon.wait_state(victim, "RUNNING", timeout=30)
    assert rerun["slices"] and rerun["slices"] != [GONE]
    others_end = min(daemon.wait_state(i, "COMPLETED", timeout=30)["ended_at"] for i in ids if i != victim)
    assert rerun["started_at"] >= others_end
    assert daemon.wait_state(victim, "COMPLETED", timeout=30)["exit_code"] == 0


def test_drained_slice_gets_no_new_jobs_and_status_shows_it(daemon: Daemon) -> None:
    gpu0 = "GPU-00000000-0000-0000-0000-000000000001"
    assert daemon.cli("root", "admin", "drain", gpu0, "--reason", "re-cut").rc == 0
    assert daemon.cli("ds01q-stu1", "admin", "drain", gpu0).rc != 0  # admins only
    job_id = daemon.submit("ds01q-stu1", "sleep 30\n", "--mig", "2g.10gb")
    time.sleep(2)
    job = daemon.show(job_id)
    assert job["state"] == "PENDING" and job["reason"] == "Draining", job
    st = daemon.cli_json("root", "status")
    g = next(g for g in st["gpus"] if g["uuid"] == gpu0)
    assert g["drained"] and g["drain_reason"] == "re-cut"
    assert {s["state"] for s in g["slices"]} == {"drained"}
    text = daemon.cli("root", "status").out
    assert "DRAINED: re-cut" in text
    assert daemon.cli("root", "admin", "resume", gpu0).rc == 0
    ev = daemon.cli_json("root", "status")["events"]
    assert [(e["kind"], e["uuid"], e["by"]) for e in ev[-2:]] == [("drained", gpu0, "root"), ("resumed", gpu0, "root")]
    assert daemon.wait_state(job_id, "RUNNING")["slices"][0].startswith("MIG-")
    daemon.cli("ds01q-stu1", "cancel", str(job_id))


def test_mig_plan_json_on_drained_gpu_with_2g_demand(make_daemon) -> None:
    d: Daemon = make_daemon(inventory={"source": "static", "gpus": [
        {"uuid": "GPU-00000000-0000-0000-0000-00000000000a", "name": "NVIDIA A100-PCIE-40GB",
         "mig": [{"uuid": "MIG-00000000-0000-0000-0000-0000000000a1", "profile": "7g.40gb"}]}]})
    gpu = "GPU-00000000-0000-0000-0000-00000000000a"
    assert d.cli("root", "admin", "drain", gpu).rc == 0
    for i in range(4):
        d.submit("ds01q-stu1", "true\n", "--mig", "2g.10gb", name=f"p{i}.sh")
    plans = d.cli_json("root", "admin", "mig", "plan")
    assert [p["gpu"] for p in plans] == [gpu]
    p = plans[0]
    assert set(p) == {"gpu", "name", "layout", "commands"}
    assert p["layout"].count("2g.10gb") == 3 and is_valid_layout(gpu_model(p["name"]), p["layout"])
    assert any("-cgi" in c for c in p["commands"]) and any("-dgi" in c for c in p["commands"])
    dry = d.cli("root", "admin", "mig", "apply", "--gpu", gpu, "--dry-run")
    assert dry.rc == 0 and dry.out.split("\n")[: len(p["commands"])] == p["commands"]


def test_nvml_inventory_and_layout_change_under_a_real_container(make_daemon, monkeypatch) -> None:
    fake = FakePynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    d: Daemon = make_daemon(cls=InProcessDaemon, inventory={"source": "nvml"})
    st = d.cli_json("root", "status")
    profiles = sorted(s["profile"] for g in st["gpus"] for s in g["slices"])
    assert profiles == sorted(fake.layout(0) + ["full"])
    assert all(s["uuid"].startswith("MIG-") for s in st["gpus"][0]["slices"])
    job_id = d.submit("ds01q-stu1", "sleep 300\n", "--mig", "2g.10gb")
    job = d.wait_state(job_id, "RUNNING")
    old = job["slices"][0]
    fake.set_layout(0, ["3g.20gb", "3g.20gb"])  # the admin re-cuts the GPU under the job
    job = d.wait_state(job_id, "PENDING", timeout=15)
    assert ("NODE_FAIL", "mig layout changed") in [(e["state"], e["reason"]) for e in job["events"]], job
    assert d.containers_left(job_id) == []
    time.sleep(1.5)
    assert d.show(job_id)["reason"] == "NeverFits"
    fake.set_layout(0, ["2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"])
    job = d.wait_state(job_id, "RUNNING", timeout=15)
    assert job["slices"][0] != old and job["slices"][0].startswith("MIG-")
    d.cli("ds01q-stu1", "cancel", str(job_id))
    d.wait_state(job_id, "CANCELLED", timeout=15)


def test_partial_recut_under_a_real_running_container(make_daemon, monkeypatch) -> None:
    """Issue 14's acceptance with the real engine: a GPU cut 3×2g.10gb + 1g.5gb with a job on one 2g.10gb
    is re-cut (`ds01q admin mig apply`) to serve pending 1g.5gb jobs; the 2g job's container is never
    stopped or restarted and keeps its slice, and its busy instance is never destroyed."""
    import json
    import subprocess

    from ds01q.mig import smi

    fake = FakePynvml([("NVIDIA A100-PCIE-40GB", ("2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"))])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(smi, "run_subprocess", fake.nvidia_smi)  # the daemon's MigController runs the fake nvidia-smi
    d: Daemon = make_daemon(cls=InProcessDaemon, inventory={"source": "nvml"})
    big = d.submit("ds01q-adm1", "sleep 300\n", "--mig", "2g.10gb", name="big.sh")
    job = d.wait_state(big, "RUNNING")
    (slice_uuid,) = job["slices"]
    fake.set_instance_busy(slice_uuid)  # its CUDA context: the driver would refuse to destroy it
    (cid,) = d.containers(big)

    def started_at() -> tuple[str, bool]:
        state = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True,
                                          check=True).stdout)[0]["State"]
        return state["StartedAt"], state["Running"]

    before = started_at()
    small = [d.submit("ds01q-adm1", "sleep 300\n", "--mig", "1g.5gb", name=f"s{i}.sh") for i in range(4)]
    d.wait_state(small[0], "RUNNING")  # the one 1g.5gb there is
    busy_gi = next(m.gi_id for m in fake.gpus[0].migs.values() if m.uuid == slice_uuid)
    issued_before = len(fake.commands)
    r = d.cli("root", "admin", "mig", "apply", "--gpu", fake.gpus[0].uuid)
    assert r.rc == 0, r
    for j in small:
        d.wait_state(j, "RUNNING", timeout=30)
    job = d.show(big)
    assert job["state"] == "RUNNING" and job["slices"] == [slice_uuid]
    assert d.containers(big) == [cid] and started_at() == before == (before[0], True)  # never stopped or restarted
    assert slice_uuid in [u for _, _, u in fake.instances(0)]
    issued = [" ".join(c) for c in fake.commands[issued_before:]]
    assert any("-dgi" in c or "-d" in c.split() for c in issued), issued  # instances were destroyed ...
    assert not [c for c in issued if f"-gi {busy_gi} " in c or c.endswith(f"-gi {busy_gi}")]  # ... never the busy one
    for j in [big, *small]:
        d.cli("ds01q-adm1", "cancel", str(j))
