"""The daemon's middle without Docker: the controller and the submit/cancel services driven
directly, with the in-package FakeExecutor, a fake clock, on SQLite and on PostgreSQL.

Each test runs whole ticks (``inline`` mode: launches and stops happen within the tick)
and checks what the controller asked the executor for and what the database holds.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from ds01q.accounting.models import JobUsage
from ds01q.clock import FakeClock
from ds01q.config import ConfigRef, load
from ds01q.controller import Controller
from ds01q.controller.deps import LoopDeps
from ds01q.controller.snapshot import dependency
from ds01q.db import store
from ds01q.db.engine import make_engine, make_sessionmaker, upgrade
from ds01q.db.models import Allocation, Job, JobEvent
from ds01q.errors import ExecutorError
from ds01q.executors.base import LaunchSpec
from ds01q.executors.fake import FakeExecutor
from ds01q.inventory.static import static_inventory
from ds01q.inventory.sync import sync
from ds01q.services import jobs, submit
from ds01q.services.context import Caller, Context
from tests.dbs import DATABASES, migrated_url

T0 = 1_800_000_000.0
GPU = "GPU-00000000-0000-0000-0000-000000000001"
SLICES = [f"MIG-00000000-0000-0000-0000-0000000000{i}" for i in (11, 12, 13)]
ROOT = Caller(uid=0, gid=0, user="root", admin=True)
ALICE = Caller(uid=4242, gid=4242, user="alice", admin=False)


def config_data(tmp_path: Path, slices: list[str] = SLICES) -> dict[str, Any]:
    return {
        "database": "sqlite:///unused",
        "executor": {"kind": "process", "state_dir": str(tmp_path / "state"), "allowed_roots": ["/"],
                     "stop_grace_s": 1},
        "inventory": {"source": "static", "gpus": [
            {"uuid": GPU, "name": "NVIDIA A100-PCIE-40GB",
             "mig": [{"uuid": u, "profile": "2g.10gb"} for u in slices]}]},
        "default_group": "student",
        "groups": {"student": {"priority": 10, "max_gpus": 7.0, "max_running_jobs": 10, "idle_timeout": "10s"},
                   "admin": {"admin": True}},
    }


class Harness:
    def __init__(self, tmp_path: Path, url: str, handler: Any = None) -> None:
        self.tmp_path = tmp_path
        self.config_path = tmp_path / "ds01q.yaml"
        self.write_config(SLICES)
        upgrade(url)
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)
        self.clock = FakeClock(T0)
        self.ex = FakeExecutor(handler, clock=self.clock)
        self.attached: dict[int, int] = {}
        self.settings = ConfigRef(load(str(self.config_path)))
        self.controller = Controller(LoopDeps(settings=self.settings, sessions=self.sessions, executor=self.ex,
                                              clock=self.clock, terminals=lambda j: self.attached.get(j, 0)),
                                     inline=True)
        self.ex.watch(self.controller.on_exit, self.controller.on_engine_lost)
        self.ctx = Context(settings=self.settings, sessions=self.sessions, clock=self.clock, loop=self.controller)
        with self.sessions.begin() as s:
            sync(s, static_inventory(list(self.settings.current.inventory_gpus), node="local"), T0, node="local")

    def write_config(self, slices: list[str]) -> None:
        self.config_path.write_text(yaml.safe_dump(config_data(self.tmp_path, slices)))

    def submit(self, caller: Caller = ROOT, **a: Any) -> int:
        a.setdefault("script", "#!/bin/sh\necho hi\n")
        a.setdefault("workdir", str(self.tmp_path))
        return int(submit.submit(self.ctx, caller, a)["id"])

    def tick(self, n: int = 1, advance: float = 0.0) -> None:
        for _ in range(n):
            self.controller.tick()
            self.clock.advance(advance)

    def job(self, job_id: int) -> Job:
        with self.sessions() as s:
            return store.get_job(s, job_id)

    def events(self, job_id: int) -> list[tuple[str, str | None]]:
        with self.sessions() as s:
            return [(e.state, e.reason) for e in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id)
                                                           .order_by(JobEvent.id))]

    def active_allocations(self) -> list[tuple[int, str]]:
        with self.sessions() as s:
            return [(a.job_id, a.slice_uuid) for a in store.active_allocations(s)]

    def usage_rows(self, job_id: int) -> int:
        with self.sessions() as s:
            return len(list(s.scalars(select(JobUsage).where(JobUsage.job_id == job_id))))


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return migrated_url(request.param, tmp_path)


@pytest.fixture
def h(tmp_path: Path, db_url: str) -> Iterator[Harness]:
    harness = Harness(tmp_path, db_url)
    yield harness
    harness.engine.dispose()


def test_assume_launch_exit_release(h: Harness) -> None:
    job_id = h.submit(mig="2g.10gb")
    h.tick()
    job = h.job(job_id)
    assert job.state == "RUNNING" and job.container == f"fake-{job_id}-1"
    spec = h.ex.specs[job_id]
    (slice_uuid,) = spec.slices
    assert spec.env["CUDA_VISIBLE_DEVICES"] == slice_uuid and spec.uid == 0
    assert h.active_allocations() == [(job_id, slice_uuid)]
    h.clock.advance(30)
    h.ex.finish(job_id, exit_code=0)
    h.tick()
    job = h.job(job_id)
    assert (job.state, job.exit_code, job.end_reason) == ("COMPLETED", 0, None)
    assert h.active_allocations() == []
    assert h.usage_rows(job_id) == 1
    assert ("remove", job_id) in h.ex.calls
    assert [e[0] for e in h.events(job_id)] == ["PENDING", "STARTING", "RUNNING", "COMPLETED"]


def test_an_exit_seen_twice_is_recorded_once(h: Harness) -> None:
    job_id = h.submit()
    h.tick()
    handle = h.ex.running()[job_id]
    h.ex.finish(job_id, exit_code=3)
    info = h.ex.poll(handle)
    assert info is not None
    assert h.controller.record_exit(job_id, handle, info) is not None
    assert h.controller.record_exit(job_id, handle, info) is None
    h.tick()
    assert h.job(job_id).state == "FAILED" and h.job(job_id).end_reason == "exit code 3"
    assert h.usage_rows(job_id) == 1
    assert [e[0] for e in h.events(job_id)].count("FAILED") == 1


def test_out_of_memory_keeps_its_full_reason(h: Harness) -> None:
    """On PostgreSQL a 38-character reason once overflowed VARCHAR(32) and every tick failed."""
    job_id = h.submit(mem="32m")
    h.tick()
    h.ex.finish(job_id, exit_code=137, oom=True)
    h.tick()
    job = h.job(job_id)
    assert (job.state, job.end_reason) == ("OUT_OF_MEMORY", "out of memory (container memory limit)")
    assert job.reason is None


def test_launch_failure_backs_off_then_fails(tmp_path: Path, db_url: str) -> None:
    def broken(spec: LaunchSpec) -> None:
        raise ExecutorError("no such image")

    h = Harness(tmp_path, db_url, handler=broken)
    try:
        job_id = h.submit()
        h.tick()
        job = h.job(job_id)
        assert (job.state, job.reason.value if job.reason else None, job.requeue_count) == ("PENDING", "Resources", 1)
        assert job.eligible_at == pytest.approx(T0 + 10)
        assert h.active_allocations() == []
        h.tick(advance=5)  # still backing off: not tried again
        assert h.ex.calls.count(("launch", job_id)) == 1
        h.clock.advance(6)
        h.tick()
        assert h.ex.calls.count(("launch", job_id)) == 2 and h.job(job_id).eligible_at == pytest.approx(
            h.clock.now() + 20)
        h.clock.advance(21)
        h.tick()
        job = h.job(job_id)
        assert (job.state, job.end_reason) == ("FAILED", "launch failed: no such image")
        assert h.active_allocations() == []
    finally:
        h.engine.dispose()


def test_a_bad_shebang_releases_the_slice(h: Harness) -> None:
    job_id = h.submit(script="#!/bin/sh '\necho never\n")
    h.tick()
    job = h.job(job_id)
    assert job.state == "PENDING" and job.requeue_count == 1
    assert h.active_allocations() == [] and ("launch", job_id) not in h.ex.calls


def test_cancel_a_pending_job_never_starts_it(h: Harness) -> None:
    ids = [h.submit(mig="2g.10gb") for _ in range(4)]  # 3 slices: the 4th waits
    h.tick()
    waiting = ids[3]
    assert h.job(waiting).state == "PENDING" and h.job(waiting).reason.value == "Resources"  # type: ignore[union-attr]
    out = jobs.cancel(h.ctx, ROOT, {"ids": [waiting]})
    assert out == [{"id": waiting, "state": "CANCELLED", "cancel_requested": False}]
    h.ex.finish(ids[0])
    h.tick(2)
    assert ("launch", waiting) not in h.ex.calls
    assert h.job(waiting).end_reason == "cancelled by root"


def test_cancel_a_starting_job_launches_nothing_and_frees_its_slice(h: Harness) -> None:
    job_id = h.submit()
    h.controller.run_async = lambda fn, *a: None  # type: ignore[method-assign]  # assume, launch later
    h.controller.schedule_and_dispatch(h.clock.now())
    assert h.job(job_id).state == "STARTING" and len(h.active_allocations()) == 1
    assert jobs.cancel(h.ctx, ROOT, {"ids": [job_id]})[0]["state"] == "STOPPING"
    h.controller.launch(job_id)  # the launch thread runs late: it must not start the container
    assert ("launch", job_id) not in h.ex.calls
    h.controller.enforce(h.clock.now())
    assert h.job(job_id).state == "CANCELLED" and h.active_allocations() == []


def test_a_job_cancelled_while_its_container_starts_keeps_the_container_and_stops_it(h: Harness) -> None:
    job_id = h.submit()
    start = h.ex.launch

    def start_then_cancel(spec: LaunchSpec) -> Any:
        handle = start(spec)
        assert jobs.cancel(h.ctx, ROOT, {"ids": [job_id]})[0]["state"] == "STOPPING"  # while the engine starts it
        return handle

    h.ex.launch = start_then_cancel  # type: ignore[method-assign]
    h.tick(3)
    job = h.job(job_id)
    assert (job.state, job.exit_code) == ("CANCELLED", 143) and job.container
    assert h.ex.calls.count(("stop", job_id)) == 1 and h.active_allocations() == []
    assert [e[0] for e in h.events(job_id)] == ["PENDING", "STARTING", "STOPPING", "CANCELLED"]


def test_a_container_whose_job_moved_on_while_it_started_is_stopped_and_removed(h: Harness) -> None:
    from ds01q.db import jobstate

    job_id = h.submit()
    start = h.ex.launch

    def start_then_forget(spec: LaunchSpec) -> Any:
        handle = start(spec)
        if spec.attempt == 1:  # the reservation is forgotten while the engine starts the first attempt
            with h.sessions.begin() as s:
                store.release(s, job_id, h.clock.now())
                jobstate.transition(s, store.get_job(s, job_id), jobstate.S.PENDING, at=h.clock.now(), by="test")
        return handle

    h.ex.launch = start_then_forget  # type: ignore[method-assign]
    h.controller.tick()
    assert ("stop", job_id) in h.ex.calls and ("remove", job_id) in h.ex.calls  # attempt 1 never runs on
    h.tick(2)
    job = h.job(job_id)
    assert job.state == "RUNNING" and job.launch_attempt == 2 and h.ex.calls.count(("launch", job_id)) == 2
    assert [e[0] for e in h.events(job_id)] == ["PENDING", "STARTING", "PENDING", "STARTING", "RUNNING"]


def test_cancel_a_running_job_stops_it_once(h: Harness) -> None:
    job_id = h.submit()
    h.tick()
    assert jobs.cancel(h.ctx, ROOT, {"ids": [job_id]})[0]["state"] == "STOPPING"
    assert jobs.show(h.ctx, ROOT, {"id": job_id})["state"] == "STOPPING"
    h.tick(3)
    job = h.job(job_id)
    assert (job.state, job.exit_code, job.end_reason) == ("CANCELLED", 143, "cancelled by root")
    assert h.ex.calls.count(("stop", job_id)) == 1
    assert h.active_allocations() == []
    assert [e[0] for e in h.events(job_id)] == ["PENDING", "STARTING", "RUNNING", "STOPPING", "CANCELLED"]


def test_only_the_owner_or_an_admin_cancels(h: Harness) -> None:
    job_id = h.submit()
    with pytest.raises(Exception, match="only root or an admin may cancel"):
        jobs.cancel(h.ctx, ALICE, {"ids": [job_id]})
    assert h.job(job_id).state == "PENDING"


def test_time_limit(h: Harness) -> None:
    job_id = h.submit(time="60s")
    h.tick()
    h.clock.advance(59)
    h.tick()
    assert h.job(job_id).state == "RUNNING"
    h.clock.advance(2)
    h.tick(2)
    job = h.job(job_id)
    assert (job.state, job.end_reason) == ("TIMEOUT", "time limit reached")


def test_idle_session_is_stopped(h: Harness) -> None:
    job_id = h.submit(interactive=True, script=None)
    h.tick()
    assert h.job(job_id).state == "RUNNING"
    h.attached[job_id] = 1
    h.tick(60, advance=1)
    assert h.job(job_id).state == "RUNNING"  # attached: never idle
    h.attached[job_id] = 0
    h.tick(60, advance=1)
    job = h.job(job_id)
    assert job.state == "CANCELLED" and job.end_reason == "idle timeout"
    assert any((r or "").startswith("stop requested: idle timeout: no terminal") for _, r in h.events(job_id))


def test_layout_change_requeues_after_the_container_stopped(h: Harness) -> None:
    job_id = h.submit(mig="2g.10gb")
    h.tick()
    (lost,) = h.ex.specs[job_id].slices
    h.write_config([u for u in SLICES if u != lost])
    h.controller.refresh_inventory(wait=False)
    h.tick()
    h.tick()
    job = h.job(job_id)
    states = [e[0] for e in h.events(job_id)]
    assert states[:6] == ["PENDING", "STARTING", "RUNNING", "STOPPING", "NODE_FAIL", "PENDING"]
    relaunch = [i for i, c in enumerate(h.ex.calls) if c == ("launch", job_id)][1:]
    assert all(h.ex.calls.index(("stop", job_id)) < i for i in relaunch)  # never two containers at once
    assert job.requeue_count == 1 and lost not in {u for _, u in h.active_allocations()}


def test_admin_requeue_goes_back_to_the_queue(h: Harness) -> None:
    job_id = h.submit()
    h.tick()
    assert jobs.requeue(h.ctx, ROOT, {"ids": [job_id]}) == [{"id": job_id, "state": "STOPPING"}]
    h.tick(2)  # the first tick stops the container, the second records its exit
    states = [e[0] for e in h.events(job_id)]
    assert states[3:6] == ["STOPPING", "PREEMPTED", "PENDING"]


def test_shell_exit_outcome_keeps_the_shell_code(h: Harness) -> None:
    from ds01q.db.jobstate import request_stop
    from ds01q.types import StopOutcome

    job_id = h.submit(interactive=True, script=None)
    h.tick()
    with h.sessions.begin() as s:
        job = store.get_job(s, job_id)
        job.exit_code = 3
        request_stop(s, job, StopOutcome.SHELL_EXIT, at=h.clock.now(), by="root")
    h.tick(2)
    job = h.job(job_id)
    assert (job.state, job.exit_code, job.end_reason) == ("FAILED", 3, "shell exit code 3")


def test_a_stale_writer_loses_the_compare_and_set(h: Harness) -> None:
    from ds01q.db.jobstate import transition
    from ds01q.errors import Conflict
    from ds01q.types import JobState

    job_id = h.submit()
    with h.sessions() as stale:
        old = store.get_job(stale, job_id)  # read PENDING
        jobs.cancel(h.ctx, ROOT, {"ids": [job_id]})  # another writer cancels it
        with pytest.raises(Conflict):
            transition(stale, old, JobState.HELD, at=h.clock.now(), by="x")
        stale.rollback()
    assert h.job(job_id).state == "CANCELLED"


def test_inventory_sync_is_per_node(h: Harness) -> None:
    n2 = static_inventory([{"uuid": "GPU-n2", "name": "NVIDIA A100-PCIE-40GB"}], node="n2")
    with h.sessions.begin() as s:
        res = sync(s, n2, T0, node="n2")
    assert res.removed == [] and res.added == ["GPU-n2"]
    with h.sessions() as s:
        nodes = {(sl.uuid, sl.node) for sl in store.present_slices(s)}
    assert {u for u, n in nodes if n == "local"} == set(SLICES) and ("GPU-n2", "n2") in nodes


def test_dependency_on_finished_jobs() -> None:
    assert dependency([], {}) == "none"
    assert dependency([1], {1: "COMPLETED"}) == "none"
    assert dependency([1, 2], {1: "COMPLETED", 2: "RUNNING"}) == "waiting"
    assert dependency([1], {1: "FAILED"}) == "never"
    assert dependency([1], {}) == "never"


def test_a_dependent_job_starts_after_its_dependency_completed(h: Harness) -> None:
    first = h.submit()
    h.tick()
    second = h.submit()
    with h.sessions.begin() as s:
        store.get_job(s, second).depends_on = json.dumps([first])
    h.tick()
    assert h.job(second).state == "PENDING"
    h.ex.finish(first)
    h.tick(2)
    assert h.job(first).state == "COMPLETED" and h.job(second).state == "RUNNING"


def test_no_allocation_outlives_its_job(h: Harness) -> None:
    ids = [h.submit() for _ in range(5)]
    h.tick()
    jobs.cancel(h.ctx, ROOT, {"ids": ids})
    h.tick(3)
    with h.sessions() as s:
        live = list(s.scalars(select(Allocation).where(Allocation.released_at.is_(None))))
    assert live == [] and {h.job(i).state for i in ids} == {"CANCELLED"}
