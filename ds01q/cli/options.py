"""The job-request options shared by `ds01q submit` and `ds01q shell`."""
from __future__ import annotations

from typing import Any

import click


def request_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--mig", help="One MIG slice of this profile, e.g. 2g.10gb."),
        click.option("--gpus", type=int, help="N whole GPUs on one node; 0 for CPU only."),
        click.option("--gres", help="Slurm style: gpu:N or gpu:PROFILE:1."),
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
    if env:
        kw["env"] = env
    return kw
