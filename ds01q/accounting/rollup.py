"""Periods, the split of job runs over them, and the rollup into the ``rollups`` table.

Rules (the report reads with the same ones, so rollups and raw records agree):

- Periods are UTC days and UTC calendar months.
- A run ``[started_at, ended_at]`` adds to every period it overlaps in proportion to the
  overlap: wall time, GPU-equivalent seconds, GPU-memory GB-hours, CPU seconds and energy
  are taken as spread evenly over the run. Its peak memory goes to every period it touches
  (as a maximum). It counts as one job in the period where it started. A job that never
  ran (wall 0: cancelled while pending, failed to launch) is not counted as a job; its
  record lies in the period where it ended.
- Only finished runs (``job_usage``) are rolled up. ``on_job_end`` marks every period a
  run overlaps as dirty (``rollup_dirty``), so a run that ends after its periods were rolled
  up makes the next rollup recompute them.
- ``rollup(..., until=None)`` rolls up complete periods only: those that end by the start of
  the current one. ``until=DATE`` rolls up every period that ends on or before 00:00 UTC of
  DATE; a DATE in the future includes the current, incomplete period (runs that end later
  mark it dirty again).
- Each period is recomputed from all the runs that overlap it and replaces its rows in one
  transaction, which also removes its dirty mark (unless a newer run marked it since it was
  read) and moves the watermark past it. Running it again changes nothing; a run that was
  interrupted resumes at the first period it had not committed.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ds01q.accounting.models import JobUsage, Rollup, RollupDirty, RollupWatermark
from ds01q.errors import RequestError
from ds01q.faultpoints import crash_point

__all__ = [
    "PERIODS",
    "Buckets",
    "RollupResult",
    "Totals",
    "check_period",
    "date_start",
    "floor_period",
    "mark_dirty",
    "next_period",
    "period_bounds",
    "period_label",
    "rollup",
    "stream_runs",
    "touched_periods",
]

PERIODS = ("day", "month")
DAY_S = 86400.0
CHUNK = 20_000
Key = tuple[str, str, str]  # user, group, cgroup
# A run as Buckets reads it, by position (report._Live has the same fields in the same order).
RUN_COLUMNS = (JobUsage.id, JobUsage.started_at, JobUsage.ended_at, JobUsage.wall_s, JobUsage.user, JobUsage.group,
               JobUsage.cgroup, JobUsage.gpu_equiv_s, JobUsage.gpu_mem_gb_h, JobUsage.cpu_s, JobUsage.max_rss_bytes,
               JobUsage.energy_kwh)


# ------------------------------------------------------------------ periods

def check_period(period: object) -> str:
    if period not in PERIODS:
        raise RequestError(f"--period {period} is not allowed (allowed: {', '.join(PERIODS)})")
    return str(period)


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def date_start(d: date) -> float:
    """00:00 UTC of ``d`` in Unix seconds."""
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()


def floor_period(kind: str, t: float) -> float:
    """Start of the period of kind ``kind`` that contains ``t``."""
    if kind == "day":
        return t - (t % DAY_S)
    d = _utc(t)
    return datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp()


def next_period(kind: str, start: float) -> float:
    """Start of the period after the one that starts at ``start``."""
    if kind == "day":
        return start + DAY_S
    d = _utc(start)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return datetime(y, m, 1, tzinfo=timezone.utc).timestamp()


def period_bounds(kind: str, a: float, b: float) -> list[float]:
    """``[a, boundaries strictly between a and b ..., b]``: the edges of the periods of ``kind`` cut to [a, b)."""
    out = [a]
    t = next_period(kind, floor_period(kind, a))
    while t < b:
        out.append(t)
        t = next_period(kind, t)
    out.append(b)
    return out


def period_label(kind: str, start: float) -> str:
    d = _utc(start)
    return d.strftime("%Y-%m-%d") if kind == "day" else d.strftime("%Y-%m")


def touched_periods(kind: str, start: float, end: float) -> list[float]:
    """Starts of the periods a run adds to: those it overlaps, or the one it ended in if it never ran."""
    if end <= start:
        return [floor_period(kind, end)]
    out, p = [], floor_period(kind, start)
    while p < end:
        out.append(p)
        p = next_period(kind, p)
    return out


# ------------------------------------------------------------------ splitting runs over periods

class Totals:
    """Sums over runs (or parts of runs). ``energy_kwh`` and ``max_rss_bytes`` stay None until one run knows them."""

    __slots__ = ("jobs", "wall_s", "gpu_equiv_s", "gpu_mem_gb_h", "cpu_s", "max_rss_bytes", "energy_kwh")

    def __init__(self) -> None:
        self.jobs = 0
        self.wall_s = self.gpu_equiv_s = self.gpu_mem_gb_h = self.cpu_s = 0.0
        self.max_rss_bytes: int | None = None
        self.energy_kwh: float | None = None

    def add(self, run: Sequence[Any], frac: float, counted: bool) -> None:
        """Add ``frac`` of a run (a row in RUN_COLUMNS order)."""
        _, _, _, wall, _, _, _, gpu, mem, cpu, rss, kwh = run
        if counted:
            self.jobs += 1
        self.wall_s += wall * frac
        self.gpu_equiv_s += gpu * frac
        self.gpu_mem_gb_h += mem * frac
        if cpu is not None:
            self.cpu_s += cpu * frac
        if kwh is not None:
            self.energy_kwh = (self.energy_kwh or 0.0) + kwh * frac
        if rss is not None and (self.max_rss_bytes is None or rss > self.max_rss_bytes):
            self.max_rss_bytes = int(rss)

    def merge(self, o: Totals) -> None:
        self.jobs += o.jobs
        self.wall_s += o.wall_s
        self.gpu_equiv_s += o.gpu_equiv_s
        self.gpu_mem_gb_h += o.gpu_mem_gb_h
        self.cpu_s += o.cpu_s
        if o.energy_kwh is not None:
            self.energy_kwh = (self.energy_kwh or 0.0) + o.energy_kwh
        if o.max_rss_bytes is not None and (self.max_rss_bytes is None or o.max_rss_bytes > self.max_rss_bytes):
            self.max_rss_bytes = o.max_rss_bytes

    def values(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def of(cls, row: Any) -> Totals:
        t = cls()
        for k in cls.__slots__:
            setattr(t, k, getattr(row, k))
        return t


class Buckets:
    """Runs split over the periods whose edges are ``bounds`` (ascending; the last edge ends the range).

    Periods are handed out in order by ``pop_final(t)`` once no run starting at ``t`` or later
    can touch them any more (the runs are fed in order of start).
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.sums: dict[float, dict[Key, Totals]] = {}
        self._next = 0

    def _add(self, p0: float, run: Sequence[Any], frac: float, counted: bool) -> None:
        per = self.sums.get(p0)
        if per is None:
            per = self.sums[p0] = {}
        key = (run[4], run[5], run[6])
        t = per.get(key)
        if t is None:
            t = per[key] = Totals()
        t.add(run, frac, counted)

    def add(self, run: Sequence[Any]) -> None:
        """Split one run (a row in RUN_COLUMNS order) over the periods it touches."""
        b = self.bounds
        s, e = run[1], run[2]
        if s >= b[-1] or e < b[0]:
            return
        i = max(bisect_right(b, s) - 1, 0)
        wall = e - s
        if wall > 0 and b[i] <= s and e <= b[i + 1]:  # the common case: within one period
            self._add(b[i], run, 1.0, True)
            return
        if wall <= 0:
            if s >= b[0]:
                self._add(b[i], run, 1.0, False)
            return
        last = len(b) - 1
        while i < last and b[i] < e:
            p0, p1 = b[i], b[i + 1]
            overlap = (e if e < p1 else p1) - (s if s > p0 else p0)
            if overlap > 0:
                self._add(p0, run, overlap / wall, p0 <= s < p1)
            i += 1

    def pop_final(self, t: float = math.inf) -> Iterator[tuple[float, float, dict[Key, Totals]]]:
        """(start, end, sums) of each period that ends at or before ``t``, in order, each once."""
        b = self.bounds
        while self._next < len(b) - 1 and b[self._next + 1] <= t:
            p0, p1 = b[self._next], b[self._next + 1]
            self._next += 1
            yield p0, p1, self.sums.pop(p0, {})


