"""Exactly once through the controller, without Docker: deterministic launch attempts, recovery
by container listing (adopt, record, vanished, strays), retried stops/removals, an executor that
is down, and usage charged to the container's own times. SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ds01q.controller import Controller
from ds01q.controller.launch import launch_spec
from ds01q.db import store
from ds01q.errors import ExecutorError
from ds01q.executors.base import LaunchSpec
from ds01q.services import jobs
from tests.controller.test_controller import ROOT, Harness
from tests.dbs import DATABASES, migrated_url


@pytest.fixture(params=DATABASES)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, migrated_url(request.param, tmp_path))
    yield harness
    harness.engine.dispose()


def restart(h: Harness) -> Controller:
    """A new controller on the same database and executor, as after a daemon SIGKILL."""
    h.controller = Controller(h.controller.deps, inline=True)
    h.ex.watch(h.controller.on_exit)
    h.controller.recover()
    return h.controller


def crash_after_container_start(h: Harness) -> int:
    """Assume a job, start its container, and 'crash' before RUNNING is written."""
    job_id = h.submit()
    h.controller.run_async = lambda fn, *a: None  # type: ignore[method-assign]
    h.controller.schedule_and_dispatch(h.clock.now())
    with h.sessions() as s:
        job = store.get_job(s, job_id)
        assert job.state == "STARTING" and job.launch_attempt == 1
        h.ex.launch(launch_spec(h.settings.current, job, store.allocations_of(s, job_id), None))
    return job_id


def test_relaunching_an_attempt_finds_its_container(h: Harness) -> None:
    job_id = crash_after_container_start(h)
    h.controller.launch(job_id)  # the same attempt launched again: adopted, not started twice
    assert h.ex.calls.count(("launch", job_id)) == 1 and ("adopt", job_id) in h.ex.calls
    assert h.job(job_id).state == "RUNNING" and h.job(job_id).container == f"fake-{job_id}-1"


def test_restart_adopts_a_running_container_of_a_starting_job(h: Harness) -> None:
    job_id = crash_after_container_start(h)
    restart(h)
    h.tick(3, advance=6)
    job = h.job(job_id)
    assert (job.state, job.container) == ("RUNNING", f"fake-{job_id}-1")
    assert h.ex.calls.count(("launch", job_id)) == 1 and len(h.active_allocations()) == 1


def test_restart_records_an_exited_container_of_a_starting_job(h: Harness) -> None:
    job_id = crash_after_container_start(h)
    h.ex.finish(job_id, exit_code=7)
    restart(h)
    h.tick(3, advance=6)
    job = h.job(job_id)
    assert (job.state, job.exit_code) == ("FAILED", 7)
    assert h.ex.calls.count(("launch", job_id)) == 1  # never run a second time
    assert h.active_allocations() == [] and h.usage_rows(job_id) == 1 and h.ex.exited() == {}


def test_restart_forgets_a_starting_job_without_container(h: Harness) -> None:
    job_id = h.submit()
    h.controller.run_async = lambda fn, *a: None  # type: ignore[method-assign]
    h.controller.schedule_and_dispatch(h.clock.now())
    restart(h)
    assert h.job(job_id).state == "PENDING" and h.active_allocations() == []
    h.tick()
    job = h.job(job_id)
    assert job.state == "RUNNING" and job.launch_attempt == 2 and job.requeue_count == 0


def crash_during_container_start(h: Harness) -> int:
    """Assume a job, create its container, and 'crash' while the engine is still starting it."""
    job_id = h.submit()
    h.controller.run_async = lambda fn, *a: None  # type: ignore[method-assign]
    h.controller.schedule_and_dispatch(h.clock.now())
    with h.sessions() as s:
        h.ex.create_only(launch_spec(h.settings.current, store.get_job(s, job_id), store.allocations_of(s, job_id), None))
    return job_id


def test_restart_waits_for_a_container_the_engine_may_still_be_starting(h: Harness) -> None:
    """A daemon killed while it asked the engine to start a container: the engine starts it a moment
    later. Forgetting the job at the restart would run it twice; it is adopted once it runs."""
    job_id = crash_during_container_start(h)
    restart(h)
    h.tick(advance=6)
    assert h.job(job_id).state == "STARTING" and ("remove", job_id) not in h.ex.calls
    h.ex.start_created(job_id)  # the engine's start, from before the kill, completes
    h.tick(advance=6)
    h.tick()
    job = h.job(job_id)
    assert (job.state, job.container, job.launch_attempt) == ("RUNNING", f"fake-{job_id}-1", 1)
    assert ("launch", job_id) not in h.ex.calls and len(h.active_allocations()) == 1


def test_a_container_never_started_is_forgotten_after_the_settle_time_and_the_job_runs_once(h: Harness) -> None:
    job_id = crash_during_container_start(h)
    restart(h)
    h.tick(2, advance=6)  # sweeps at 0 and 6 s: it may still be starting
    assert h.job(job_id).state == "STARTING" and ("remove", job_id) not in h.ex.calls
    h.tick()  # 12 s: past SETTLE_S, the start never came: forgotten, its container removed, launched again
    assert "container created but never started" in [r for _, r in h.events(job_id)]
    job = h.job(job_id)
    assert (job.state, job.container, job.launch_attempt) == ("RUNNING", f"fake-{job_id}-2", 2)
    assert job.requeue_count == 0  # the daemon's restart, not a try of the job's
    assert [f.handle.ref for f in h.ex.containers()] == [f"fake-{job_id}-2"]
    assert h.ex.calls.count(("launch", job_id)) == 1


def test_restarts_quicker_than_the_settle_time_do_not_keep_a_never_started_container_for_ever(h: Harness) -> None:
    """The wait counts from the container's creation, not from each restart's first look (a soak killing the
    daemon every 5 s kept six jobs STARTING for ever)."""
    job_id = crash_during_container_start(h)
    for _ in range(3):
        restart(h)
        h.tick(advance=5)
    restart(h)
    h.tick()
    job = h.job(job_id)
    assert "container created but never started" in [r for _, r in h.events(job_id)]
    assert (job.state, job.launch_attempt) == ("RUNNING", 2)


def launch_cut_during_the_start(h: Harness) -> int:
    """A job whose launch fails with its container created, not started (the connection to the engine broke
    during the start: the engine may or may not carry it out)."""
    def created_only(spec: LaunchSpec) -> None:
        h.ex.create_only(spec)
        raise ExecutorError("cannot reach the Docker engine: Connection aborted")

    job_id = h.submit()
    h.ex.launch = created_only  # type: ignore[method-assign]
    h.tick()
    del h.ex.launch
    assert h.job(job_id).state == "STARTING"
    return job_id


def test_a_start_whose_answer_was_cut_is_not_forgotten_while_the_engine_may_run_it(h: Harness) -> None:
    """The engine took the start, the connection broke before its answer: the container lists as created
    until the engine finishes. The launch leaves the job STARTING for the sweep, which adopts it."""
    job_id = launch_cut_during_the_start(h)
    h.ex.start_created(job_id)
    h.tick(advance=6)
    h.tick()
    job = h.job(job_id)
    assert (job.state, job.container, job.requeue_count) == ("RUNNING", f"fake-{job_id}-1", 0)


def test_a_start_cut_before_the_engine_is_a_failed_try_after_the_settle_time(h: Harness) -> None:
    job_id = launch_cut_during_the_start(h)
    h.tick(4, advance=6)  # first seen at the sweep of 6 s, forgotten at the one of 18 s
    job = h.job(job_id)
    assert "container created but never started" in [r for _, r in h.events(job_id)]
    assert (job.state, job.requeue_count) == ("PENDING", 1) and h.ex.containers() == []  # a try, with backoff


def test_a_vanished_container_ends_node_fail_and_requeues(h: Harness) -> None:
    job_id = h.submit()
    h.tick()
    h.ex.vanish(job_id)
    restart(h)
    states = [e[0] for e in h.events(job_id)]
    assert states[3:5] == ["NODE_FAIL", "PENDING"]
    assert any(r == "container vanished" for _, r in h.events(job_id))
    h.tick()
    assert h.job(job_id).state == "RUNNING" and h.job(job_id).container == f"fake-{job_id}-2"


def test_a_failed_database_write_after_launch_is_adopted_by_the_sweep(h: Harness) -> None:
    job_id = h.submit()

    def locked(job_id: int, handle: object) -> None:
        raise RuntimeError("database is locked")

    h.controller._launched = locked  # type: ignore[method-assign]
    h.tick()
    assert h.job(job_id).state == "STARTING" and len(h.ex.running()) == 1
    del h.controller._launched
    h.tick(advance=6)
    h.tick()
    assert h.job(job_id).state == "RUNNING" and h.ex.calls.count(("launch", job_id)) == 1
    assert jobs.cancel(h.ctx, ROOT, {"ids": [job_id]})[0]["state"] == "STOPPING"
    h.tick(2)
    assert h.job(job_id).state == "CANCELLED" and h.active_allocations() == []


def test_containers_with_no_job_are_stopped_and_removed(h: Harness) -> None:
    job_id = h.submit()
    h.tick()
    h.ex.fail_removes = 1
    h.ex.finish(job_id)
    h.tick()
    assert h.job(job_id).state == "COMPLETED" and job_id in h.ex.exited()  # removal failed
    h.tick(advance=6)
    h.tick()
    assert h.ex.exited() == {} and h.ex.running() == {}
    h.ex.launch(launch_spec(h.settings.current, h.job(job_id), [], None))  # an old attempt, job ended
    restart(h)
    assert h.ex.running() == {} and h.ex.exited() == {}


def test_a_failed_stop_is_retried_until_it_succeeds(h: Harness) -> None:
    job_id = h.submit()
    h.tick()
    h.ex.fail_stops = 2
    jobs.cancel(h.ctx, ROOT, {"ids": [job_id]})
    h.tick()
    assert h.job(job_id).state == "STOPPING" and h.ex.calls.count(("stop", job_id)) == 1
    h.tick(4, advance=3)
    job = h.job(job_id)
    assert (job.state, job.exit_code) == ("CANCELLED", 143) and h.ex.calls.count(("stop", job_id)) == 3


def test_nothing_is_placed_while_the_executor_is_down(h: Harness) -> None:
    h.ex.down = "cannot list containers: Connection refused"
    restart(h)
    job_id = h.submit()
    h.tick(3, advance=6)
    job = h.job(job_id)
    assert job.state == "PENDING" and job.reason is not None and job.reason.value == "ExecutorDown"
    assert "Connection refused" in (job.reason_detail or "")
    health = h.controller.loop_health()
    assert health["executor"] == "down" and "Connection refused" in health["executor_error"]
    assert ("launch", job_id) not in h.ex.calls
    h.ex.down = None
    h.tick(advance=6)
    h.tick()
    assert h.job(job_id).state == "RUNNING" and h.controller.loop_health()["executor"] == "up"


def test_a_launch_failing_because_the_engine_is_down_burns_no_try(h: Harness) -> None:
    job_id = h.submit()
    h.tick()  # the first sweep saw the executor up
    h.ex.finish(job_id)
    h.tick()
    second = h.submit()
    h.ex.down = "engine down"
    h.tick(4, advance=6)
    job = h.job(second)
    assert job.state == "PENDING" and job.requeue_count == 0


def test_a_failing_step_never_ends_the_tick(h: Harness) -> None:
    job_id = h.submit()

    def broken(now: float) -> None:
        raise RuntimeError("sample exploded")

    h.controller.sample = broken  # type: ignore[method-assign]
    h.tick()
    assert h.job(job_id).state == "RUNNING"
    assert h.controller.loop_health()["step_errors"] == {"sample": "sample exploded"}


def test_usage_is_charged_to_the_containers_own_times(h: Harness) -> None:
    job_id = h.submit()
    h.tick()
    h.clock.advance(10)
    h.ex.finish(job_id)
    finished = h.clock.now()
    h.clock.advance(20)  # the daemon notices 20 s late
    h.tick()
    job = h.job(job_id)
    assert job.state == "COMPLETED" and job.ended_at == pytest.approx(finished)


def test_an_allocation_left_by_a_finished_job_is_released(h: Harness) -> None:
    job_id = h.submit(mig="2g.10gb")
    h.tick()
    h.ex.finish(job_id)
    h.tick()
    with h.sessions.begin() as s:  # a leak as an old bug left them: allocation rows of a finished job
        for a in store.allocations_of(s, job_id, active_only=False):
            a.released_at = None
    assert len(h.active_allocations()) == 1
    h.tick(advance=6)
    h.tick()
    assert h.active_allocations() == []


def test_a_loop_that_stops_making_progress_shows_as_stalled() -> None:
    from ds01q.controller.health import Health

    health = Health()
    assert health.to_dict(100.0, 1.0)["loop"] == "starting"
    health.ticked(100.0)
    assert health.to_dict(103.0, 1.0)["loop"] == "ok"
    assert health.to_dict(120.0, 1.0)["loop"] == "stalled"


def test_a_job_killed_by_an_engine_restart_ends_node_fail_and_requeues(h: Harness) -> None:
    job_id = h.submit()
    h.tick()
    h.clock.advance(6)
    h.ex.down = "cannot list containers: engine restarting"
    h.tick()  # the sweep notices the outage
    h.clock.advance(3)
    h.ex.finish(job_id, exit_code=143)  # the engine stopped its containers on the way down
    h.clock.advance(3)
    h.ex.down = None
    h.tick(advance=6)
    h.tick()
    states = [e[0] for e in h.events(job_id)]
    assert states[3:6] == ["NODE_FAIL", "PENDING", "STARTING"], states
    assert ("NODE_FAIL", "container stopped by a Docker engine restart") in h.events(job_id)


def test_an_engine_restart_quicker_than_a_sweep_is_still_an_outage(h: Harness) -> None:
    """``systemctl restart docker``: the event stream breaks, the engine is back before the next
    sweep, and without live-restore it has killed the job's container (137)."""
    job_id = h.submit()
    h.tick()
    h.clock.advance(100)
    h.ex.lose_engine("connection reset by peer")  # the executor's event stream broke
    assert h.controller.health.executor_error is not None  # down at once, not at the next sweep
    h.clock.advance(2)
    h.ex.finish(job_id, exit_code=137)  # killed by the restarted engine's restore
    h.tick(advance=6)
    h.tick()
    states = [e[0] for e in h.events(job_id)]
    assert states[3:6] == ["NODE_FAIL", "PENDING", "STARTING"], states
    assert h.controller.health.executor_error is None  # the sweep saw the engine back


def test_a_job_that_failed_on_its_own_stays_failed(h: Harness) -> None:
    job_id = h.submit()
    h.tick()
    h.clock.advance(100)
    h.ex.finish(job_id, exit_code=143)  # no outage around it: the job's own exit
    h.tick(advance=6)
    assert h.job(job_id).state == "FAILED"
