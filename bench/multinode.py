"""Several nodes on this machine: PostgreSQL and Redis in testcontainers, a server and agents
as real processes, the real Docker engine. Prints figures; asserts nothing.

    python bench/multinode.py [--runs 10] [--json]

- ``remote_submit_to_running_median_s``: submit → RUNNING of a trivial job on a remote node
  (server → Redis → agent → Docker → acknowledgement), beside
  ``local_submit_to_running_median_s``: the same job on a single server (dispatch local,
  SQLite), in the same run.
- ``twenty_jobs_two_nodes_s``: 20 one-second jobs on two nodes of 6 slices each, submit of the
  first → all COMPLETED.
- ``node_down_detected_s``: agent killed → the node is DOWN (heartbeat 1s, 3 missed).

Needs ``scripts/ci-services.sh --all`` (the images ds01q/redis:test and ds01q/postgres:test).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._daemon import BenchDaemon, gpus  # noqa: E402
from ds01q.client.api import Client  # noqa: E402
from tests.multinode.cluster import Cluster, Services  # noqa: E402

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT")
ADMIN = {"admin": {"priority": 30, "admin": True, "max_runtime": "1h"}}


def to_running(c: Client, script: str, workdir: str) -> float:
    t0 = time.perf_counter()
    job_id = c.submit(script, workdir=workdir)
    running = None
    while True:
        st = c.show(job_id)["state"]
        if running is None and st in ("RUNNING", "COMPLETED"):
            running = time.perf_counter() - t0
        if st in FINAL:
            if st != "COMPLETED":
                raise RuntimeError(f"job {job_id} ended {st}")
            return running if running is not None else time.perf_counter() - t0
        time.sleep(0.005)


def wait_all(c: Client, ids: list[int], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [c.show(j)["state"] for j in ids]
        if all(s in FINAL for s in states):
            bad = [s for s in states if s != "COMPLETED"]
            if bad:
                raise RuntimeError(f"jobs ended {bad}")
            return
        time.sleep(0.1)
    raise RuntimeError("jobs did not end in time")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out: dict[str, float | int] = {"runs": a.runs}
    with BenchDaemon(gpus(1, ["2g.10gb", "2g.10gb", "2g.10gb"])) as d, Client(d.sock) as c:
        script = d.script("true.sh", "true\n")
        to_running(c, script, str(d.root))  # warm up
        out["local_submit_to_running_median_s"] = round(statistics.median(
            to_running(c, script, str(d.root)) for _ in range(a.runs)), 4)
    services = Services().start()
    try:
        root = Path(tempfile.mkdtemp(prefix="ds01q-bench-mn-", dir="/tmp"))
        root.chmod(0o755)
        cl = Cluster(root, services, {"n1": 2, "n2": 2}, groups=ADMIN, default_group="admin", users={})
        try:
            cl.start()
            cl.wait_nodes({"n1": "UP", "n2": "UP"})
            (root / "one.sh").write_text("sleep 1\n")
            (root / "true.sh").write_text("true\n")
            with Client(cl.server.socket) as c:
                to_running(c, str(root / "true.sh"), str(root))  # warm up
                out["remote_submit_to_running_median_s"] = round(statistics.median(
                    to_running(c, str(root / "true.sh"), str(root)) for _ in range(a.runs)), 4)
                t0 = time.perf_counter()
                ids = [c.submit(str(root / "one.sh"), workdir=str(root), mig="2g.10gb") for _ in range(20)]
                wait_all(c, ids)
                out["twenty_jobs_two_nodes_s"] = round(time.perf_counter() - t0, 2)
            cl.kill_agent("n2")
            t0 = time.perf_counter()
            cl.wait_nodes({"n2": "DOWN"}, timeout=60)
            out["node_down_detected_s"] = round(time.perf_counter() - t0, 2)
        finally:
            cl.stop()
    finally:
        services.stop()
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>36}: {v}")


if __name__ == "__main__":
    main()
