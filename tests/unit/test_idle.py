"""Idle detection for interactive sessions: the pure tracker, and check_idle against a real database."""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ds01q.clock import FakeClock
from ds01q.config import ConfigRef, from_dict
from ds01q.controller.deps import LoopDeps
from ds01q.db.jobstate import outcome_of
from ds01q.controller.idle import IDLE_REASON, IdleTracker, check_idle, gpu_busy_by_uuid
from ds01q.db.engine import make_engine, make_sessionmaker
from ds01q.errors import ExecutorError
from ds01q.executors.base import ExitInfo, Handle, Usage
from ds01q.db.models import Allocation, Base, Job
from ds01q.types import StopOutcome

T0 = 1_800_000_000.0
WHOLE_GPU = "GPU-00000000-0000-0000-0000-000000000002"
MIG = "MIG-00000000-0000-0000-0000-000000000011"
SLICE_NUMBERS = itertools.count(1)


# ---------------------------------------------------------------- the tracker

def feed(t: IdleTracker, job_id: int, start: float, seconds: int, cpu0: float = 0.0, cpu_per_s: float = 0.0,
         attached: bool = False, gpu: bool | None = None) -> float:
    """One sample per second for ``seconds`` seconds; returns the CPU counter at the end."""
    cpu = cpu0
    for i in range(seconds + 1):
        t.observe(job_id, cpu, attached, gpu, start + i)
        cpu += cpu_per_s
    return cpu - cpu_per_s


def test_no_terminal_no_cpu_is_idle_from_the_first_sample_and_stops_after_the_timeout() -> None:
    t = IdleTracker(window_s=30, cpu_threshold=0.05)
    feed(t, 1, T0, 9)
    assert t.idle_since(1, T0 + 9) == T0
    assert not t.should_stop(1, 10, T0 + 9)
    assert t.stop_at(1, 10) == T0 + 10
    t.observe(1, 0.0, False, None, T0 + 10)
    assert t.should_stop(1, 10, T0 + 10)


def test_an_attached_terminal_keeps_it_active_and_the_clock_starts_at_detach() -> None:
    t = IdleTracker(window_s=30)
    feed(t, 1, T0, 100, attached=True)
    assert t.idle_since(1, T0 + 100) is None and t.stop_at(1, 10) is None
    assert not t.should_stop(1, 10, T0 + 100)
    feed(t, 1, T0 + 101, 9)  # detached at T0+101, no CPU
    assert t.idle_since(1, T0 + 110) == T0 + 100  # the last sample where it was active
    assert t.should_stop(1, 10, T0 + 110)


def test_cpu_counts_as_a_rate_over_the_window_not_a_total_since_start() -> None:
    t = IdleTracker(window_s=10, cpu_threshold=0.05)
    cpu = feed(t, 1, T0, 20, cpu0=5000.0, cpu_per_s=0.5)  # busy: half a core, after a huge total
    assert t.cpu_rate(1) == pytest.approx(0.5)
    assert t.idle_since(1, T0 + 20) is None
    # The work stops: the counter stays at its large total. Idle once the burst has left the window.
    for i in range(1, 12):
        t.observe(1, cpu, False, None, T0 + 20 + i)
    assert t.cpu_rate(1) == pytest.approx(0.0)
    since = t.idle_since(1, T0 + 31)
    assert since is not None and T0 + 20 < since <= T0 + 30
    assert t.should_stop(1, 5, since + 5)


def test_low_background_cpu_is_idle_and_busy_cpu_is_not() -> None:
    t = IdleTracker(window_s=30, cpu_threshold=0.05)
    feed(t, 1, T0, 60, cpu_per_s=0.01)  # a polling kernel: 1 % of a core
    assert t.idle_since(1, T0 + 60) == T0
    feed(t, 2, T0, 60, cpu_per_s=0.2)
    assert t.idle_since(2, T0 + 60) is None


def test_gpu_activity_keeps_it_active_and_unknown_gpu_does_not() -> None:
    t = IdleTracker()
    feed(t, 1, T0, 30, gpu=True)
    assert t.idle_since(1, T0 + 30) is None
    feed(t, 2, T0, 30, gpu=None)
    assert t.idle_since(2, T0 + 30) == T0
    feed(t, 3, T0, 30, gpu=False)
    assert t.should_stop(3, 30, T0 + 30)