def _chunk(session: Session, lo: float, hi: float, after: tuple[float, int] | None,
           users: Sequence[str] | None) -> list[Any]:
    q = select(*RUN_COLUMNS).where(JobUsage.started_at < hi)
    if after is None:
        q = q.where(JobUsage.started_at >= lo)
    else:
        q = q.where(JobUsage.started_at >= after[0]).where(
            ~((JobUsage.started_at == after[0]) & (JobUsage.id <= after[1])))
    if users is not None:
        q = q.where(JobUsage.user.in_(users))
    return list(session.connection().execute(q.order_by(JobUsage.started_at, JobUsage.id).limit(CHUNK)))


def stream_runs(open_session: Callable[[], AbstractContextManager[Session]], buckets: Buckets,
                on_final: Callable[[float, float, dict[Key, Totals]], None],
                users: Sequence[str] | None = None) -> None:
    """Feed every run that may touch ``buckets``' range to it, in order of start, reading in
    chunks (each in its own short session), and call ``on_final`` for each period once it is complete."""
    a, b = buckets.bounds[0], buckets.bounds[-1]
    with open_session() as s:
        max_wall = s.scalar(select(func.max(JobUsage.wall_s))) or 0.0
    lo, after = a - max_wall, None
    while True:
        with open_session() as s:
            rows = _chunk(s, lo, b, after, users)
        for r in rows:
            buckets.add(r)
        if len(rows) < CHUNK:
            break
        after = (rows[-1][1], rows[-1][0])
        for p0, p1, sums in buckets.pop_final(after[0]):
            on_final(p0, p1, sums)
    for p0, p1, sums in buckets.pop_final():
        on_final(p0, p1, sums)


