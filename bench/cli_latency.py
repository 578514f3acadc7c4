"""Wall time of `ds01q queue` (a thin client: Python start, imports, one socket round trip) with
N jobs queued, beside `docker ps` on the same machine. Prints figures; asserts nothing.

    python bench/cli_latency.py [--jobs 200] [--runs 21] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._daemon import BenchDaemon, gpus  # noqa: E402
from ds01q.client.api import Client  # noqa: E402

DS01Q = str(Path(sys.executable).parent / "ds01q")


def timed(argv: list[str], env: dict[str, str], runs: int) -> float:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with BenchDaemon(gpus(1, ["2g.10gb"] * 3)) as d:
        script = d.script("s.sh", "sleep 600\n")
        with Client(d.sock) as c:
            for _ in range(a.jobs):
                c.submit(script, workdir=str(d.root))
        env = dict(os.environ, DS01Q_SOCKET=d.sock)
        out = {"jobs": a.jobs, "runs": a.runs,
               "ds01q_queue_median_s": round(timed([DS01Q, "queue"], env, a.runs), 4),
               "ds01q_queue_json_median_s": round(timed([DS01Q, "queue", "--json"], env, a.runs), 4),
               "docker_ps_median_s": round(timed(["docker", "ps"], env, a.runs), 4)}
        with Client(d.sock) as c:
            c.cancel(*[j["id"] for j in c.queue()])
    print(json.dumps(out) if a.json else "\n".join(f"{k:>26}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
