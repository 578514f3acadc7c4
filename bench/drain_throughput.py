"""Drain N one-slice jobs over S slices through ds01q's Docker executor, beside plain `docker run`
of the same containers with S at a time, measured in the same run. Prints figures; asserts nothing.

    python bench/drain_throughput.py [--jobs 200] [--slices 8] [--repeat 3] [--json]

Each round runs both, alternating which goes first; the figures are medians over the rounds (``ratio``
is the median of each round's own ratio), with the load average at the end of each round.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._daemon import BenchDaemon, gpus  # noqa: E402
from ds01q.client.api import Client  # noqa: E402
from ds01q.types import JobState  # noqa: E402

IMAGE = "ds01q/busybox:test"


def plain(jobs: int, width: int) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(lambda _: subprocess.run(["docker", "run", "--rm", IMAGE, "true"], check=True,
                                               capture_output=True), range(jobs)))
    return time.perf_counter() - t


def through_ds01q(d: BenchDaemon, jobs: int) -> float:
    script = d.script("one.sh", "true\n")
    with Client(d.sock) as c:
        t = time.perf_counter()
        ids = [c.submit(script, workdir=str(d.root), mig="1g.5gb") for _ in range(jobs)]
        left = list(ids)
        # the earliest job not seen ended, one `show` each 50 ms: a `queue` of every job 20 times a
        # second took about a third of the daemon's request thread (py-spy), on the cores being measured
        while left:
            if JobState(c.show(left[0])["state"]).is_final:
                left.pop(0)
            else:
                time.sleep(0.05)
        elapsed = time.perf_counter() - t
        bad = [i for i in ids if c.show(i)["state"] != "COMPLETED"]
    if bad:
        raise RuntimeError(f"{len(bad)} jobs did not complete, e.g. {bad[:3]}")
    return elapsed


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds; each runs both, alternating which goes first (the load on a shared machine drifts)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    per_gpu = 7
    n_gpus = -(-a.slices // per_gpu)
    inv = gpus(n_gpus, ["1g.5gb"] * per_gpu)
    extra = n_gpus * per_gpu - a.slices
    if extra:
        inv[-1]["mig"] = inv[-1]["mig"][: per_gpu - extra]
    subprocess.run(["docker", "run", "--rm", IMAGE, "true"], check=True, capture_output=True)
    rounds = []
    for r in range(a.repeat):
        t: dict[str, float] = {}
        for which in (("ds01q", "plain") if r % 2 == 0 else ("plain", "ds01q")):
            if which == "ds01q":
                with BenchDaemon(inv) as d:
                    t[which] = through_ds01q(d, a.jobs)
            else:
                t[which] = plain(a.jobs, a.slices)
        row = {"round": r + 1, "docker_run_s": round(t["plain"], 2), "ds01q_s": round(t["ds01q"], 2),
               "ratio": round(t["ds01q"] / t["plain"], 3), "load": load()}
        rounds.append(row)
        if a.repeat > 1 and not a.json:
            print("  ".join(f"{k}: {v}" for k, v in row.items()), flush=True)
    out = {"jobs": a.jobs, "slices": a.slices, "rounds": a.repeat,
           "docker_run_s": round(statistics.median(x["docker_run_s"] for x in rounds), 2),
           "ds01q_s": round(statistics.median(x["ds01q_s"] for x in rounds), 2),
           "ratio": round(statistics.median(x["ratio"] for x in rounds), 3), "load": load()}
    if a.json:
        out["each"] = rounds
    print(json.dumps(out) if a.json else "\n".join(f"{k:>14}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
