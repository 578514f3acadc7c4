"""Replay traces under several policies and cluster sizes; print a markdown table.

    python bench/simulate_table.py --trace /work/shared/traces/elasticflow-itp/cluster05.csv \
        --gpus 12 16 --policies fifo backfill --estimate exact user

Each row is one ``ds01q.tools.simulate.simulate`` run, plus its wall time. Prints, never asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ds01q.tools.simulate import simulate

COLUMNS = ("trace", "gpus", "policy", "estimate", "jobs", "mean_wait_s", "p50_wait_s", "p99_wait_s", "mean_jct_s",
           "makespan_s", "utilization", "jain_fairness", "max_pending", "wall_s")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:,.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", nargs="+", required=True)
    parser.add_argument("--gpus", nargs="+", type=int, required=True)
    parser.add_argument("--policies", nargs="+", default=["fifo", "backfill"])
    parser.add_argument("--estimate", nargs="+", default=["exact"])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = parser.parse_args(argv)
    if not args.json:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
    for trace in args.trace:
        for gpus in args.gpus:
            for estimate in args.estimate:
                for policy in args.policies:
                    t0 = time.perf_counter()
                    row = simulate(trace, gpus, policy, users=args.users, estimate=estimate)
                    row["wall_s"] = round(time.perf_counter() - t0, 1)
                    row["trace"] = os.path.basename(trace)
                    if args.json:
                        print(json.dumps(row), flush=True)
                    else:
                        print("| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
