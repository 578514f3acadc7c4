"""MIG replay table: auto re-cuts vs the best static layout (searched) vs FIFO; borrowing on vs off.

    python bench/mig_table.py --trace /work/shared/traces/elasticflow-itp/cluster01.csv --gpus 16 --seeds 0 1 2
    python bench/mig_table.py --trace ... --gpus 16 --borrowing --quota 2 --users 8

Each row is one ``ds01q.tools.simulate_mig.simulate_mig`` run (the seeded MIG mix,
A100-40GB GPUs, re-cut cost 30 s). ``best-static`` searches 4-GPU layout patterns
by coordinate descent, replaying the trace for each; ``fifo`` is the fifo
scheduler on the layout best-static found; ``no-mig`` gives every job a whole
GPU. ``--seeds`` replays each seed of the MIG mix (best-static searches per seed);
prints a markdown table, each seed's mean-JCT gain of auto over best-static, and their
mean. Never asserts.
"""
from __future__ import annotations

import argparse
import time

from ds01q.tools.simulate_mig import simulate_mig

COLUMNS = ("trace", "gpus", "seed", "row", "layout", "jobs", "mean_jct_s", "mean_wait_s", "p99_wait_s",
           "within_quota_mean_wait_s", "gpu_equiv_utilization", "recuts", "preemptions", "wall_s")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:,.0f}"
    return str(value)


def _row(name: str, trace: str, gpus: int, **kw: object) -> dict[str, object]:
    t = time.perf_counter()
    r = simulate_mig(trace, gpus, **kw)  # type: ignore[arg-type]
    r["row"], r["wall_s"] = name, time.perf_counter() - t
    r["trace"] = trace.rsplit("/", 1)[-1]
    r.setdefault("layout", "-")
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trace", nargs="+", required=True)
    p.add_argument("--gpus", nargs="+", type=int, required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the MIG mix (default 0)")
    p.add_argument("--borrowing", action="store_true", help="rows: borrowing on and off (needs --quota)")
    p.add_argument("--quota", type=float, default=None)
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--max-jobs", type=int, default=None)
    a = p.parse_args(argv)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for trace in a.trace:
        for gpus in a.gpus:
            gains = []
            for seed in a.seeds:
                common = dict(users=a.users, max_jobs=a.max_jobs, quota=a.quota, seed=seed)
                rows = []
                if a.borrowing:
                    rows.append(_row("borrowing on (auto)", trace, gpus, mig_policy="auto", borrowing=True, **common))
                    rows.append(_row("borrowing off (auto)", trace, gpus, mig_policy="auto", borrowing=False, **common))
                else:
                    best = _row("best-static", trace, gpus, mig_policy="best-static", **common)
                    auto = _row("auto", trace, gpus, mig_policy="auto", **common)
                    fifo = _row("fifo (best-static layout)", trace, gpus, mig_policy=f"static:{best['layout']}",
                                scheduler="fifo", **common)
                    nomig = _row("no-mig (whole GPUs)", trace, gpus, mig_policy="static:full", **common)
                    rows += [auto, best, fifo, nomig]
                    gains.append(1 - float(auto["mean_jct_s"]) / float(best["mean_jct_s"]))  # type: ignore[arg-type]
                for r in rows:
                    print("| " + " | ".join(_cell(r.get(c, "-")) for c in COLUMNS) + " |", flush=True)
            if gains:
                each = ", ".join(f"seed {s}: {g:.1%}" for s, g in zip(a.seeds, gains))
                print(f"\nmean-JCT gain of auto over best-static: {each}; mean {sum(gains) / len(gains):.1%}\n",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
