"""Time one scheduling pass over a synthetic snapshot.

    python bench/scheduler_pass.py --pending 10000 --slices 56 --users 50 --repeat 30 --json

The inventory is slices/7 A100s, each split into seven 1g.10gb slices; about
three quarters of them are held by running jobs. Pending jobs are spread over
``--users`` users in three groups and a handful of request shapes (any slice,
any slice with >= 8 GiB, 1g.10gb, 2g.20gb which the layout lacks, one whole
GPU which it lacks too, CPU only), with random submit times, time limits,
nice values and a few held or dependent jobs. Prints, never asserts.

``median_ms``/``p95_ms`` time ``schedule()``; ``read_all_ms`` is the extra time
to read every ``PendingInfo`` of the result (they are built when first read).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

from ds01q.scheduler import GroupPolicy, Limits, PendingJob, RunningJob, Snapshot, schedule
from ds01q.types import RequestKind, ResourceRequest, SliceInfo

NOW = 1_700_000_000.0
SHAPES = (
    ResourceRequest(RequestKind.ANY),
    ResourceRequest(RequestKind.ANY),
    ResourceRequest(RequestKind.ANY, min_mem_mb=8192),
    ResourceRequest(RequestKind.MIG, profile="1g.10gb"),
    ResourceRequest(RequestKind.MIG, profile="2g.20gb"),
    ResourceRequest(RequestKind.GPUS, count=1),
    ResourceRequest(RequestKind.NONE, count=0),
)
GROUPS = {
    "student": GroupPolicy("student", 10, Limits(max_gpus=1.0, max_running_jobs=3, max_runtime_s=86400.0)),
    "researcher": GroupPolicy("researcher", 20, Limits(max_gpus=2.0, max_running_jobs=5, max_runtime_s=172800.0)),
    "admin": GroupPolicy("admin", 30),
}


def build_inventory(n_slices: int) -> tuple[SliceInfo, ...]:
    out = []
    for g in range(max(1, n_slices // 7)):
        for k in range(7):
            out.append(SliceInfo(f"MIG-{g:04d}-{k}", f"GPU-{g:04d}", "1g.10gb", 1, 7, 9728, node=f"n{g // 8}"))
    return tuple(out)


def build_snapshot(pending: int, n_slices: int, users: int, seed: int = 0, policy: str = "backfill") -> Snapshot:
    rng = random.Random(seed)
    slices = build_inventory(n_slices)
    names = [f"user{u:03d}" for u in range(users)]
    group_of = {u: ("student", "researcher", "admin")[i % 3] for i, u in enumerate(names)}
    running = []
    for i, s in enumerate(slices):
        if rng.random() < 0.75:
            user = rng.choice(names)
            running.append(RunningJob(10_000_000 + i, user, group_of[user], (s.uuid,), NOW - rng.uniform(0, 7200),
                                      rng.choice((3600.0, 7200.0, 14400.0)), gpu_equiv=s.gpu_equiv))
    jobs = []
    for i in range(pending):
        user = rng.choice(names)
        jobs.append(PendingJob(
            id=i + 1, user=user, group=group_of[user], request=rng.choice(SHAPES),
            submitted_at=NOW - rng.uniform(0, 86400), time_limit_s=rng.choice((1800.0, 3600.0, 7200.0, 28800.0)),
            interactive=rng.random() < 0.1, nice=rng.choice((0, 0, 0, 10)), held=rng.random() < 0.01,
            dependency="waiting" if rng.random() < 0.01 else "none"))
    usage = {u: rng.uniform(0, 5e5) for u in names}
    return Snapshot(now=NOW, slices=slices, pending=tuple(jobs), running=tuple(running), groups=GROUPS,
                    usage=usage, policy=policy)


def measure(pending: int, n_slices: int, users: int, repeat: int, policy: str = "backfill") -> dict[str, object]:
    snapshot = build_snapshot(pending, n_slices, users, policy=policy)
    schedule(snapshot)  # warm up
    times, reads = [], []
    placed = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = schedule(snapshot)
        t1 = time.perf_counter()
        list(result.pending.values())  # PendingInfo objects are built when first read
        reads.append((time.perf_counter() - t1) * 1000.0)
        times.append((t1 - t0) * 1000.0)
        placed = len(result.placements)
    times.sort()
    return {
        "pending": pending, "slices": len(snapshot.slices), "users": users, "policy": policy, "repeat": repeat,
        "placed": placed, "median_ms": round(statistics.median(times), 3),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 3), "min_ms": round(times[0], 3),
        "read_all_ms": round(statistics.median(reads), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--slices", type=int, default=56)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--policy", default="backfill", choices=("fifo", "priority", "backfill"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    row = measure(args.pending, args.slices, args.users, args.repeat, args.policy)
    if args.json:
        print(json.dumps(row))
    else:
        print(" ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