def test_counter_reset_or_clock_going_back_starts_a_fresh_window() -> None:
    t = IdleTracker(window_s=30)
    feed(t, 1, T0, 5, cpu0=100.0, cpu_per_s=1.0)
    t.observe(1, 0.5, False, None, T0 + 6)  # the counter restarted: no negative rate
    assert t.cpu_rate(1) is None
    t.observe(1, 0.5, False, None, T0 + 3)  # the clock went back
    assert t.cpu_rate(1) is None


def test_forget_and_tracked() -> None:
    t = IdleTracker()
    t.observe(1, 0.0, False, None, T0)
    t.observe(2, 0.0, False, None, T0)
    t.forget(1)
    assert t.tracked() == {2}
    assert t.idle_since(1, T0) is None


def test_gpu_busy_by_uuid_uses_only_reported_utilisation() -> None:
    @dataclass
    class Reading:
        uuid: str
        utilization: float | None

    got = gpu_busy_by_uuid([Reading("GPU-a", 50.0), Reading("GPU-b", 1.0), Reading("GPU-c", None)])
    assert got == {"GPU-a": True, "GPU-b": False}


def test_an_idle_stop_ends_cancelled_with_its_reason() -> None:
    job = Job(stop_outcome=StopOutcome.IDLE, end_reason=IDLE_REASON)
    state, reason = outcome_of(job, 0, False)
    assert (state.value, reason) == ("CANCELLED", "idle timeout")
    job = Job(stop_outcome=StopOutcome.CANCELLED, end_reason=None)
    assert outcome_of(job, 0, False)[1] == "cancelled"


# ---------------------------------------------------------------- check_idle with a database

