"""Submit→RUNNING and submit→COMPLETED for a trivial job through ds01q, beside plain `docker run`
of the same image, measured in the same run. Prints figures; asserts nothing.

    python bench/e2e_latency.py [--runs 20] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._daemon import BenchDaemon, gpus  # noqa: E402
from ds01q.client.api import Client  # noqa: E402

IMAGE = "ds01q/busybox:test"


def docker_run_s() -> float:
    t = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", IMAGE, "true"], check=True, capture_output=True)
    return time.perf_counter() - t


def ds01q_run(c: Client, script: str, workdir: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    job_id = c.submit(script, workdir=workdir)
    running = None
    while True:
        st = c.show(job_id)["state"]
        now = time.perf_counter() - t0
        if running is None and st in ("RUNNING", "COMPLETED"):
            running = now
        if st in ("COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT"):
            if st != "COMPLETED":
                raise RuntimeError(f"job {job_id} ended {st}")
            return running if running is not None else now, now
        time.sleep(0.005)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with BenchDaemon(gpus(1, ["2g.10gb", "2g.10gb", "2g.10gb"])) as d:
        script = d.script("true.sh", "true\n")
        docker_run_s()  # warm the engine and page cache
        plain, to_run, to_done = [], [], []
        with Client(d.sock) as c:
            ds01q_run(c, script, str(d.root))
            for _ in range(a.runs):  # interleaved, so both see the same machine
                plain.append(docker_run_s())
                r, done = ds01q_run(c, script, str(d.root))
                to_run.append(r)
                to_done.append(done)
    med = statistics.median
    out = {
        "runs": a.runs,
        "docker_run_median_s": round(med(plain), 4),
        "submit_to_running_median_s": round(med(to_run), 4),
        "submit_to_completed_median_s": round(med(to_done), 4),
        "completed_over_docker_run": round(med(to_done) / med(plain), 3),
        "overhead_vs_docker_run_s": round(med(to_done) - med(plain), 4),
    }
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>30}: {v}")


if __name__ == "__main__":
    main()
