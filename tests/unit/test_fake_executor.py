"""The in-memory FakeExecutor behaves like an Executor, deterministically."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from ds01q.clock import FakeClock
from ds01q.errors import ExecutorError
from ds01q.executors.base import Executor, ExitInfo, Handle, LaunchSpec
from ds01q.executors.fake import LOST, FakeExecutor, Outcome
from ds01q.types import Usage

T0 = 1_700_000_000.0


def spec(job_id: int = 1, image: str = "img") -> LaunchSpec:
    return LaunchSpec(job_id=job_id, name="job", user="alice", uid=1000, gid=1000, group="student",
                      image=image, command=["true"], workdir="/tmp", env={}, slices=[])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def test_is_an_executor() -> None:
    assert isinstance(FakeExecutor(), Executor)


def test_launch_run_finish_poll_remove(clock: FakeClock) -> None:
    ex = FakeExecutor(clock=clock)
    h = ex.launch(spec(7))
    assert h == Handle(job_id=7, ref="fake-7-1")
    assert ex.specs[7].image == "img"
    assert ex.poll(h) is None
    assert ex.running() == {7: h}
    assert ex.exited() == {}
    ex.set_cpu(7, 12.5)
    assert ex.sample(h) == Usage(cpu_s=12.5, mem_bytes=0, max_rss_bytes=None)

    clock.advance(30)
    ex.finish(7, exit_code=3)
    assert ex.poll(h) == ExitInfo(exit_code=3, oom_killed=False, finished_at=T0 + 30, cpu_s=12.5,
                                  max_rss_bytes=None)
    assert ex.sample(h) is None
    assert ex.running() == {}
    assert ex.exited() == {7: h}

    ex.remove(h)
    ex.remove(h)  # idempotent
    assert ex.poll(h) == LOST
    assert ex.exited() == {}
    assert ex.calls == [("launch", 7), ("remove", 7), ("remove", 7)]


def test_finish_with_oom_and_cpu_without_clock() -> None:
    ex = FakeExecutor()
    h = ex.launch(spec(2))
    ex.finish(2, exit_code=137, oom=True, cpu_s=4.0)
    assert ex.poll(h) == ExitInfo(137, True, None, 4.0, None)


def test_finish_of_a_job_that_is_not_running_raises() -> None:
    ex = FakeExecutor()
    ex.launch(spec(1))
    ex.finish(1)
    with pytest.raises(KeyError):
        ex.finish(1)
    with pytest.raises(KeyError):
        ex.finish(99)


def test_refs_count_launches_of_a_job() -> None:
    ex = FakeExecutor()
    first = ex.launch(spec(5))
    ex.stop(first, 1)
    ex.remove(first)
    second = ex.launch(spec(5, image="other"))
    assert (first.ref, second.ref) == ("fake-5-1", "fake-5-2")
    assert ex.specs[5].image == "other"
    assert ex.poll(first) == LOST
    assert ex.poll(second) is None


def test_handler_raising_leaves_nothing_behind() -> None:
    def handler(s: LaunchSpec) -> Outcome | None:
        if s.image == "broken":
            raise ExecutorError("no such image")
        return None

    ex = FakeExecutor(handler)
    with pytest.raises(ExecutorError, match="no such image"):
        ex.launch(spec(1, image="broken"))
    assert ex.running() == {}
    assert ex.exited() == {}
    assert 1 not in ex.specs
    assert ex.calls == [("launch", 1)]
    h = ex.launch(spec(1))  # the retry works, and counts as the second launch
    assert h.ref == "fake-1-2"
    assert ex.running() == {1: h}


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (0, ExitInfo(0, False, T0, None, None)),
        (2, ExitInfo(2, False, T0, None, None)),
        (ExitInfo(137, True, 5.0, 1.5, 1024), ExitInfo(137, True, 5.0, 1.5, 1024)),
    ],
)
def test_handler_returning_an_immediate_exit(clock: FakeClock, outcome: Outcome, expected: ExitInfo) -> None:
    seen: list[int] = []
    ex = FakeExecutor(lambda s: outcome, clock=clock)
    ex.watch(seen.append)
    h = ex.launch(spec(4))
    assert ex.poll(h) == expected
    assert ex.running() == {}
    assert ex.exited() == {4: h}
    assert seen == [4]


def test_stop_ends_with_sigterm_code_and_calls_watch(clock: FakeClock) -> None:
    seen: list[int] = []
    ex = FakeExecutor(clock=clock)
    ex.watch(seen.append)
    h = ex.launch(spec(3))
    ex.set_cpu(3, 2.0)
    clock.advance(10)
    ex.stop(h, grace_s=5)
    ex.stop(h, grace_s=5)  # idempotent: no second exit, no second callback
    assert ex.poll(h) == ExitInfo(143, False, T0 + 10, 2.0, None)
    assert seen == [3]
    assert ex.calls == [("launch", 3), ("stop", 3), ("stop", 3)]


def test_stop_of_unknown_or_finished_job_is_a_no_op() -> None:
    seen: list[int] = []
    ex = FakeExecutor()
    ex.watch(seen.append)
    ex.stop(Handle(9, "fake-9-1"), 1)
    h = ex.launch(spec(1))
    ex.finish(1, exit_code=0)
    ex.stop(h, 1)
    assert ex.poll(h) is not None and ex.poll(h).exit_code == 0  # type: ignore[union-attr]
    assert seen == [1]


def test_finish_calls_watch() -> None:
    seen: list[int] = []
    ex = FakeExecutor()
    ex.watch(seen.append)
    ex.launch(spec(1))
    ex.launch(spec(2))
    ex.finish(2)
    assert seen == [2]


@pytest.mark.parametrize("failures", [1, 2])
def test_fail_stops(failures: int) -> None:
    ex = FakeExecutor()
    h = ex.launch(spec(1))
    ex.fail_stops = failures
    for _ in range(failures):
        with pytest.raises(ExecutorError):
            ex.stop(h, 1)
        assert ex.poll(h) is None
    assert ex.fail_stops == 0
    ex.stop(h, 1)
    assert ex.poll(h).exit_code == 143  # type: ignore[union-attr]
    assert ex.calls.count(("stop", 1)) == failures + 1


@pytest.mark.parametrize("failures", [1, 3])
def test_fail_removes(failures: int) -> None:
    ex = FakeExecutor()
    h = ex.launch(spec(1))
    ex.finish(1)
    ex.fail_removes = failures
    for _ in range(failures):
        with pytest.raises(ExecutorError):
            ex.remove(h)
        assert ex.exited() == {1: h}
    assert ex.fail_removes == 0
    ex.remove(h)
    assert ex.exited() == {}
    assert ex.poll(h) == LOST
    assert ex.calls.count(("remove", 1)) == failures + 1


@pytest.mark.parametrize("handle", [Handle(1, "fake-1-1"), Handle(1, "nope")])
def test_unknown_handle_polls_as_lost(handle: Handle) -> None:
    ex = FakeExecutor()
    assert ex.poll(handle) == ExitInfo(None, False, None, None, None, error="container lost")
    assert ex.sample(handle) is None


def test_running_and_exited_split(clock: FakeClock) -> None:
    ex = FakeExecutor(lambda s: 1 if s.job_id == 3 else None, clock=clock)
    handles = {i: ex.launch(spec(i)) for i in (1, 2, 3, 4)}
    ex.finish(2)
    ex.stop(handles[4], 1)
    assert ex.running() == {1: handles[1]}
    assert ex.exited() == {2: handles[2], 3: handles[3], 4: handles[4]}
    ex.remove(handles[3])
    assert set(ex.exited()) == {2, 4}


def test_sample_defaults_to_zero_cpu() -> None:
    ex = FakeExecutor()
    h = ex.launch(spec(1))
    assert ex.sample(h) == Usage(0.0, 0, None)


def test_close_sets_flag_and_keeps_jobs() -> None:
    ex = FakeExecutor()
    h = ex.launch(spec(1))
    ex.close()
    assert ex.closed
    assert ex.running() == {1: h}


def test_handler_may_call_back_into_the_executor() -> None:
    ex = FakeExecutor()
    ex.handler = lambda s: len(ex.running())  # would deadlock if called under a non-reentrant lock
    h = ex.launch(spec(1))
    assert ex.poll(h).exit_code == 0  # type: ignore[union-attr]


def test_concurrent_launches_are_all_recorded() -> None:
    ex = FakeExecutor()
    start = threading.Barrier(8)

    def go(i: int) -> Handle:
        start.wait()
        return ex.launch(spec(i))

    with ThreadPoolExecutor(8) as pool:
        handles = list(pool.map(go, range(8)))
    assert ex.running() == {i: Handle(i, f"fake-{i}-1") for i in range(8)}
    assert handles == [Handle(i, f"fake-{i}-1") for i in range(8)]
    assert sorted(ex.calls) == [("launch", i) for i in range(8)]
