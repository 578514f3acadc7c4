"""Reading accounting back: per-job figures for ``ds01q history``, ``sreport``-like
usage reports, and a PNG chart of them.

Where a report's numbers come from. The window ``[since, until)`` is covered, in
order, by (1) whole months and (2) whole days that have been rolled up and are not
marked dirty (their rollup rows are exact), and (3) raw ``job_usage`` rows for the
rest (the current day, the ragged ends of the window, dirty periods), split with the
same rules as the rollup (see ``ds01q.accounting.rollup``). Running jobs are added
live: share × time so far, CPU, peak memory and energy from their samples. So a
report is the same whether or not the cron rollup has run; the rollups only make
long windows cheap.

``jobs`` counts the runs that *started* in the window (a requeued job counts once per
run; a job that never ran is not counted); usage of a run that started before the
window is still split into it.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from ds01q.accounting.models import JobUsage, Rollup, RollupDirty, RollupWatermark, UsageSample
from ds01q.accounting.record import DEFAULT_CGROUP_ROOT, cgroup_of, energy_kwh
from ds01q.accounting.rollup import (
    PERIODS, Buckets, Totals, floor_period, next_period, period_bounds, period_label, stream_runs,
)
from ds01q.db.models import Allocation, Job
from ds01q.types import HOLDING_NAMES

__all__ = ["BY", "USAGE_KEYS", "ReportQuery", "build_report", "cover", "history_usage", "plot"]

BY = ("user", "group", "cgroup", "period")
USAGE_KEYS = ("wall_s", "gpu_equiv_s", "gpu_mem_gb_h", "cpu_s", "max_rss_bytes", "energy_kwh", "co2_g")
_IDS_PER_QUERY = 500


def _co2(kwh: float | None, g_per_kwh: float | None) -> float | None:
    return kwh * g_per_kwh if kwh is not None and g_per_kwh else None


# ------------------------------------------------------------------ history

def history_usage(session: Session, job_ids: Iterable[int],
                  carbon_g_per_kwh: float | None = None) -> dict[int, dict[str, Any]]:
    """Usage per job id, summed over the job's runs (``runs`` says how many). Every id asked for
    gets an entry; the values are None for a job without a record (not ended, or ended before
    accounting was installed). ``co2_g`` is None unless a carbon intensity is given."""
    ids = list(dict.fromkeys(job_ids))
    out: dict[int, dict[str, Any]] = {i: dict.fromkeys(USAGE_KEYS) | {"runs": 0} for i in ids}
    for n in range(0, len(ids), _IDS_PER_QUERY):
        q = select(JobUsage).where(JobUsage.job_id.in_(ids[n:n + _IDS_PER_QUERY])).order_by(JobUsage.run)
        for r in session.scalars(q):
            d = out[r.job_id]
            d["runs"] += 1
            for k in ("wall_s", "gpu_equiv_s", "gpu_mem_gb_h", "cpu_s", "energy_kwh"):
                v = getattr(r, k)
                if v is not None:
                    d[k] = (d[k] or 0.0) + v
            if r.max_rss_bytes is not None:
                d["max_rss_bytes"] = max(d["max_rss_bytes"] or 0, r.max_rss_bytes)
    for d in out.values():
        d["co2_g"] = _co2(d["energy_kwh"], carbon_g_per_kwh)
    return out


# ------------------------------------------------------------------ reports

@dataclass(frozen=True)
class ReportQuery:
    since: float
    until: float
    by: str = "user"
    period: str = "day"
    top: int | None = None
    user: str | None = None  # only this user's records (always set for non-admins)


class _Live(NamedTuple):
    """A running job, shaped like a job_usage row for Buckets."""

    id: int
    started_at: float
    ended_at: float
    wall_s: float
    user: str
    group: str
    cgroup: str
    gpu_equiv_s: float
    gpu_mem_gb_h: float
    cpu_s: float | None
    max_rss_bytes: int | None
    energy_kwh: float | None


def cover(since: float, until: float, done_until: dict[str, float | None], dirty: dict[str, set[float]],
          levels: Sequence[str] = ("month", "day")) -> list[tuple[str, float, float]]:
    """Cut [since, until) into ("month"|"day", start, end) pieces served by clean rollups and
    ("raw", start, end) pieces read from job records (adjacent raw pieces merged)."""
    out: list[tuple[str, float, float]] = []
    t = since
    while t < until:
        for kind in levels:
            end = next_period(kind, t)
            wm = done_until.get(kind)
            if floor_period(kind, t) == t and end <= until and wm is not None and end <= wm \
                    and t not in dirty.get(kind, set()):
                out.append((kind, t, end))
                t = end
                break
        else:
            end = min(next_period("day", floor_period("day", t)), until)
            if out and out[-1][0] == "raw" and out[-1][2] == t:
                out[-1] = ("raw", out[-1][1], end)
            else:
                out.append(("raw", t, end))
            t = end
    return out


Contribs = dict[tuple[float, str, str, str], Totals]  # (day or month start, user, group, cgroup)


def _add(contribs: Contribs, p0: float, sums: dict[tuple[str, str, str], Totals]) -> None:
    for (u, g, c), t in sums.items():
        cur = contribs.get((p0, u, g, c))
        if cur is None:
            contribs[(p0, u, g, c)] = cur = Totals()
        cur.merge(t)


def _from_rollups(session: Session, kind: str, starts: list[float], user: str | None, contribs: Contribs) -> None:
    if not starts:
        return
    wanted = set(starts)
    q = select(Rollup).where(Rollup.period == kind, Rollup.period_start >= min(starts),
                             Rollup.period_start <= max(starts))
    if user is not None:
        q = q.where(Rollup.user == user)
    for r in session.scalars(q):
        if r.period_start in wanted:
            _add(contribs, r.period_start, {(r.user, r.group, r.cgroup): Totals.of(r)})


def _live_runs(session: Session, now: float, user: str | None, cgroup_root: str) -> list[_Live]:
    q = select(Job).where(Job.state.in_(HOLDING_NAMES), Job.started_at.is_not(None), Job.started_at < now)
    if user is not None:
        q = q.where(Job.user == user)
    jobs = list(session.scalars(q))
    if not jobs:
        return []
    ids = [j.id for j in jobs]
    share: dict[int, float] = defaultdict(float)
    mem: dict[int, int] = defaultdict(int)
    for a in session.scalars(select(Allocation).where(Allocation.job_id.in_(ids), Allocation.released_at.is_(None))):
        share[a.job_id] += a.gpu_equiv
        mem[a.job_id] += a.memory_mb
    samples: dict[int, list[Any]] = defaultdict(list)
    for s in session.scalars(select(UsageSample).where(UsageSample.job_id.in_(ids)).order_by(UsageSample.at)):
        samples[s.job_id].append(s)
    out = []
    for j in jobs:
        start = float(j.started_at)  # type: ignore[arg-type]
        mine = [s for s in samples[j.id] if start <= s.at <= now]
        cpus = [s.cpu_s for s in mine if s.cpu_s is not None]
        peaks = [v for s in mine for v in (s.max_rss_bytes, s.mem_bytes) if v is not None]
        wall = now - start
        out.append(_Live(j.id, start, now, wall, j.user, j.group, cgroup_of(j.group, j.user, cgroup_root),
                         share[j.id] * wall, mem[j.id] / 1024 * wall / 3600, max(cpus) if cpus else None,
                         max(peaks) if peaks else None, energy_kwh([(s.at, s.power_w) for s in mine], start, now)))
    return out


def _collect(session: Session, q: ReportQuery, now: float, cgroup_root: str) -> Contribs:
    wms = {w.period: w.done_until for w in session.scalars(select(RollupWatermark))}
    dirty: dict[str, set[float]] = {k: set() for k in PERIODS}
    for kind, p0 in session.execute(select(RollupDirty.period, RollupDirty.period_start)):
        dirty.setdefault(kind, set()).add(p0)
    levels = ("day",) if (q.by == "period" and q.period == "day") else ("month", "day")
    contribs: Contribs = {}
    pieces = cover(q.since, q.until, wms, dirty, levels)
    for kind in levels:
        _from_rollups(session, kind, [a for k, a, _ in pieces if k == kind], q.user, contribs)
    users = [q.user] if q.user is not None else None
    for _, a, b in (p for p in pieces if p[0] == "raw"):
        stream_runs(lambda: nullcontext(session), Buckets(period_bounds("day", a, b)),
                    lambda p0, _p1, sums: _add(contribs, p0, sums), users)
    live = Buckets(period_bounds("day", q.since, q.until))
    for run in _live_runs(session, min(now, q.until), q.user, cgroup_root):
        live.add(run)
    for p0, _p1, sums in live.pop_final():
        _add(contribs, p0, sums)
    return contribs


def _top_users(contribs: Contribs, n: int) -> set[str]:
    per: dict[str, float] = defaultdict(float)
    for (_, u, _, _), t in contribs.items():
        per[u] += t.gpu_equiv_s
    return {u for u, _ in sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))[:n]}


def _row(key: dict[str, Any], t: Totals, users: set[str], carbon: float | None) -> dict[str, Any]:
    r = dict(key)
    if "user" not in r:
        r = {"user": None, **r, "users": len(users)}
    r.update({
        "jobs": t.jobs,
        "wall_hours": round(t.wall_s / 3600, 9),
        "gpu_equiv_hours": round(t.gpu_equiv_s / 3600, 9),
        "gpu_mem_gb_hours": round(t.gpu_mem_gb_h, 9),
        "cpu_hours": round(t.cpu_s / 3600, 9),
        "max_rss_bytes": t.max_rss_bytes,
        "energy_kwh": None if t.energy_kwh is None else round(t.energy_kwh, 9),
        "co2_g": None if t.energy_kwh is None or not carbon else round(t.energy_kwh * carbon, 6),
    })
    return r


def build_report(session: Session, q: ReportQuery, now: float, *, carbon_g_per_kwh: float | None = None,
                 cgroup_root: str = DEFAULT_CGROUP_ROOT) -> list[dict[str, Any]]:
    """Rows grouped by ``q.by``: user → (user, group); group → group (user None, ``users`` counted);
    cgroup → cgroup with its user and group; period → (period, user, group), oldest period first.
    Other orders: most GPU-equivalent hours first. ``q.top`` keeps the N users with the most."""
    contribs = _collect(session, q, now, cgroup_root)
    if q.top is not None:
        keep = _top_users(contribs, q.top)
        contribs = {k: v for k, v in contribs.items() if k[1] in keep}
    groups: dict[tuple[Any, ...], tuple[Totals, set[str]]] = {}
    for (p0, u, g, c), t in contribs.items():
        if q.by == "user":
            key: tuple[Any, ...] = (("user", u), ("group", g))
        elif q.by == "group":
            key = (("group", g),)
        elif q.by == "cgroup":
            key = (("user", u), ("group", g), ("cgroup", c))
        else:
            key = (("period", period_label(q.period, floor_period(q.period, p0))), ("user", u), ("group", g))
        tot, users = groups.setdefault(key, (Totals(), set()))
        tot.merge(t)
        users.add(u)
    rows = [_row(dict(k), t, users, carbon_g_per_kwh) for k, (t, users) in groups.items()]
    rows.sort(key=lambda r: (-r["gpu_equiv_hours"], str(r.get("user")), str(r["group"])))
    if q.by == "period":
        rows.sort(key=lambda r: r["period"])
    return rows


# ------------------------------------------------------------------ chart

def plot(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Write a PNG chart of GPU-equivalent hours: stacked bars per period (one colour per user,
    or group) when the rows have a ``period``, else one bar per row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_ylabel("GPU-equivalent hours")
    if not rows:
        ax.text(0.5, 0.5, "no usage in this window", ha="center", va="center", transform=ax.transAxes)
    elif "period" in rows[0]:
        periods = sorted({r["period"] for r in rows})
        series: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(periods))
        for r in rows:
            series[str(r.get("user") or r["group"])][periods.index(r["period"])] += r["gpu_equiv_hours"]
        bottom = [0.0] * len(periods)
        for name, ys in sorted(series.items()):
            ax.bar(periods, ys, bottom=bottom, label=name)
            bottom = [b + y for b, y in zip(bottom, ys)]
        ax.set_title("GPU-equivalent hours per period")
        ax.legend(fontsize="small", ncols=max(1, len(series) // 12 + 1))
        ax.tick_params(axis="x", labelrotation=45)
    else:
        labels = [str(r.get("cgroup") or r.get("user") or r["group"]) for r in rows]
        ax.bar(labels, [r["gpu_equiv_hours"] for r in rows])
        ax.set_title("GPU-equivalent hours")
        ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    fig.savefig(path, format="png")
