"""Dispatch speed without timing: an exit frees its slice for the next job in the same pass, exits are
recorded on the exit threads as soon as the executor reports them, and the removal of a finished
container never holds up the next launch (FakeExecutor, fake clock; the threaded tests switch the
harness's controller out of ``inline`` and wait for its pools to drain)."""
from __future__ import annotations

import threading
from pathlib import Path

from tests.controller.test_controller import ROOT, Harness, db_url, h  # noqa: F401  (the harness and its fixtures)
from ds01q.executors.base import Handle, LaunchSpec
from ds01q.services import jobs


def three_running_one_waiting(h: Harness) -> list[int]:  # noqa: F811
    ids = [h.submit(mig="2g.10gb") for _ in range(4)]
    h.tick()
    assert [h.job(j).state for j in ids] == ["RUNNING"] * 3 + ["PENDING"]
    return ids


def test_an_exit_starts_the_next_job_in_the_same_pass(h: Harness) -> None:  # noqa: F811
    first, _, _, waiting = three_running_one_waiting(h)
    (freed,) = h.ex.specs[first].slices
    h.ex.finish(first, exit_code=0)
    h.tick()  # one pass: the exit is recorded, then the freed slice is placed and launched
    assert h.job(first).state == "COMPLETED"
    assert h.job(waiting).state == "RUNNING" and h.ex.specs[waiting].slices == [freed]
    assert h.ex.calls.index(("remove", first)) < h.ex.calls.index(("launch", waiting))  # inline: in order


def test_exits_are_recorded_off_the_loop_and_removal_does_not_hold_up_the_next_launch(
        h: Harness) -> None:  # noqa: F811
    first, _, _, waiting = three_running_one_waiting(h)
    ctl = h.controller
    ctl.inline = False
    gate = threading.Event()
    real_remove = h.ex.remove
    order: list[str] = []

    def slow_remove(handle: Handle) -> None:  # an engine slow to remove the finished container
        gate.wait(timeout=30)
        order.append(f"remove {handle.job_id}")
        real_remove(handle)

    real_launch = h.ex.launch

    def launch(spec: LaunchSpec) -> Handle:
        order.append(f"launch {spec.job_id}")
        return real_launch(spec)

    h.ex.remove = slow_remove  # type: ignore[method-assign]
    h.ex.launch = launch  # type: ignore[method-assign]
    try:
        h.ex.finish(first, exit_code=0)  # the executor's exit event: recorded on an exit thread, no tick
        ctl.exits.shutdown(wait=True)
        assert h.job(first).state == "COMPLETED"
        assert all(job_id != first for job_id, _ in h.active_allocations())
        h.tick()  # places the waiting job on the freed slice while the removal still waits
        ctl.pool.shutdown(wait=True)
        assert h.job(waiting).state == "RUNNING"
        gate.set()
        ctl.cleanup.shutdown(wait=True)
        assert order == [f"launch {waiting}", f"remove {first}"]
        assert first not in h.ex.exited() and not ctl.removing
    finally:
        gate.set()
        ctl.close()


def test_an_exit_seen_during_its_launch_is_recorded_when_the_launch_is(
        tmp_path: Path, db_url: str) -> None:  # noqa: F811
    h = Harness(tmp_path, db_url, handler=lambda spec: 0)  # every container exits at once, before its launch returns
    try:
        h.controller.inline = False
        job_id = h.submit()
        h.tick()
        h.controller.pool.shutdown(wait=True)  # the launch, which hands the early exit to the exit threads
        h.controller.exits.shutdown(wait=True)
        assert h.job(job_id).state == "COMPLETED"
        assert [e[0] for e in h.events(job_id)] == ["PENDING", "STARTING", "RUNNING", "COMPLETED"]
        h.controller.cleanup.shutdown(wait=True)
        assert ("remove", job_id) in h.ex.calls
    finally:
        h.controller.close()
        h.engine.dispose()


def test_a_moved_priority_is_stored_at_most_once_a_tick_a_first_reason_at_once(h: Harness) -> None:  # noqa: F811
    *_, waiting = three_running_one_waiting(h)
    before = h.job(waiting)
    assert before.reason is not None and before.reason.value == "Resources"
    jobs.set_priority(h.ctx, ROOT, {"id": waiting, "boost": 1000})
    h.tick()  # the same instant as the last store: the pass sees the new priority, the row keeps the old one
    assert h.job(waiting).priority == before.priority
    assert h.controller.last_cycle().pending[waiting].priority > before.priority  # type: ignore[union-attr]
    h.clock.advance(h.settings.current.tick_s)
    h.tick()
    info = h.controller.last_cycle().pending[waiting]  # type: ignore[union-attr]
    assert h.job(waiting).priority == round(info.priority, 2)
    late = h.submit(mig="2g.10gb")
    h.tick()  # within the tick again: a job's first reason is stored at once
    job = h.job(late)
    assert job.reason is not None and job.reason.value == "Resources" and job.reason_detail
