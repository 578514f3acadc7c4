"""`ds01q simulate`: replay a GPU job trace through the daemon's own scheduler, in simulated time."""
from __future__ import annotations

import json
import os

import click

from ds01q.errors import RequestError


@click.command()
@click.option("--trace", "trace", required=True, help="CSV with job_id, submission_time, duration, num_gpu.")
@click.option("--gpus", type=int, required=True, help="Whole GPUs in the simulated cluster.")
@click.option("--policy", type=click.Choice(["fifo", "priority", "backfill"]), default="backfill", show_default=True)
@click.option("--users", type=int, default=16, show_default=True, help="Synthetic users the jobs are spread over.")
@click.option("--estimate", type=click.Choice(["exact", "2x", "user"]), default="exact", show_default=True,
              help="Time limits: the real duration, twice it, or a user-like over-estimate.")
@click.option("--gpus-per-node", type=int, default=8, show_default=True)
@click.option("--max-jobs", type=int, default=None, help="Replay only the first N jobs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--mig-policy", default=None,
              help="MIG GPUs (A100-40GB) with the seeded MIG mix: static:<layout>, best-static or auto.")
@click.option("--borrowing", type=click.Choice(["on", "off"]), default="off", show_default=True,
              help="With --quota: jobs beyond it borrow idle slices and are preempted on reclaim.")
@click.option("--quota", type=float, default=None, help="Each user's max_gpus in GPU-equivalents (MIG replay).")
@click.option("--recut-cost", type=float, default=30.0, show_default=True, help="Seconds a re-cut takes.")
@click.option("--json", "as_json", is_flag=True)
def simulate(trace: str, gpus: int, policy: str, users: int, estimate: str, gpus_per_node: int,
             max_jobs: int | None, seed: int, mig_policy: str | None, borrowing: str, quota: float | None,
             recut_cost: float, as_json: bool) -> None:
    """Replay a trace and print wait, JCT, makespan, utilisation and fairness (and, with
    --mig-policy, re-cuts, preemptions and GPU-equivalent utilisation).

    \b
    Examples:
      ds01q simulate --trace cluster.csv --gpus 12 --policy backfill --json
    """
    from ds01q.tools.simulate import simulate as run

    if not os.path.isfile(trace):
        raise RequestError(f"--trace {trace}: no such file")
    try:
        if mig_policy is not None:
            from ds01q.tools.simulate_mig import simulate_mig

            if recut_cost < 0 or (quota is not None and quota <= 0):
                raise ValueError("--recut-cost must be >= 0 and --quota > 0")
            result = simulate_mig(trace, gpus, mig_policy, borrowing == "on", users, quota, recut_cost, seed,
                                  max_jobs, policy)
        else:
            result = run(trace, gpus, policy=policy, users=users, estimate=estimate, seed=seed,
                         gpus_per_node=gpus_per_node, max_jobs=max_jobs)
    except ValueError as e:
        raise RequestError(str(e).splitlines()[0]) from None
    if as_json:
        click.echo(json.dumps(result))
    else:
        for k, v in result.items():
            click.echo(f"{k:>16}: {v}")
