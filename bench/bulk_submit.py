"""Bulk submit: an array of N tasks in one request (``Client.submit(..., array="0-N")``, the ``submit`` op with
``array``) through a real daemon's socket, beside single submits one by one and Slurm's published sustained
rate (500 jobs/s). Prints figures; asserts nothing.

    python bench/bulk_submit.py [--tasks 10000] [--repeat 5] [--singles 500] [--database URL] [--json]

The tasks are submitted held (``--hold``) so that none starts while the benchmark runs; a held array takes
the same statements as a pending one plus one more event row per task.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._daemon import BenchDaemon, gpus  # noqa: E402
from ds01q.client.api import Client  # noqa: E402

SLURM_JOBS_PER_S = 500  # Slurm's published sustained submit rate, as shared/docs/design.md quotes it


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--singles", type=int, default=500)
    ap.add_argument("--database", default=None, help="a database URL instead of the daemon's own SQLite file")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    d = BenchDaemon(gpus(1, ["2g.10gb"] * 3), executor="process")
    if a.database:
        cfg = yaml.safe_load(d.config.read_text())
        cfg["database"] = a.database
        d.config.write_text(yaml.safe_dump(cfg))
    with d:
        script = d.script("task.sh", "#!/bin/sh\n#SBATCH --gpus=0\necho $SLURM_ARRAY_TASK_ID\n")
        array_s = []
        with Client(d.sock, timeout=600) as c:
            for _ in range(a.repeat):
                t = time.perf_counter()
                job_id = c.submit(script, workdir=str(d.root), array=f"0-{a.tasks - 1}", hold=True)
                array_s.append(time.perf_counter() - t)
                assert c.last_result["array"]["tasks"] == a.tasks, c.last_result
            t = time.perf_counter()
            for _ in range(a.singles):
                c.submit(script, workdir=str(d.root), hold=True)
            single_s = time.perf_counter() - t
            last = c.show(job_id + a.tasks - 1)
        best, median = min(array_s), statistics.median(array_s)
        out = {
            "database": a.database or "sqlite (file)",
            "tasks_per_array": a.tasks,
            "repeats": a.repeat,
            "array_median_s": round(median, 3),
            "array_best_s": round(best, 3),
            "array_jobs_per_s_median": round(a.tasks / median),
            "single_submits": a.singles,
            "single_jobs_per_s": round(a.singles / single_s),
            "slurm_published_jobs_per_s": SLURM_JOBS_PER_S,
            "array_vs_slurm": round(a.tasks / median / SLURM_JOBS_PER_S, 1),
            "last_task": f"{last['array_job_id']}_{last['array_task_id']} {last['state']}",
        }
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:>28}: {v}")


if __name__ == "__main__":
    main()