class FakeExecutor:
    def __init__(self) -> None:
        self.cpu: dict[int, float] = {}
        self.gone: set[int] = set()
        self.broken: set[int] = set()

    def sample(self, h: Handle) -> Usage | None:
        if h.job_id in self.broken:
            raise ExecutorError("cannot read the cgroup")
        if h.job_id in self.gone:
            return None
        return Usage(cpu_s=self.cpu.get(h.job_id, 0.0), mem_bytes=0, max_rss_bytes=None)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path}/idle.db")
    Base.metadata.create_all(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


class Env:
    """The idle check's dependencies, with the relay's terminal count as a plain dict."""

    def __init__(self, db: sessionmaker[Session], clock: FakeClock, cfg: object, ex: FakeExecutor) -> None:
        self.attached: dict[int, int] = {}
        self.deps = LoopDeps(settings=ConfigRef(cfg), sessions=db, executor=ex, clock=clock,  # type: ignore[arg-type]
                             terminals=lambda job_id: self.attached.get(job_id, 0))


def make_ctx(db: sessionmaker[Session], clock: FakeClock, ex: FakeExecutor) -> Env:
    cfg = from_dict({"default_group": "student",
                     "groups": {"student": {"idle_timeout": "10s"}, "staff": {}},
                     "users": {"bob": {"group": "staff"}},
                     "lifecycle": {"exempt_users": ["carol"]},
                     "inventory": {"source": "static", "gpus": []}})
    return Env(db, clock, cfg, ex)


def add_job(db: sessionmaker[Session], user: str = "alice", group: str = "student", interactive: bool = True,
            slice_uuid: str | None = None, detail: str | None = None) -> int:
    slice_uuid = slice_uuid or f"MIG-{next(SLICE_NUMBERS):08d}"
    with db.begin() as s:
        job = Job(name="shell", user=user, uid=1000, gid=1000, group=group, state="RUNNING", request="{}",
                  time_limit_s=86400, image="img", workdir="/tmp", submitted_at=T0, started_at=T0,
                  interactive=interactive, container=f"c-{user}-{slice_uuid}", reason_detail=detail)
        s.add(job)
        s.flush()
        s.add(Allocation(job_id=job.id, slice_uuid=slice_uuid, profile="2g.10gb", gpu_uuid="GPU-x",
                         gpu_equiv=2 / 7, memory_mb=9984, allocated_at=T0))
        return job.id


def row(db: sessionmaker[Session], job_id: int) -> Job:
    with db() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def run_for(ctx: Env, ex: FakeExecutor, t: IdleTracker, clock: FakeClock, seconds: int) -> list[int]:
    stopped: list[int] = []
    for _ in range(seconds):
        stopped += check_idle(ctx.deps, t, clock.now())
        clock.advance(1)
    return stopped


def test_check_idle_warns_then_stops_an_idle_session(db: sessionmaker[Session]) -> None:
    clock = FakeClock(T0)
    ex, t = FakeExecutor(), IdleTracker(window_s=5)
    ctx = make_ctx(db, clock, ex)
    job_id = add_job(db)
    assert run_for(ctx, ex, t, clock, 5) == []
    warned = row(db, job_id)
    assert warned.reason_detail == "idle: stops at 2027-01-15T08:00:10Z"
    assert warned.state == "RUNNING"
    stopped = run_for(ctx, ex, t, clock, 6)
    assert stopped == [job_id]
    done = row(db, job_id)
    assert done.state == "STOPPING" and done.stop_outcome == StopOutcome.IDLE
    assert done.end_reason == IDLE_REASON
    assert run_for(ctx, ex, t, clock, 3) == []  # marked once; the controller stops it


def test_a_terminal_or_cpu_clears_the_warning_and_keeps_it_running(db: sessionmaker[Session]) -> None:
    clock = FakeClock(T0)
    ex, t = FakeExecutor(), IdleTracker(window_s=5)
    ctx = make_ctx(db, clock, ex)
    job_id = add_job(db)
    run_for(ctx, ex, t, clock, 5)
    assert row(db, job_id).reason_detail is not None
    ctx.attached[job_id] = 1
    assert run_for(ctx, ex, t, clock, 30) == []
    assert row(db, job_id).reason_detail is None
    del ctx.attached[job_id]
    for _ in range(30):  # detached, but computing: half a core
        ex.cpu[job_id] = ex.cpu.get(job_id, 0.0) + 0.5
        assert run_for(ctx, ex, t, clock, 1) == []
    assert row(db, job_id).reason_detail is None
    assert row(db, job_id).state == "RUNNING"


def test_exempt_users_groups_without_timeout_and_batch_jobs_are_never_stopped(db: sessionmaker[Session]) -> None:
    clock = FakeClock(T0)
    ex, t = FakeExecutor(), IdleTracker(window_s=5)
    ctx = make_ctx(db, clock, ex)
    exempt = add_job(db, user="carol", detail="idle: stops at 2027-01-15T08:00:10Z")  # a stale warning
    no_timeout = add_job(db, user="bob", group="staff")
    batch = add_job(db, interactive=False)
    assert run_for(ctx, ex, t, clock, 60) == []
    assert row(db, exempt).reason_detail is None
    assert all(row(db, j).state == "RUNNING" for j in (exempt, no_timeout, batch))


def test_other_reason_details_are_left_alone_and_gone_or_unreadable_containers_skipped(
        db: sessionmaker[Session]) -> None:
    clock = FakeClock(T0)
    ex, t = FakeExecutor(), IdleTracker(window_s=5)
    ctx = make_ctx(db, clock, ex)
    noted = add_job(db, user="alice", detail="moved by admin")
    gone = add_job(db, user="dave")
    broken = add_job(db, user="erin")
    ex.gone.add(gone)
    ex.broken.add(broken)
    run_for(ctx, ex, t, clock, 5)
    assert row(db, noted).reason_detail == "moved by admin"
    assert run_for(ctx, ex, t, clock, 10) == [noted]
    assert row(db, gone).state == row(db, broken).state == "RUNNING"


def test_a_busy_whole_gpu_keeps_the_session_but_mig_has_no_reading(db: sessionmaker[Session]) -> None:
    @dataclass
    class Reading:
        uuid: str
        utilization: float | None

    clock = FakeClock(T0)
    ex, t = FakeExecutor(), IdleTracker(window_s=5)
    ctx = make_ctx(db, clock, ex)
    on_gpu = add_job(db, user="alice", slice_uuid=WHOLE_GPU)
    on_mig = add_job(db, user="dave", slice_uuid=MIG)
    gpu = [Reading(WHOLE_GPU, 87.0), Reading("GPU-00000000-0000-0000-0000-000000000001", None)]
    reads = []

    def reader() -> list[Reading]:
        reads.append(clock.now())
        return gpu

    stopped = []
    for _ in range(15):
        stopped += check_idle(ctx.deps, t, clock.now(), gpu_reader=reader)
        clock.advance(1)
    assert stopped == [on_mig]
    assert row(db, on_gpu).state == "RUNNING"
    assert len(reads) == 3  # NVML is read every 5 s, not every tick
