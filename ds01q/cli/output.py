"""How results look: JSON for --json, rich tables on a terminal, plain columns otherwise.
Commands never format output themselves."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any, Sequence

import click


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def short_time(iso: str | None) -> str:
    if not iso:
        return "-"
    t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return t.astimezone().strftime("%m-%d %H:%M:%S")


def elapsed(job: dict[str, Any]) -> str:
    if not job.get("started_at"):
        return "0:00"
    start = datetime.fromisoformat(job["started_at"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(job["ended_at"].replace("Z", "+00:00")) if job.get("ended_at") else datetime.now(
        timezone.utc)
    s = max(0, int((end - start).total_seconds()))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def request_text(req: dict[str, Any]) -> str:
    kind = req.get("kind")
    if kind == "none":
        return "cpu"
    if kind == "gpus":
        return f"gpu:{req.get('count')}"
    if kind == "mig":
        return str(req.get("profile"))
    return f"any>={req['min_mem_mb']}M" if req.get("min_mem_mb") else "any"


HISTORY_FIELDS = ("id", "name", "user", "group", "state", "exit_code", "reason", "slices", "submitted_at", "started_at",
                  "ended_at", "wall_s", "gpu_equiv_s", "gpu_mem_gb_h", "cpu_s", "max_rss_bytes", "energy_kwh", "co2_g",
                  "runs", "priority", "image", "time_limit_s", "requeue_count", "node")


def cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".")
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, box=None, header_style="bold")
        for h in headers:
            t.add_column(h)
        for r in rows:
            t.add_row(*(str(x) for x in r))
        Console().print(t)
        return
    widths = [max([len(str(h))] + [len(str(r[i])) for r in rows]) for i, h in enumerate(headers)]
    click.echo("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in rows:
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())


def job_rows(jobs: Sequence[dict[str, Any]], long: bool = False, start: bool = False) -> None:
    headers = ["JOBID", "NAME", "USER", "GROUP", "STATE", "REQ", "TIME", "SLICES/REASON"]
    if long:
        headers += ["PRIORITY", "GROUP_F", "AGE_F", "FAIRSHARE_F", "BOOST", "NICE"]
    if start:
        headers += ["START_EST"]
    rows = []
    for j in jobs:
        where = ",".join(s[:16] for s in j["slices"]) if j["slices"] else f"({j.get('reason') or '-'})"
        if j["slices"] and j.get("node") and j["node"] != "local":  # several nodes: say which
            where = f"{j['node']}:{where}"
        st = j["state"] + ("(borrowing)" if j.get("borrowing") else "")
        r: list[Any] = [j.get("label", j["id"]), j["name"][:20], j["user"], j["group"], st, request_text(j["request"]),
                        elapsed(j), where]
        if long:
            f = j.get("priority_factors") or {}
            r += [j["priority"], f.get("group", "-"), f.get("age", "-"), f.get("fairshare", "-"),
                  f.get("boost", j.get("boost", 0)), f.get("nice", j.get("nice", 0))]
        if start:
            r += [short_time(j.get("estimated_start")) if j["state"] == "PENDING" else short_time(j.get("started_at"))]
        rows.append(r)
    table(headers, rows)


def job_detail(j: dict[str, Any]) -> None:
    keys = ["id", "name", "user", "group", "state", "reason", "reason_detail", "explain", "exit_code", "priority",
            "slices", "image", "workdir", "output", "time_limit_s", "submitted_at", "started_at", "ended_at",
            "estimated_start", "borrowing", "node", "array_job_id", "array_task_id", "error", "eligible_at",
            "warnings"]
    if j.get("explain") == j.get("reason_detail"):
        keys.remove("explain")
    for k in keys:
        if k in j and j[k] not in (None, "", []) and not (k == "borrowing" and j[k] is False):
            v = j[k]
            if k == "request":
                v = request_text(v)
            click.echo(f"{k:>16}: {', '.join(v) if isinstance(v, list) else v}")
    click.echo(f"{'request':>16}: {request_text(j['request'])}")
    if j.get("array"):
        a = j["array"]
        click.echo(f"{'array':>16}: {a['tasks']} tasks" + (f", at most {a['throttle']} at once" if a.get("throttle")
                                                          else ""))
    if j.get("dependencies"):
        d = j["dependencies"]
        items = [it["type"] + "".join(f":{r['id']}" + (f"_{r['task']}" if "task" in r else "")
                                      for r in it.get("jobs", [])) for it in d["items"]]
        click.echo(f"{'dependency':>16}: {(',' if d.get('mode', 'all') == 'all' else '?').join(items)}")
    for e in j.get("events", []):
        click.echo(f"{'':>16}  {short_time(e['at'])}  {e['state']:<13} {e['by']:<10} {e['reason'] or ''}")


def bar(compute: int, total: int, state: str) -> str:
    ch = {"free": "░", "busy": "█", "drained": "╳"}.get(state, "?")
    return ch * compute


def status_view(st: dict[str, Any]) -> None:
    daemon = st.get("daemon") or {}
    if daemon.get("executor") == "down":
        click.echo(f"EXECUTOR DOWN: {daemon.get('executor_error') or '?'} (nothing is placed until it is back)")
    if daemon.get("loop") == "stalled":
        click.echo(f"SCHEDULER LOOP STALLED: no pass finished since {daemon.get('last_tick_at')}")
    for step, err in (daemon.get("step_errors") or {}).items():
        click.echo(f"loop step {step} failing: {err}")
    for n in st.get("nodes") or []:
        why = f" ({n['reason']})" if n.get("reason") else ""
        click.echo(f"node {n['name']}: {n['state']}{why}, last heartbeat {short_time(n['last_heartbeat'])}")
    for g in st["gpus"]:
        if st.get("nodes"):
            click.echo(f"[{g['node']}] ", nl=False)
        flag = " [DRAINED: " + (g.get("drain_reason") or "") + "]" if g["drained"] else ""
        util = f"  util {g['utilization']:.0f}%" if g.get("utilization") is not None else ""
        click.echo(f"GPU {g['index']} {g['name']} {g['uuid']}{flag}{util}")
        used = sum(s["compute_slices"] for s in g["slices"])
        total = g["slices"][0]["gpu_compute_slices"] if g["slices"] else 7
        cells = "".join(bar(s["compute_slices"], total, s["state"]) for s in g["slices"]) + "·" * max(0, total - used)
        click.echo(f"  [{cells}]")
        for s in g["slices"]:
            who = f"job {s['job']} ({s['user']})" if s["job"] else ""
            click.echo(f"  {bar(s['compute_slices'], total, s['state']):<7} {s['profile']:<9} {s['uuid']:<42} "
                       f"{s['state']:<8} {who}")
    click.echo(f"pending jobs: {st['pending']}")
    for p in st.get("foreign_gpu_processes") or []:  # GPU use around the queue
        click.echo(f"outside the queue: pid {p['pid']} of {p['user']} on {p['slice_uuid']} "
                   f"({p['used_mb'] if p['used_mb'] is not None else '?'} MB, {p['action']}): {p['command'][:60]}")