# ------------------------------------------------------------------ dirty marks

def _dirty_upsert(upsert: Any) -> Any:
    stmt = upsert(RollupDirty).values(period=bindparam("b_kind"), period_start=bindparam("b_start"), version=1)
    return stmt.on_conflict_do_update(index_elements=["period", "period_start"],
                                      set_={"version": RollupDirty.version + 1})


# built once: each job's end marks its periods
_DIRTY_UPSERT = {"sqlite": _dirty_upsert(sqlite.insert), "postgresql": _dirty_upsert(postgresql.insert)}


def mark_dirty(session: Session, started_at: float, ended_at: float) -> None:
    """Mark every day and month the run touches as out of date (in the caller's transaction)."""
    marks = [(kind, p0) for kind in PERIODS for p0 in touched_periods(kind, started_at, ended_at)]
    upsert = _DIRTY_UPSERT.get(session.get_bind().dialect.name)
    if upsert is not None:
        session.execute(upsert, [{"b_kind": kind, "b_start": p0} for kind, p0 in marks])
        return
    for kind, p0 in marks:
        row = session.get(RollupDirty, (kind, p0))
        if row is None:
            session.add(RollupDirty(period=kind, period_start=p0, version=1))
        else:
            row.version += 1


# ------------------------------------------------------------------ rollup

