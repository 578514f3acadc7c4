"""`ds01q report` (usage like sreport) and `ds01q admin accounting rollup`: thin clients of the daemon."""
from __future__ import annotations

import csv
import sys
from typing import Any, Sequence

import click

from ds01q.cli import output
from ds01q.client.api import Client

COLUMNS = [("jobs", "JOBS"), ("gpu_equiv_hours", "GPU-EQ-H"), ("gpu_mem_gb_hours", "GPU-MEM-GB-H"),
           ("cpu_hours", "CPU-H"), ("wall_hours", "WALL-H"), ("energy_kwh", "KWH"), ("co2_g", "CO2-G")]
KEYS = {"user": ["user", "group"], "group": ["group", "users"], "cgroup": ["cgroup", "user"],
        "period": ["period", "user", "group"]}


def _c(ctx: click.Context) -> Client:
    return Client(config=ctx.find_root().obj.get("config"))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _table(rows: Sequence[dict[str, Any]], by: str) -> None:
    keys = KEYS.get(by, KEYS["user"])
    output.table([k.upper() for k in keys] + [h for _, h in COLUMNS],
                 [[_fmt(r.get(k)) for k in keys] + [_fmt(r.get(k)) for k, _ in COLUMNS] for r in rows])


def _csv(rows: Sequence[dict[str, Any]]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    w = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)


@click.command()
@click.option("--by", default="user", show_default=True, help="Group by user, group, cgroup or period.")
@click.option("--period", default="day", show_default=True, help="With --by period: day or month.")
@click.option("--since", default=None, help="Start: a date (2026-11-01), a time, or a duration back (7d). "
                                            "Default: 30 days ago.")
@click.option("--until", default=None, help="End (exclusive): a date, a time or a duration back. Default: now.")
@click.option("--top", type=int, default=None, help="Only the N users with the most GPU-equivalent hours.")
@click.option("--user", "-u", default=None, help="Only this user (admins; users always see their own).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG chart to this file (usage over time with --by period).")
@click.pass_context
def report(ctx: click.Context, by: str, period: str, since: str | None, until: str | None, top: int | None,
           user: str | None, as_json: bool, as_csv: bool, plot_path: str | None) -> None:
    """Usage by user, group, cgroup or period (like sreport): GPU-equivalent hours, CPU hours, energy.

    \b
    Examples:
      ds01q report --by user --since 30d
      ds01q report --by period --period day --plot usage.png
    """
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    args = {"by": by, "period": period, "since": since, "until": until, "top": top, "user": user}
    with _c(ctx) as c:
        rows: list[dict[str, Any]] = c.call("report", **{k: v for k, v in args.items() if v is not None})
    if plot_path:
        from ds01q.accounting.report import plot

        plot(rows, plot_path)
    if as_json:
        output.emit_json(rows)
    elif as_csv:
        _csv(rows)
    else:
        _table(rows, by)
        if plot_path:
            click.echo(f"chart written to {plot_path}")


@click.group()
def accounting() -> None:
    """Accounting rollups (admins)."""


@accounting.command()
@click.option("--period", default="day", show_default=True, help="day or month.")
@click.option("--until", default=None, help="Roll up periods that end by 00:00 UTC of this date (2026-11-29). "
                                            "Default: every complete period.")
@click.option("--rebuild", is_flag=True, help="Recompute every period from the first job record on.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rollup(ctx: click.Context, period: str, until: str | None, rebuild: bool, as_json: bool) -> None:
    """Roll job records up into per-period sums (cron runs this nightly and monthly).

    \b
    Examples:
      ds01q admin accounting rollup --period day    # idempotent; config/ds01q.cron runs it nightly
      ds01q admin accounting rollup --period month
    """
    args: dict[str, Any] = {"period": period, "rebuild": rebuild}
    if until is not None:
        args["until"] = until
    with _c(ctx) as c:
        r: dict[str, Any] = c.call("admin.accounting.rollup", **args)
    if as_json:
        output.emit_json(r)
        return
    span = f" ({r['first']} .. {r['last']})" if r["periods"] else ""
    click.echo(f"{r['period']}: {r['periods']} period(s) rolled up{span}, {r['rows']} row(s); "
               f"done until {r['done_until'] or '-'}; {r['dirty_left']} period(s) left dirty")
