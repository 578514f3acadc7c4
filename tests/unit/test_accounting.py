"""Accounting: per-run records, rollups, reports, fair-share usage and the exporter (tmp SQLite)."""
from __future__ import annotations

import json
import math
import random
import re
from datetime import date
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import ds01q.accounting.models  # noqa: F401  (tables on Base)
from ds01q.db import store
from ds01q.accounting import rollup as rollup_mod
from ds01q.accounting.models import JobUsage, Rollup, RollupDirty, RollupWatermark, UsageSample
from ds01q.accounting.record import cgroup_of, decayed_usage, energy_kwh, on_job_end, on_sample
from ds01q.accounting.report import ReportQuery, build_report, cover, history_usage, plot
from ds01q.accounting.rollup import Buckets, date_start, floor_period, period_bounds, rollup, touched_periods
from ds01q.clock import FakeClock
from ds01q.config import from_dict
from ds01q.db.engine import make_engine, make_sessionmaker
from ds01q.errors import PermissionDenied, RequestError
from ds01q.executors.base import Usage
from ds01q.db.models import Allocation, Base, Gpu, Job, JobEvent, Slice
from ds01q.services import accounting as svc
from ds01q.services.context import Caller, Context

DAY = 86400.0
T0 = date_start(date(2026, 11, 28))  # a Saturday, 00:00 UTC
TWO_G = (2 / 7, 9984, "2g.10gb")
FULL = (1.0, 40960, "full")
ADMIN = Caller(uid=0, gid=0, user="root", admin=True)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path}/acct.db")
    Base.metadata.create_all(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def new_job(s: Session, user: str = "alice", group: str = "student", submitted: float = T0) -> Job:
    job = Job(name="j", user=user, uid=1000, gid=1000, group=group, state="PENDING", request="{}",
              time_limit_s=86400 * 3, image="img", workdir="/tmp", submitted_at=submitted)
    s.add(job)
    s.flush()
    return job


def start(s: Session, job: Job, at: float, slices: list[tuple[float, int, str]]) -> list[Allocation]:
    allocs = [Allocation(job_id=job.id, slice_uuid=f"MIG-{job.id}-{i}-{at}", profile=p, gpu_uuid="GPU-0",
                         gpu_equiv=eq, memory_mb=mb, allocated_at=at - 0.5) for i, (eq, mb, p) in enumerate(slices)]
    s.add_all(allocs)
    job.state, job.started_at, job.ended_at = "RUNNING", at, None
    s.flush()
    return allocs


def finish(s: Session, job: Job, at: float, state: str = "COMPLETED", cpu_s: float | None = None,
           max_rss: int | None = None, **kw: Any) -> None:
    store.release(s, job.id, at)
    job.state, job.ended_at, job.exit_code, job.cpu_s, job.max_rss_bytes = state, at, 0, cpu_s, max_rss
    s.flush()
    on_job_end(s, job, store.allocations_of(s, job.id, active_only=False), at, **kw)


def run_job(db: sessionmaker[Session], user: str, group: str, begin: float, end: float,
            slices: list[tuple[float, int, str]] | None = None, cpu_s: float | None = None) -> int:
    with db.begin() as s:
        job = new_job(s, user, group, begin - 10)
        start(s, job, begin, [TWO_G] if slices is None else slices)
        finish(s, job, end, cpu_s=cpu_s)
        return job.id


def records(db: sessionmaker[Session]) -> list[JobUsage]:
    with db() as s:
        return list(s.scalars(select(JobUsage).order_by(JobUsage.id)))


def rollup_table(db: sessionmaker[Session]) -> list[tuple[Any, ...]]:
    with db() as s:
        return [(r.id, r.period, r.period_start, r.user, r.group, r.cgroup, r.jobs, r.wall_s, r.gpu_equiv_s,
                 r.gpu_mem_gb_h, r.cpu_s, r.max_rss_bytes, r.energy_kwh, r.computed_at)
                for r in s.scalars(select(Rollup).order_by(Rollup.id))]


def random_jobs(db: sessionmaker[Session], n: int, seed: int = 7, days: int = 5) -> None:
    rng = random.Random(seed)
    users = [("alice", "student"), ("bob", "student"), ("carol", "researcher")]
    for _ in range(n):
        user, group = rng.choice(users)
        begin = T0 + rng.uniform(0, days * DAY)
        wall = rng.choice([0.0, rng.uniform(1, 3600), rng.uniform(3600, 2 * DAY)])
        slices = rng.choice([[], [TWO_G], [TWO_G, TWO_G], [FULL]])
        run_job(db, user, group, begin, begin + wall, slices, cpu_s=rng.uniform(0, wall) if rng.random() < 0.8 else None)


def per_user(rows: list[Any], field: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        out[r.user] = out.get(r.user, 0.0) + (getattr(r, field) or 0.0)
    return out


# ------------------------------------------------------------------ per-job records

def test_gpu_equiv_s_is_share_times_wall(db: sessionmaker[Session]) -> None:
    job_id = run_job(db, "alice", "student", T0 + 100, T0 + 1100, [TWO_G, TWO_G], cpu_s=321.5)
    (r,) = records(db)
    assert (r.job_id, r.run, r.state, r.exit_code, r.wall_s) == (job_id, 1, "COMPLETED", 0, 1000.0)
    assert r.gpu_share == pytest.approx(4 / 7)
    assert r.gpu_equiv_s == pytest.approx(4 / 7 * 1000)
    assert r.gpu_mem_gb_h == pytest.approx(2 * 9984 / 1024 * 1000 / 3600)
    assert r.cpu_s == 321.5 and r.profiles == "2g.10gb"
    assert r.cgroup == "ds01q.slice/ds01q-student.slice/ds01q-student-alice.slice"
    with db() as s:
        h = history_usage(s, [job_id, 999])
    assert h[job_id]["gpu_equiv_s"] == pytest.approx(4000 / 7) and h[job_id]["runs"] == 1
    assert h[999] == {"wall_s": None, "gpu_equiv_s": None, "gpu_mem_gb_h": None, "cpu_s": None,
                      "max_rss_bytes": None, "energy_kwh": None, "co2_g": None, "runs": 0}


def test_cgroup_follows_the_configured_root_and_sanitises_names() -> None:
    assert cgroup_of("researcher", "first.last@lab.lan", "ds01") == \
        "ds01.slice/ds01-researcher.slice/ds01-researcher-first_last.slice"
    assert cgroup_of("student", "bob", "bad/root") == "ds01q.slice/ds01q-student.slice/ds01q-student-bob.slice"


def test_requeued_job_gets_one_row_per_run_and_end_is_idempotent(db: sessionmaker[Session]) -> None:
    with db.begin() as s:
        job = new_job(s)
        start(s, job, T0 + 10, [FULL])
        finish(s, job, T0 + 110, state="PREEMPTED", cpu_s=50.0)
        job.state, job.started_at, job.ended_at = "PENDING", None, None  # what a requeue does
        s.flush()
        start(s, job, T0 + 200, [TWO_G])
        finish(s, job, T0 + 500, cpu_s=30.0)
        finish(s, job, T0 + 500, cpu_s=30.0)  # called again for the same run: rewrites, adds nothing
        job_id = job.id
    rows = records(db)
    assert [(r.run, r.state, r.wall_s, r.gpu_share) for r in rows] == [
        (1, "PREEMPTED", 100.0, 1.0), (2, "COMPLETED", 300.0, pytest.approx(2 / 7))]
    with db() as s:
        h = history_usage(s, [job_id])[job_id]
    assert h["runs"] == 2 and h["wall_s"] == 400.0 and h["cpu_s"] == 80.0
    assert h["gpu_equiv_s"] == pytest.approx(100 + 300 * 2 / 7)


def test_job_that_never_ran_has_zero_wall(db: sessionmaker[Session]) -> None:
    with db.begin() as s:
        job = new_job(s)
        job.state, job.ended_at = "CANCELLED", T0 + 50
        on_job_end(s, job, [], T0 + 50)
    (r,) = records(db)
    assert (r.started_at, r.ended_at, r.wall_s, r.gpu_equiv_s, r.cpu_s) == (T0 + 50, T0 + 50, 0.0, 0.0, None)


def test_samples_give_cpu_peak_and_energy(db: sessionmaker[Session]) -> None:
    with db.begin() as s:
        job = new_job(s)
        start(s, job, T0, [FULL])
        on_sample(s, job, Usage(cpu_s=10.0, mem_bytes=100, max_rss_bytes=None), T0 + 10, gpu_util=50.0, power_w=100.0)
        on_sample(s, job, Usage(cpu_s=25.0, mem_bytes=300, max_rss_bytes=250), T0 + 30, power_w=200.0)
        on_sample(s, job, None, T0 + 40)  # nothing to store
        finish(s, job, T0 + 40)  # the cgroup was gone at exit: cpu_s and max_rss from the samples
        job_id = job.id
    with db() as s:
        assert len(list(s.scalars(select(UsageSample)))) == 2
        h = history_usage(s, [job_id], carbon_g_per_kwh=400.0)[job_id]
    joules = 100 * 10 + (100 + 200) / 2 * 20 + 200 * 10
    assert h["cpu_s"] == 25.0 and h["max_rss_bytes"] == 300
    assert h["energy_kwh"] == pytest.approx(joules / 3.6e6)
    assert h["co2_g"] == pytest.approx(joules / 3.6e6 * 400)


def test_energy_needs_power_samples() -> None:
    assert energy_kwh([], 0, 100) is None
    assert energy_kwh([(50.0, None), (60.0, float("nan"))], 0, 100) is None
    assert energy_kwh([(150.0, 300.0)], 0, 100) is None  # outside the run
    assert energy_kwh([(50.0, 360.0)], 0, 100) == pytest.approx(360 * 100 / 3.6e6)


def test_no_co2_without_energy_or_carbon_intensity(db: sessionmaker[Session]) -> None:
    job_id = run_job(db, "alice", "student", T0, T0 + 60)
    with db() as s:
        assert history_usage(s, [job_id], carbon_g_per_kwh=400.0)[job_id]["co2_g"] is None


# ------------------------------------------------------------------ periods

def test_periods_split_at_utc_midnight_and_month_ends() -> None:
    nov30 = date_start(date(2026, 11, 30))
    assert floor_period("day", nov30 + 5) == nov30
    assert floor_period("month", nov30 + 5) == date_start(date(2026, 11, 1))
    assert period_bounds("month", nov30, nov30 + 2 * DAY) == [nov30, date_start(date(2026, 12, 1)), nov30 + 2 * DAY]
    assert touched_periods("day", nov30 - 10, nov30 + 10) == [nov30 - DAY, nov30]
    assert touched_periods("day", nov30, nov30) == [nov30]
    assert touched_periods("day", nov30 - 10, nov30) == [nov30 - DAY]


@settings(max_examples=200, deadline=None)
@given(start=st.floats(0, 10 * DAY), wall=st.one_of(st.just(0.0), st.floats(0.001, 5 * DAY)),
       cuts=st.lists(st.floats(0.5, 9.5 * DAY), max_size=12))
def test_a_run_split_over_any_periods_adds_up_to_the_run(start: float, wall: float, cuts: list[float]) -> None:
    begin = T0 + start
    bounds = sorted({T0 - DAY, *(T0 + c for c in cuts), T0 + 16 * DAY})
    run = (1, begin, begin + wall, wall, "u", "g", "c", 2 * wall, 3 * wall, 0.5 * wall, 7, None)
    b = Buckets(bounds)
    b.add(run)
    parts = [t for _, _, sums in b.pop_final() for t in sums.values()]
    assert sum(t.wall_s for t in parts) == pytest.approx(wall, abs=1e-6)
    assert sum(t.gpu_equiv_s for t in parts) == pytest.approx(2 * wall, abs=1e-6)
    assert sum(t.jobs for t in parts) == (1 if wall > 0 else 0)
    assert all(t.max_rss_bytes == 7 for t in parts) and all(t.energy_kwh is None for t in parts)


def test_hooks_never_commit(db: sessionmaker[Session]) -> None:
    with db() as s:
        job = new_job(s)
        start(s, job, T0, [FULL])
        on_sample(s, job, Usage(cpu_s=1.0, mem_bytes=1, max_rss_bytes=1), T0 + 1, power_w=10.0)
        finish(s, job, T0 + 2)
        decayed_usage(s, T0 + 3, 3600.0)
        s.rollback()
    with db() as s:
        assert s.scalars(select(JobUsage)).all() == [] and s.scalars(select(UsageSample)).all() == []
        assert s.scalars(select(RollupDirty)).all() == [] and s.scalars(select(Job)).all() == []


# ------------------------------------------------------------------ rollups

def test_job_across_a_day_and_month_boundary_is_split_by_overlap(db: sessionmaker[Session]) -> None:
    dec1 = date_start(date(2026, 12, 1))
    run_job(db, "alice", "student", dec1 - 3600, dec1 + 7200, [FULL], cpu_s=300.0)
    now = dec1 + 2 * DAY
    rollup(db, "day", None, now)
    rollup(db, "month", date(2027, 1, 1), now)
    with db() as s:
        rows = {(r.period, r.period_start): r for r in s.scalars(select(Rollup))}
    nov30 = rows[("day", dec1 - DAY)]
    dec1_row = rows[("day", dec1)]
    assert (nov30.jobs, nov30.wall_s, nov30.gpu_equiv_s, nov30.cpu_s) == (1, 3600.0, 3600.0, pytest.approx(100.0))
    assert (dec1_row.jobs, dec1_row.wall_s, dec1_row.gpu_equiv_s) == (0, 7200.0, 7200.0)
    assert dec1_row.cpu_s == pytest.approx(200.0)
    nov = rows[("month", date_start(date(2026, 11, 1)))]
    dec = rows[("month", dec1)]
    assert (nov.gpu_equiv_s, dec.gpu_equiv_s, nov.jobs, dec.jobs) == (3600.0, 7200.0, 1, 0)


def test_rollup_sums_equal_the_job_records(db: sessionmaker[Session]) -> None:
    random_jobs(db, 150)
    recs = records(db)
    for kind, until in (("day", date(2026, 12, 6)), ("month", date(2027, 1, 1))):
        res = rollup(db, kind, until, T0 + 30 * DAY)
        assert res.periods > 0 and res.dirty_left == 0
        with db() as s:
            rows = list(s.scalars(select(Rollup).where(Rollup.period == kind)))
        assert sum(r.jobs for r in rows) == sum(1 for r in recs if r.wall_s > 0) < len(recs)
        for field in ("wall_s", "gpu_equiv_s", "gpu_mem_gb_h", "cpu_s"):
            got, want = per_user(rows, field), per_user(recs, field)
            assert got.keys() == want.keys()
            for u in want:
                assert got[u] == pytest.approx(want[u], rel=1e-9), (kind, field, u)
        assert {(r.user, r.group, r.cgroup) for r in rows} == {(r.user, r.group, r.cgroup) for r in recs}


def test_only_complete_periods_unless_until_says_otherwise(db: sessionmaker[Session]) -> None:
    run_job(db, "alice", "student", T0 + 100, T0 + 200)
    run_job(db, "alice", "student", T0 + DAY + 100, T0 + DAY + 200)  # "today"
    now = T0 + DAY + 300
    res = rollup(db, "day", None, now)
    assert (res.periods, res.done_until, res.dirty_left) == (1, T0 + DAY, 1)
    with db() as s:
        assert [r.period_start for r in s.scalars(select(Rollup))] == [T0]
    res = rollup(db, "day", date(2026, 11, 30), now)  # through today, which is still running
    assert (res.periods, res.done_until, res.dirty_left) == (1, T0 + 2 * DAY, 0)
    with pytest.raises(RequestError, match=r"^--period week is not allowed \(allowed: day, month\)$"):
        rollup(db, "week", None, now)


def test_running_the_rollup_twice_changes_nothing(db: sessionmaker[Session]) -> None:
    random_jobs(db, 80)
    now = T0 + 10 * DAY
    first = rollup(db, "day", None, now)
    table = rollup_table(db)
    again = rollup(db, "day", None, now)
    assert first.periods > 0 and again.periods == 0 and again.rows == 0
    assert rollup_table(db) == table
    rollup(db, "day", None, now + DAY)  # a day later, no new records: the new day is empty
    assert rollup_table(db) == table


def test_an_interrupted_rollup_resumes_where_it_stopped(db: sessionmaker[Session],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    random_jobs(db, 80)
    now = T0 + 8 * DAY
    real, calls = rollup_mod._write_period, []

    def crash_on_third(*a: Any, **kw: Any) -> int:
        calls.append(a[2])
        if len(calls) == 3:
            raise RuntimeError("power cut")
        return real(*a, **kw)

    monkeypatch.setattr(rollup_mod, "_write_period", crash_on_third)
    with pytest.raises(RuntimeError, match="power cut"):
        rollup(db, "day", None, now)
    monkeypatch.setattr(rollup_mod, "_write_period", real)
    with db() as s:
        assert s.get(RollupWatermark, "day").done_until == calls[1] + DAY  # type: ignore[union-attr]
    resumed = rollup(db, "day", None, now)
    assert resumed.first == calls[2] and resumed.done_until == floor_period("day", now)
    table = [r[1:] for r in rollup_table(db)]
    rollup(db, "day", None, now, rebuild=True)
    assert sorted(r[1:] for r in rollup_table(db)) == sorted(table)


def test_a_job_ending_after_its_days_were_rolled_up_marks_them_dirty(db: sessionmaker[Session]) -> None:
    run_job(db, "alice", "student", T0 + 100, T0 + 200)
    rollup(db, "day", None, T0 + 2 * DAY)
    with db.begin() as s:  # started on a rolled-up day, still running during the rollup
        job = new_job(s, "bob")
        start(s, job, T0 + DAY - 600, [FULL])
    with db.begin() as s:
        finish(s, s.get(Job, job.id), T0 + 2 * DAY + 600)  # type: ignore[arg-type]
    with db() as s:
        assert sorted(d.period_start for d in s.scalars(select(RollupDirty).where(RollupDirty.period == "day"))) == \
            [T0, T0 + DAY, T0 + 2 * DAY]
    before = report_rows(db, T0 + 3 * DAY, by="period")  # the dirty days are read from the records
    assert sum(r["gpu_equiv_hours"] for r in before if r["user"] == "bob") == pytest.approx((DAY + 1200) / 3600)
    res = rollup(db, "day", None, T0 + 3 * DAY)
    assert (res.periods, res.dirty_left) == (3, 0)
    assert report_rows(db, T0 + 3 * DAY, by="period") == approx_rows(before)
    with db() as s:
        bob = {r.period_start: r.gpu_equiv_s for r in s.scalars(select(Rollup).where(Rollup.user == "bob"))}
    assert bob == {T0: 600.0, T0 + DAY: DAY, T0 + 2 * DAY: 600.0}


# ------------------------------------------------------------------ reports

def report_rows(db: sessionmaker[Session], now: float, **kw: Any) -> list[dict[str, Any]]:
    q = ReportQuery(since=kw.pop("since", T0), until=kw.pop("until", now), **kw)
    with db() as s:
        return build_report(s, q, now, carbon_g_per_kwh=kw.pop("carbon", None))


def approx_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: pytest.approx(v, rel=1e-9, abs=1e-12) if isinstance(v, float) else v for k, v in r.items()}
            for r in rows]


@pytest.mark.parametrize("by,period", [("user", "day"), ("group", "day"), ("cgroup", "day"), ("period", "day"),
                                       ("period", "month")])
def test_report_is_the_same_before_and_after_rollups(db: sessionmaker[Session], by: str, period: str) -> None:
    random_jobs(db, 120, seed=3, days=40)
    now = T0 + 45 * DAY + 3600
    since = T0 + 0.5 * DAY  # a ragged start
    raw = report_rows(db, now, by=by, period=period, since=since)
    rollup(db, "day", None, now)
    rollup(db, "month", None, now)
    assert report_rows(db, now, by=by, period=period, since=since) == approx_rows(raw)
    assert raw and all({"user", "group", "jobs", "gpu_equiv_hours", "cpu_hours"} <= set(r) for r in raw)


def test_report_totals_and_cover_use_rollups_where_clean() -> None:
    wm = {"day": T0 + 40 * DAY, "month": date_start(date(2026, 12, 1))}
    pieces = cover(T0 - 3 * DAY + 5, T0 + 40 * DAY + 7, wm, {"day": {T0 + 10 * DAY}, "month": set()})
    dec1 = date_start(date(2026, 12, 1))
    assert pieces[0] == ("raw", T0 - 3 * DAY + 5, T0 - 2 * DAY)
    assert ("day", T0 - 2 * DAY, T0 - DAY) in pieces and ("month", dec1, date_start(date(2027, 1, 1))) not in pieces
    assert ("raw", T0 + 10 * DAY, T0 + 11 * DAY) in pieces and pieces[-1] == ("raw", T0 + 40 * DAY, T0 + 40 * DAY + 7)
    assert sum(b - a for _, a, b in pieces) == pytest.approx(43 * DAY + 2)


def test_report_rows_and_top_users(db: sessionmaker[Session]) -> None:
    run_job(db, "alice", "student", T0 + 100, T0 + 3700, [TWO_G], cpu_s=1800.0)
    run_job(db, "bob", "student", T0 + 100, T0 + 7300, [FULL])
    run_job(db, "carol", "researcher", T0 + 100, T0 + 1900, [FULL])
    rows = report_rows(db, T0 + DAY)
    assert [(r["user"], r["group"], r["jobs"]) for r in rows] == [
        ("bob", "student", 1), ("carol", "researcher", 1), ("alice", "student", 1)]
    assert rows[2]["gpu_equiv_hours"] == pytest.approx(2 / 7) and rows[2]["cpu_hours"] == 0.5
    assert [r["user"] for r in report_rows(db, T0 + DAY, top=2)] == ["bob", "carol"]
    groups = report_rows(db, T0 + DAY, by="group")
    assert [(r["group"], r["user"], r["users"], r["jobs"]) for r in groups] == [("student", None, 2, 2),
                                                                                ("researcher", None, 1, 1)]
    assert groups[0]["gpu_equiv_hours"] == pytest.approx(2 + 2 / 7)


def test_report_counts_running_jobs_so_far(db: sessionmaker[Session]) -> None:
    with db.begin() as s:
        job = new_job(s)
        start(s, job, T0 + 1000, [TWO_G])
        on_sample(s, job, Usage(cpu_s=40.0, mem_bytes=10, max_rss_bytes=20), T0 + 1090)
    (row,) = report_rows(db, T0 + 1100)
    assert row["jobs"] == 1 and row["gpu_equiv_hours"] == pytest.approx(2 / 7 * 100 / 3600)
    assert row["cpu_hours"] == pytest.approx(40 / 3600) and row["max_rss_bytes"] == 20


def test_report_service_checks_arguments_and_who_may_see_what(db: sessionmaker[Session]) -> None:
    run_job(db, "alice", "student", T0 + 100, T0 + 200)
    run_job(db, "bob", "student", T0 + 100, T0 + 300)
    cfg = from_dict({"groups": {"student": {}}, "accounting": {"carbon_g_per_kwh": 350}})
    ctx = Context.of(cfg, db, clock=FakeClock(T0 + DAY))
    alice = Caller(uid=1000, gid=1000, user="alice", admin=False)
    assert [r["user"] for r in svc.report(ctx, alice, {})] == ["alice"]
    assert [r["user"] for r in svc.report(ctx, ADMIN, {})] == ["bob", "alice"]
    assert [r["user"] for r in svc.report(ctx, ADMIN, {"user": "alice", "since": "2026-11-28"})] == ["alice"]
    with pytest.raises(PermissionDenied):
        svc.report(ctx, alice, {"user": "bob"})
    for args, msg in [({"by": "week"}, "--by week is not allowed (allowed: user, group, cgroup, period)"),
                      ({"period": "week"}, "--period week is not allowed (allowed: day, month)"),
                      ({"since": "yesterday-ish"}, "--since 'yesterday-ish' is not a date"),
                      ({"since": "2026-11-29", "until": "2026-11-28"}, "--since must be before --until"),
                      ({"top": 0}, "--top 0 must be a whole number"),
                      ({"by": "group", "top": 3}, "--top ranks users")]:
        with pytest.raises(RequestError) as e:
            svc.report(ctx, ADMIN, args)
        assert str(e.value).startswith(msg) and "\n" not in str(e.value)
    with pytest.raises(PermissionDenied):
        svc.rollup_op(ctx, alice, {})
    assert svc.rollup_op(ctx, ADMIN, {"period": "day"})["periods"] == 1
    with pytest.raises(RequestError, match="not a date like 2026-11-29"):
        svc.rollup_op(ctx, ADMIN, {"until": "soon"})


def test_plot_writes_png(tmp_path: Path) -> None:
    rows = [{"period": "2026-11-28", "user": "alice", "group": "g", "gpu_equiv_hours": 1.5},
            {"period": "2026-11-29", "user": "bob", "group": "g", "gpu_equiv_hours": 0.5}]
    for name, rs in (("p.png", rows), ("u.png", [{"user": "a", "group": "g", "gpu_equiv_hours": 2.0}]),
                     ("e.png", [])):
        plot(rs, str(tmp_path / name))
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ fair-share

def test_decayed_usage_counts_records_and_running_allocations(db: sessionmaker[Session]) -> None:
    h = 3600.0
    now = T0 + 10 * h
    run_job(db, "alice", "student", now - 3 * h, now - 2 * h, [FULL])
    with db.begin() as s:
        job = new_job(s, "bob")
        allocs = start(s, job, now - h, [TWO_G])
        for a in allocs:
            a.allocated_at = now - h
    k = math.log(2) / h
    with db() as s:
        got = decayed_usage(s, now, h)
    assert got["alice"] == pytest.approx((math.exp(-2 * k * h) - math.exp(-3 * k * h)) / k)
    assert got["bob"] == pytest.approx(2 / 7 * (1 - math.exp(-k * h)) / k)


# ------------------------------------------------------------------ exporter

def seed_inventory(s: Session) -> None:
    s.add(Gpu(uuid="GPU-0", name="A100", index=0, memory_mb=40960, mig_enabled=True))
    s.add(Gpu(uuid="GPU-1", name="A100", index=1, memory_mb=40960))
    for i in range(3):
        s.add(Slice(uuid=f"MIG-0-{i}", gpu_uuid="GPU-0", profile="2g.10gb", compute_slices=2, gpu_compute_slices=7,
                    memory_mb=9984))
    s.add(Slice(uuid="GPU-1", gpu_uuid="GPU-1", profile="full", compute_slices=7, gpu_compute_slices=7,
                memory_mb=40960))


def scrape(registry: Any) -> dict[str, float]:
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_exporter_reads_the_database_at_scrape_time(db: sessionmaker[Session]) -> None:
    from ds01q.daemon.metrics import make_registry

    cfg = from_dict({"groups": {"student": {}, "researcher": {}}, "security": {"metrics_show_users": True}})
    ctx = Context.of(cfg, db, clock=FakeClock(T0))
    with db.begin() as s:
        seed_inventory(s)
        new_job(s, "carol", "researcher")
    registry = make_registry(ctx)
    with db.begin() as s:
        job = new_job(s, "alice")
        s.add(Allocation(job_id=job.id, slice_uuid="MIG-0-1", profile="2g.10gb", gpu_uuid="GPU-0",
                         gpu_equiv=2 / 7, memory_mb=9984, allocated_at=T0 + 50))
        job.state, job.started_at, job.container = "RUNNING", T0 + 60, "0123456789abcdef"
        s.add(JobEvent(job_id=job.id, at=T0 + 60, state="RUNNING", by="ds01q"))
    m = scrape(registry)
    assert m["ds01q_up"] == 1
    assert m['ds01q_queue_jobs{group="researcher",state="PENDING"}'] == 1
    assert m['ds01q_queue_jobs{group="student",state="RUNNING"}'] == 1
    assert m['ds01q_slices_allocated{profile="2g.10gb"}'] == 1 and m['ds01q_slices_free{profile="2g.10gb"}'] == 2
    assert m['ds01q_slices_free{profile="full"}'] == 1
    assert m["ds01q_gpu_equivalents_capacity"] == pytest.approx(1 + 6 / 7, abs=1e-6)
    assert m['ds01_gpu_allocated{container="0123456789ab",gpu_slot="0.1",profile="2g.10gb",user="alice"}'] == 1
    assert m['ds01_user_gpu_equivalents{user="alice"}'] == pytest.approx(2 / 7, abs=1e-6)
    assert m['ds01_user_gpus_allocated{user="alice"}'] == 1
    assert m['ds01_containers_total{status="running"}'] == 1
    assert m['ds01_mig_slot_info{gpu="0",gpu_i_id="",mig_uuid="MIG-0-2",profile="2g.10gb",slot="0.2"}'] == 1
    assert m["ds01q_job_wait_seconds_count"] == 1 and m["ds01q_job_wait_seconds_sum"] == 60.0
    assert m['ds01q_job_wait_seconds_bucket{le="60.0"}'] == 1 and m['ds01q_job_wait_seconds_bucket{le="30.0"}'] == 0
    assert scrape(registry)["ds01q_job_wait_seconds_count"] == 1  # counted once


def test_exporter_serves_http(db: sessionmaker[Session]) -> None:
    from urllib.request import urlopen

    from ds01q.daemon.metrics import start_exporter

    server = start_exporter(Context.of(from_dict({}), db, clock=FakeClock(T0)), 0)
    try:
        with urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as r:
            body = r.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "\nds01q_up 1.0\n" in body and "ds01q_job_wait_seconds_count 0.0" in body


def test_dashboard_uses_only_exported_metrics(db: sessionmaker[Session]) -> None:
    from ds01q.daemon.metrics import make_registry

    ctx = Context.of(from_dict({}), db, clock=FakeClock(T0))
    with db.begin() as s:
        seed_inventory(s)
        job = new_job(s, "alice")
        s.add(Allocation(job_id=job.id, slice_uuid="GPU-1", profile="full", gpu_uuid="GPU-1", gpu_equiv=1.0,
                         memory_mb=40960, allocated_at=T0))
        job.state = "RUNNING"
    run_job(db, "bob", "student", T0 + 10, T0 + 20)
    rollup(db, "day", None, T0 + DAY)
    exported = {re.sub(r"_(bucket|count|sum)$", "", n.split("{")[0]) for n in scrape(make_registry(ctx))}
    dash = json.loads((Path(__file__).resolve().parents[2] / "config" / "grafana-ds01q.json").read_text())
    used = set()
    for p in dash["panels"]:
        for t in p["targets"]:
            used |= {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"\b(ds01q?_[a-z_]+)", t["expr"])}
    assert used and used <= exported, used - exported


