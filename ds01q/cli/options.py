"""The job-request options shared by `ds01q submit` and `ds01q shell`."""
from __future__ import annotations

from typing import Any

import click


def request_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--mig", help="One MIG slice of this profile, e.g. 2g.10gb."),
        click.option("--gpus", type=int, help="N whole GPUs on one node; 0 for CPU only."),
        click.option("--gres", help="Slurm style: gpu:N, gpu:MODEL:N (e.g. a100) or gpu:PROFILE:1."),
        click.option("--gpu-mem", help="Any slice with at least this much GPU memory, e.g. 10g."),
        click.option("--cpus", type=float, help="CPUs for the container."),
        click.option("--mem", help="Memory limit, e.g. 512m or 32g."),
        click.option("--time", "time_", help="Time limit: 30m, 24h, 2d or [D-]HH:MM:SS."),
        click.option("--image", help="Container image (from the allow-list)."),
        click.option("--name", "-J", help="Job name."),
        click.option("--nice", type=int, default=None, help="Lower your own job's priority by N."),
        click.option("--env", "-e", multiple=True, help="KEY=VALUE for the job's environment (repeatable)."),
    ]):
        f = opt(f)
    return f


def request_from(kw: dict[str, Any]) -> dict[str, Any]:
    """Click's keyword arguments → Client.submit options (KEY=VALUE env pairs, --time)."""
    env: dict[str, str] = {}
    for item in kw.pop("env", ()) or ():
        key, sep, val = item.partition("=")
        if not sep:
            raise click.UsageError(f"--env {item!r} is not KEY=VALUE")
        env[key] = val
    kw["time"] = kw.pop("time_", None)
    if not kw.get("hold"):
        kw["hold"] = None  # an unset flag leaves the script's --hold alone
    if env:
        kw["env"] = env
    return kw


def slurm_options(f: Any) -> Any:
    """sbatch's options that ``ds01q submit`` takes too (values as sbatch reads them)."""
    for opt in reversed([
        click.option("--array", "-a", help="Array indices: 0-99, 1,3,5, 0-15:4, with %N to run at most N at once."),
        click.option("--dependency", "-d", help="after|afterok|afternotok|afterany:JOBID[:JOBID], singleton."),
        click.option("--begin", "-b", help="Not before: now+1hour, 16:00, 2026-12-01T08:00."),
        click.option("--error", help="stderr to this file (Slurm's %-patterns); default: with stdout in --output."),
        click.option("--chdir", "-D", help="Working directory of the job."),
        click.option("--signal", help="[B:]SIGNAL[@SECONDS]: send SIGNAL this long (default 60 s) before the time limit."),
        click.option("--mail-type", help="BEGIN,END,FAIL,REQUEUE,ALL,TIME_LIMIT_90,...: run the notify hook then."),
        click.option("--mail-user", help="Address for --mail-type (handed to the notify hook)."),
        click.option("--export", help="VAR[,VAR=value,...]: copy these variables into the job."),
        click.option("--open-mode", type=click.Choice(["append", "truncate"]),
                     help="truncate (default: a fresh job empties its files) or append."),
        click.option("--requeue/--no-requeue", default=None, help="Requeue after a node failure or preemption."),
    ]):
        f = opt(f)
    return f
