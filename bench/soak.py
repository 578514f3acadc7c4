"""Soak: N short jobs through a daemon that is SIGKILLed every S seconds and restarted at once.
Prints figures; asserts nothing.

    python bench/soak.py [--jobs 500] [--kill-every 5] [--slices 14] [--json]

Each job appends its id to a marker file, then sleeps 0.2-1 s. The jobs are queued in one
idempotent batch (a lost reply is retried under the same key). Figures: completed, lost
(submitted but not COMPLETED, or COMPLETED without having run; must be 0), run twice (more
than one line in the marker; must be 0), kills, total time, and the daemon log's error lines.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._daemon import BenchDaemon, gpus  # noqa: E402
from ds01q.client.api import FINAL, Client  # noqa: E402
from ds01q.errors import ServerUnavailable  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--kill-every", type=float, default=5.0)
    ap.add_argument("--slices", type=int, default=14)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    n_gpus = -(-a.slices // 7)
    rng = random.Random(5)
    with BenchDaemon(gpus(n_gpus, ["1g.5gb"] * 7)) as d:
        marker = d.root / "marker"
        jobs = [{"script": f"#!/bin/sh\necho $DS01Q_JOB_ID >> {marker}\nsleep {rng.uniform(0.2, 1.0):.2f}\n",
                 "workdir": str(d.root), "mig": "1g.5gb"} for _ in range(a.jobs)]
        t0 = time.perf_counter()
        done = threading.Event()
        kills = [0]

        def killer() -> None:
            while not done.wait(a.kill_every):
                d.kill()
                kills[0] += 1
                d.start()

        threading.Thread(target=killer, daemon=True).start()
        with Client(d.sock, timeout=120) as c:
            ids = c.submit_many(jobs)
        states: dict[int, str] = {}
        deadline = time.monotonic() + a.timeout
        while time.monotonic() < deadline:
            try:
                with Client(d.sock, timeout=30) as c:
                    left = [i for i in ids if states.get(i) not in FINAL]
                    for i in left:
                        states[i] = c.show(i)["state"]
            except ServerUnavailable:
                continue
            if all(states.get(i) in FINAL for i in ids):
                break
            time.sleep(1)
        done.set()
        elapsed = time.perf_counter() - t0
        runs = collections.Counter(int(x) for x in marker.read_text().split()) if marker.exists() else {}
        completed = [i for i in ids if states.get(i) == "COMPLETED"]
        lost = [i for i in ids if states.get(i) != "COMPLETED" or runs.get(i, 0) == 0]
        twice = [i for i, n in runs.items() if n > 1]
        log = (d.root / "server.log").read_text(errors="replace")
    out = {"jobs": a.jobs, "kill_every_s": a.kill_every, "kills": kills[0], "completed": len(completed),
           "lost": len(lost), "run_twice": len(twice), "total_s": round(elapsed, 1),
           "other_states": dict(collections.Counter(states.get(i, "?") for i in lost)),
           "log_tracebacks": log.count("Traceback"), "log_double_allocation": log.count("double allocation")}
    print(json.dumps(out) if a.json else "\n".join(f"{k:>22}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
