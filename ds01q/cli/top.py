"""`ds01q top`: a live full-screen view of the GPUs and their slices (with utilisation where NVML gives it),
the running jobs, and the pending jobs with their reason and estimated start. ``frame`` is pure (two
socket answers in, one rich renderable out); ``top`` polls and redraws it on a TTY, or prints it once."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ds01q.cli.arrays_view import collapse
from ds01q.cli.output import elapsed, request_text, short_time
from ds01q.client.api import Client

STATE_STYLE = {"free": "green", "busy": "yellow", "drained": "red"}


def _eta(iso_time: str | None, now: datetime) -> str:
    if not iso_time:
        return "-"
    at = datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
    secs = int((at - now).total_seconds())
    if secs <= 0:
        return "now"
    h, rem = divmod(secs, 3600)
    return f"in {h}h{rem // 60:02d}m" if h else f"in {rem // 60}m{rem % 60:02d}s"


def gpu_table(status: dict[str, Any]) -> Table:
    t = Table(title="GPUs and slices", expand=True, title_justify="left")
    for col in ("GPU", "NAME", "UTIL", "SLICE", "PROFILE", "STATE", "JOB", "USER"):
        t.add_column(col, no_wrap=True)
    for g in status.get("gpus", []):
        util = "-" if g.get("utilization") is None else f"{g['utilization']:.0f}%"
        name = g["name"] + (" [DRAINED]" if g.get("drained") else "")
        for i, s in enumerate(g["slices"] or [{}]):
            state = s.get("state", "")
            t.add_row(str(g["index"]) if i == 0 else "", name if i == 0 else "", util if i == 0 else "",
                      s.get("uuid", "")[-12:], s.get("profile", ""), Text(state, style=STATE_STYLE.get(state, "")),
                      str(s.get("job") or ""), s.get("user") or "")
    return t


def frame(status: dict[str, Any], queue: list[dict[str, Any]], now: datetime | None = None,
          max_rows: int = 20) -> Group:
    """One screen: GPUs, running jobs, pending jobs (arrays on one line)."""
    now = now or datetime.now(timezone.utc)
    running = [j for j in queue if j["state"] in ("STARTING", "RUNNING", "STOPPING")]
    waiting = collapse([j for j in queue if j["state"] in ("PENDING", "HELD")])
    head = Text(f"ds01q top  {now.astimezone().strftime('%H:%M:%S')}  running {len(running)}  "
                f"pending {sum(j.get('tasks', 1) for j in waiting)}", style="bold")
    run_t = Table(title="Running", expand=True, title_justify="left")
    for col in ("JOBID", "NAME", "USER", "REQ", "SLICES", "ELAPSED", "STATE"):
        run_t.add_column(col, no_wrap=True)
    for j in running[:max_rows]:
        run_t.add_row(j.get("label") or str(j["id"]), j["name"][:24], j["user"], request_text(j["request"]),
                      ",".join(s[-12:] for s in j.get("slices") or []) or "-", elapsed(j), j["state"])
    pend_t = Table(title="Pending", expand=True, title_justify="left")
    for col in ("JOBID", "NAME", "USER", "REQ", "REASON", "ETA", "SUBMITTED"):
        pend_t.add_column(col, no_wrap=True)
    for j in waiting[:max_rows]:
        pend_t.add_row(j["label"], j["name"][:24], j["user"], request_text(j["request"]),
                       j.get("reason") or "-", _eta(j.get("estimated_start"), now), short_time(j.get("submitted_at")))
    more = len(waiting) - max_rows
    parts: list[Any] = [head, gpu_table(status), run_t, pend_t]
    if more > 0:
        parts.append(Text(f"… and {more} more pending lines (ds01q queue)"))
    return Group(*parts)


@click.command()
@click.option("--interval", "-n", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one frame and exit (the default when not on a terminal).")
@click.pass_context
def top(ctx: click.Context, interval: float, once: bool) -> None:
    """A live view of GPUs, slices, running and pending jobs (Ctrl-C quits).

    \\b
    Examples:
      ds01q top
      ds01q top -n 5
      ds01q top --once | less -R
    """
    console = Console()
    with Client(config=ctx.obj.get("config")) as c:
        if once or not console.is_terminal:
            console.print(frame(c.status(), c.queue()))
            return
        try:
            with Live(frame(c.status(), c.queue()), console=console, screen=True, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(frame(c.status(), c.queue()), refresh=True)
        except KeyboardInterrupt:
            return