@dataclass(frozen=True)
class RollupResult:
    period: str
    periods: int  # periods recomputed
    rows: int  # rollup rows written
    first: float | None  # start of the first period recomputed
    last: float | None  # end of the last one
    done_until: float | None
    dirty_left: int  # periods still marked (beyond `until`, or marked again meanwhile)

    def to_dict(self) -> dict[str, Any]:
        def iso(t: float | None) -> str | None:
            return None if t is None else _utc(t).isoformat(timespec="seconds").replace("+00:00", "Z")

        return {"period": self.period, "periods": self.periods, "rows": self.rows, "first": iso(self.first),
                "last": iso(self.last), "done_until": iso(self.done_until), "dirty_left": self.dirty_left}


def _runs_of(starts: Iterable[float], kind: str) -> list[list[float]]:
    """Group sorted period starts into runs of consecutive periods, each as its bounds list."""
    out: list[list[float]] = []
    for p in sorted(starts):
        if out and out[-1][-1] == p:
            out[-1].append(next_period(kind, p))
        else:
            out.append([p, next_period(kind, p)])
    return out


def _plan(session: Session, kind: str, target_end: float, rebuild: bool) -> tuple[list[list[float]], dict[float, int]]:
    wm = session.get(RollupWatermark, kind)
    done = None if (wm is None or rebuild) else wm.done_until
    marks = dict(session.execute(select(RollupDirty.period_start, RollupDirty.version)
                                 .where(RollupDirty.period == kind, RollupDirty.period_start < target_end)).all())
    starts = set(marks)
    if done is None:
        first = session.scalar(select(func.min(JobUsage.started_at)))
        done = floor_period(kind, first) if first is not None else None
    if done is not None and done < target_end:
        starts.update(period_bounds(kind, done, target_end)[:-1])
    return _runs_of(starts, kind), marks


def _write_period(session_factory: sessionmaker[Session], kind: str, p0: float, p1: float,
                  sums: dict[Key, Totals], version: int | None, now: float) -> int:
    rows = [{"period": kind, "period_start": p0, "user": u, "group": g, "cgroup": c, "computed_at": now,
             **t.values()} for (u, g, c), t in sorted(sums.items())]
    with session_factory.begin() as s:
        s.execute(delete(Rollup).where(Rollup.period == kind, Rollup.period_start == p0))
        if rows:
            s.execute(insert(Rollup.__table__), rows)  # Core executemany, not the ORM's bulk path
        if version is not None:
            s.execute(delete(RollupDirty).where(RollupDirty.period == kind, RollupDirty.period_start == p0,
                                                RollupDirty.version == version))
        wm = s.get(RollupWatermark, kind)
        if wm is None:
            s.add(RollupWatermark(period=kind, done_until=p1, updated_at=now))
        elif wm.done_until is None or p1 > wm.done_until:
            wm.done_until, wm.updated_at = p1, now
    return len(rows)


def rollup(session_factory: sessionmaker[Session], period: str, until: date | None, now: float, *,
           rebuild: bool = False) -> RollupResult:
    """Recompute the rollup rows of every period that needs it (see the module docstring).

    ``rebuild`` recomputes every period from the first run on, as if no rollup had ever run.
    """
    kind = check_period(period)
    target_end = floor_period(kind, date_start(until) if until is not None else now)
    with session_factory() as s:
        runs, marks = _plan(s, kind, target_end, rebuild)
    count = written = 0
    first = last = None

    def on_final(p0: float, p1: float, sums: dict[Key, Totals]) -> None:
        nonlocal count, written, first, last
        written += _write_period(session_factory, kind, p0, p1, sums, marks.get(p0), now)
        crash_point("rollup")  # one period committed, the rest not yet (tests/faults)
        count += 1
        first = p0 if first is None else first
        last = p1

    for bounds in runs:
        stream_runs(session_factory, Buckets(bounds), on_final)
    with session_factory() as s:
        wm = s.get(RollupWatermark, kind)
        left = s.scalar(select(func.count()).select_from(RollupDirty).where(RollupDirty.period == kind)) or 0
    return RollupResult(kind, count, written, first, last, wm.done_until if wm else None, int(left))
