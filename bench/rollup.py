"""Time the accounting rollup over a large synthetic history on SQLite.

    python bench/rollup.py --jobs 1000000 --days 365 --users 200 --json

Builds ``--jobs`` job_usage records (plus ``--samples`` usage_samples per job) in
a temporary SQLite file with plain executemany, ids in order of job end as the
daemon writes them: start times uniform over ``--days`` days, walls mostly
minutes to hours with a tail up to 48 h (so many runs cross midnight), 5 % that
never ran, shares of 0 (CPU only), 1/7, 2/7, 3/7 and 1 or 2 whole GPUs.
No dirty marks are written: the first rollup covers everything from the first
record on, as it does on a fresh install. The jobs table is left empty, so the
build connection does not enforce the foreign keys; the timed runs use the
daemon's own engine (``ds01q.db.engine.make_engine``).

Then, each in a fresh child process (so its peak RSS is its own):
``report_raw`` (one ``ds01q report --by user`` over the whole history before any
rollup), ``rollup_day`` and ``rollup_month`` (the first, full rollups), ``rollup_again``
(a second day rollup: nothing to do), and ``report_rollups`` (the same report, now
served from the rollups).
Prints seconds and peak RSS (VmHWM) per step; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ds01q.accounting.record import cgroup_of  # noqa: E402
from ds01q.accounting.rollup import floor_period  # noqa: E402

START = 1_767_225_600.0  # 2026-01-01 00:00 UTC
SHARES = [(0.0, 0, ""), (1 / 7, 9728, "1g.10gb"), (2 / 7, 9984, "2g.10gb"), (3 / 7, 19968, "3g.20gb"),
          (1.0, 40960, "full"), (2.0, 81920, "full")]
STEPS = ("report_raw", "rollup_day", "rollup_month", "rollup_again", "report_rollups")
BATCH = 50_000


def _walls(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.05:
        return 0.0
    return min(rng.lognormvariate(math.log(1800), 1.5), 48 * 3600.0)


def build(path: str, jobs: int, days: int, users: int, samples: int, seed: int) -> None:
    import sqlite3

    rng = random.Random(seed)
    groups = ["student", "researcher", "staff"]
    people = [(f"user{n:04d}", groups[n % 3]) for n in range(users)]
    cgroups = {u: cgroup_of(g, u) for u, g in people}
    rows = []
    for _ in range(jobs):
        user, group = people[min(int(rng.paretovariate(1.2)) - 1, users - 1) if rng.random() < 0.7
                             else rng.randrange(users)]
        start = START + rng.uniform(0, days * 86400.0)
        wall = _walls(rng)
        share, mem, prof = rng.choice(SHARES)
        cpu = rng.uniform(0, wall * 4) if rng.random() < 0.9 else None
        rss = rng.randrange(1 << 20, 64 << 30) if cpu is not None else None
        kwh = share * 250 * wall / 3.6e6 if share and rng.random() < 0.5 else None
        rows.append((user, group, cgroups[user], start, start + wall, wall, share, mem, prof, cpu, rss, kwh))
    rows.sort(key=lambda r: r[4])
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    with con:
        for n in range(0, len(rows), BATCH):
            con.executemany(
                "INSERT INTO job_usage (job_id, run, user, \"group\", cgroup, state, exit_code, started_at, ended_at,"
                " wall_s, gpu_share, gpu_mem_mb, profiles, gpu_equiv_s, gpu_mem_gb_h, cpu_s, max_rss_bytes,"
                " energy_kwh, recorded_at) VALUES (?, 1, ?, ?, ?, 'COMPLETED', 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(n + i + 1, u, g, c, s, e, w, sh, mem, prof, sh * w, mem / 1024 * w / 3600, cpu, rss, kwh, e)
                 for i, (u, g, c, s, e, w, sh, mem, prof, cpu, rss, kwh) in enumerate(rows[n:n + BATCH])])
        for n in range(0, len(rows), BATCH):
            con.executemany(
                "INSERT INTO usage_samples (job_id, at, cpu_s, mem_bytes, max_rss_bytes, gpu_util, power_w)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(n + i + 1, r[3] + r[5] * (k + 1) / (samples + 1), r[9], r[10], r[10], 50.0, 250.0 * r[6])
                 for i, r in enumerate(rows[n:n + BATCH]) for k in range(samples)])
    con.close()


def create_schema(path: str) -> None:
    from sqlalchemy import create_engine

    import ds01q.accounting.models  # noqa: F401
    from ds01q.db.models import Base

    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (reset by exec, unlike ru_maxrss, which keeps the parent's)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def step(name: str, path: str, now: float) -> dict[str, Any]:
    """One timed step, run in this (child) process."""
    from ds01q.accounting.report import ReportQuery, build_report
    from ds01q.accounting.rollup import rollup
    from ds01q.db.engine import make_engine, make_sessionmaker

    sm = make_sessionmaker(make_engine(f"sqlite:///{path}"))
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    if name.startswith("rollup"):
        res = rollup(sm, "month" if name == "rollup_month" else "day", None, now)
        out.update(periods=res.periods, rows=res.rows)
    else:
        with sm() as s:
            rows = build_report(s, ReportQuery(since=START, until=now, by="user"), now)
        out.update(rows=len(rows), gpu_equiv_hours=round(sum(r["gpu_equiv_hours"] for r in rows), 1))
    out["seconds"] = round(time.perf_counter() - t0, 3)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--samples", type=int, default=1, help="usage_samples per job")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    a = ap.parse_args()
    now = floor_period("month", START + (a.days + 40) * 86400.0)  # every run has ended, months complete
    if a.step:
        print(json.dumps(step(a.step, a.db, now)))
        return
    with tempfile.TemporaryDirectory(prefix="ds01q-bench-") as d:
        path = os.path.join(d, "acct.db")
        t0 = time.perf_counter()
        create_schema(path)
        build(path, a.jobs, a.days, a.users, a.samples, a.seed)
        result: dict[str, Any] = {"jobs": a.jobs, "samples": a.jobs * a.samples, "days": a.days,
                                  "users": a.users, "build_s": round(time.perf_counter() - t0, 1),
                                  "db_mb": round(os.path.getsize(path) / 2**20, 1)}
        for name in STEPS:
            proc = subprocess.run([sys.executable, __file__, "--step", name, "--db", path], capture_output=True,
                                  text=True, check=False)
            if proc.returncode != 0:
                result[name] = {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
            else:
                result[name] = json.loads(proc.stdout)
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['jobs']} job records + {result['samples']} samples over {result['days']} days, "
          f"{result['users']} users: built in {result['build_s']} s, {result['db_mb']} MB")
    for name in STEPS:
        r = result[name]
        extra = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("seconds", "peak_rss_mb"))
        print(f"  {name:<15} {r.get('seconds', '-'):>8} s  peak RSS {r.get('peak_rss_mb', '-'):>7} MB  ({extra})")


if __name__ == "__main__":
    main()
