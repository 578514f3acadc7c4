"""Deliverable 5: GPU processes that belong to no ds01q job are found from NVML's running-process
lists (the fake, with real processes), shown with their user in `ds01q status` and the metrics,
warned and then signalled after the grace; the process of a ds01q job on the same GPU is never touched."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.fakes.fake_pynvml import FakePynvml
from tests.security.conftest import assert_served
from tests.support import Daemon, InProcessDaemon, ensure_user


def test_foreign_gpu_process_is_shown_warned_and_signalled(make_daemon, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fake = FakePynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    d: Daemon = make_daemon(cls=InProcessDaemon, inventory={"source": "nvml"},
                            security={"foreign_gpu_processes": "signal", "foreign_gpu_grace": "2s"})
    pw = ensure_user("ds01q-stu2")
    rogue = subprocess.Popen(["sleep", "300"], user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    try:
        job_id = d.submit("ds01q-stu1", "sleep 300\n", "--gpus", "1")
        job = d.wait_state(job_id, "RUNNING")
        gpu_index = next(g.index for g in fake.gpus if g.uuid == job["slices"][0])
        job_pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", d.containers(job_id)[0]],
                                     capture_output=True, text=True, check=True).stdout)
        fake.run_process(gpu_index, job_pid, used_mb=500)   # the job's own process: never foreign
        fake.run_process(gpu_index, rogue.pid, used_mb=300)  # bare-metal use beside it
        deadline = time.monotonic() + 20
        seen: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() < deadline and not seen:
            seen = d.cli_json("root", "status").get("foreign_gpu_processes") or []
            time.sleep(0.3)
        assert [(p["pid"], p["user"], p["used_mb"]) for p in seen] == [(rogue.pid, "ds01q-stu2", 300)], seen
        shown = d.cli("ds01q-res1", "status")
        assert f"outside the queue: pid {rogue.pid} of ds01q-stu2" in shown.out, shown
        from prometheus_client import generate_latest

        from ds01q.daemon.metrics import make_registry
        body = generate_latest(make_registry(d.ctx)).decode()
        assert "ds01q_foreign_gpu_processes{" in body and "ds01q-stu2" not in body  # pseudonymised
        assert rogue.wait(timeout=30) == -15  # SIGTERM after the grace
        assert d.show(job_id)["state"] == "RUNNING"  # the job's process was not touched
        assert json.loads(subprocess.run(["docker", "inspect", "-f", "{{json .State.Running}}",
                                          d.containers(job_id)[0]], capture_output=True, text=True).stdout)
        assert_served(d)
        d.cli("ds01q-stu1", "cancel", str(job_id))
    finally:
        if rogue.poll() is None:
            rogue.kill()
            rogue.wait()