def test_migration_0002_matches_the_models(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from ds01q.db.engine import migrations_dir, upgrade

    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", migrations_dir())
    cfg.set_main_option("sqlalchemy.url", url)
    command.check(cfg)  # raises when the models and the migrations differ
    command.downgrade(cfg, "0001")
    command.upgrade(cfg, "head")


# ------------------------------------------------------------------ CLI (thin client)

def test_cli_report_and_rollup_are_thin_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from ds01q.cli import report as cli

    rows = [{"period": "2026-11-28", "user": "alice", "group": "student", "jobs": 2, "wall_hours": 1.0,
             "gpu_equiv_hours": 0.25, "gpu_mem_gb_hours": 2.5, "cpu_hours": 0.5, "max_rss_bytes": 10,
             "energy_kwh": None, "co2_g": None}]
    calls: list[tuple[str, dict[str, Any]]] = []

    def call(self: Any, op: str, **args: Any) -> Any:
        calls.append((op, args))
        if op == "report":
            return rows
        return {"period": args["period"], "periods": 1, "rows": 3, "first": "2026-11-28T00:00:00Z",
                "last": "2026-11-29T00:00:00Z", "done_until": "2026-11-29T00:00:00Z", "dirty_left": 0}

    monkeypatch.setattr(cli.Client, "call", call)
    run = CliRunner()
    png = tmp_path / "u.png"
    r = run.invoke(cli.report, ["--by", "period", "--since", "7d", "--top", "3", "--json", "--plot", str(png)],
                   obj={"config": None})
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == rows and png.read_bytes()[:4] == b"\x89PNG"
    assert calls[-1] == ("report", {"by": "period", "period": "day", "since": "7d", "top": 3})
    r = run.invoke(cli.report, ["--csv"], obj={"config": None})
    assert r.output.splitlines()[0].startswith("period,user,group,jobs,") and ",0.25," in r.output.splitlines()[1]
    r = run.invoke(cli.report, ["--by", "period"], obj={"config": None})
    assert r.output.split()[:3] == ["PERIOD", "USER", "GROUP"] and "alice" in r.output and "0.250" in r.output
    assert run.invoke(cli.report, ["--json", "--csv"], obj={"config": None}).exit_code != 0
    r = run.invoke(cli.accounting, ["rollup", "--period", "month", "--until", "2026-12-01"], obj={"config": None})
    assert r.exit_code == 0 and calls[-1] == ("admin.accounting.rollup",
                                              {"period": "month", "rebuild": False, "until": "2026-12-01"})
    assert "1 period(s) rolled up" in r.output
