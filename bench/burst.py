"""A burst of clients against one daemon, then the batch API. Prints figures; asserts nothing.

    python bench/burst.py [--procs 20] [--per-proc 100] [--batch 1000] [--batches 5] [--json]

Phase 1: ``--procs`` client processes, released at the same moment, each submitting
``--per-proc`` jobs one by one over its own connection: how many got an id, how many
failed (and the first error), jobs/s. Phase 2: ``Client.submit_many`` in batches of
``--batch``: jobs/s through the batch API. Jobs are submitted held, so nothing runs.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._daemon import BenchDaemon, gpus  # noqa: E402
from ds01q.client.api import Client  # noqa: E402


def client_proc(sock: str, script: str, workdir: str, n: int, go: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    ids: list[int] = []
    errors: list[str] = []
    go.wait()
    try:
        with Client(sock, timeout=120) as c:
            for _ in range(n):
                try:
                    ids.append(c.submit(script, workdir=workdir, hold=True))
                except Exception as e:  # counted and reported
                    errors.append(f"{type(e).__name__}: {e}")
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
    out.put((ids, errors))


def burst(d: BenchDaemon, procs: int, per_proc: int) -> dict[str, object]:
    script = d.script("held.sh", "true\n")
    go, out = mp.Event(), mp.Queue()
    ps = [mp.Process(target=client_proc, args=(d.sock, script, str(d.root), per_proc, go, out)) for _ in range(procs)]
    for p in ps:
        p.start()
    time.sleep(0.5)
    t = time.perf_counter()
    go.set()
    results = [out.get(timeout=600) for _ in ps]
    elapsed = time.perf_counter() - t
    for p in ps:
        p.join()
    ids = [i for r, _ in results for i in r]
    errors = [e for _, es in results for e in es]
    return {"burst_clients": procs, "burst_submits": procs * per_proc, "burst_got_ids": len(ids),
            "burst_unique_ids": len(set(ids)), "burst_errors": len(errors),
            "burst_first_error": errors[0] if errors else "", "burst_s": round(elapsed, 2),
            "burst_jobs_per_s": round(len(ids) / elapsed, 1)}


def batch(d: BenchDaemon, size: int, batches: int) -> dict[str, object]:
    body = "#!/bin/sh\ntrue\n"
    jobs = [{"script": body, "workdir": str(d.root), "hold": True} for _ in range(size)]
    with Client(d.sock, timeout=300) as c:
        c.submit_many(jobs[:10])  # warm up
        t = time.perf_counter()
        n = sum(len(c.submit_many(jobs)) for _ in range(batches))
        elapsed = time.perf_counter() - t
    return {"batch_size": size, "batch_jobs": n, "batch_s": round(elapsed, 2),
            "batch_jobs_per_s": round(n / elapsed, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=20)
    ap.add_argument("--per-proc", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with BenchDaemon(gpus(1, ["1g.5gb"] * 7)) as d:
        out = burst(d, a.procs, a.per_proc)
        out.update(batch(d, a.batch, a.batches))
    print(json.dumps(out) if a.json else "\n".join(f"{k:>18}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
