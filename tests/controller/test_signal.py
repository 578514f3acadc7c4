"""``--signal=[B:]SIG[@TIME]`` through the controller (FakeExecutor, fake clock, SQLite and PostgreSQL): sent
TIME seconds before the time limit, once per run (a job event), again after a requeue, with B: to the
batch shell only; a failed delivery is recorded and the job still ends at its time limit."""
from __future__ import annotations

import signal

from ds01q.services import jobs
from tests.controller.test_controller import ROOT, Harness, db_url, h  # noqa: F401

CPU = {"gpus": 0}


def signal_events(h: Harness, job_id: int) -> list[str]:
    return [r for _, r in h.events(job_id) if r and r.startswith("signal ")]


def test_signal_is_sent_seconds_before_the_limit_once_per_run(h: Harness) -> None:
    job_id = h.submit(time="2m", signal="USR1@30", **CPU)
    h.tick()
    assert h.job(job_id).state == "RUNNING"
    h.clock.advance(89)  # 31 s before the limit: not yet
    h.tick()
    assert [s[:3] for s in h.ex.signals] == [] and signal_events(h, job_id) == []
    h.clock.advance(1)  # 30 s before
    h.tick()
    assert [s[:3] for s in h.ex.signals] == [(job_id, int(signal.SIGUSR1), False)]
    assert signal_events(h, job_id) == ["signal USR1 sent to every process of the job, 30s before the time limit"]
    h.tick(3, advance=5)  # later ticks send nothing more
    assert len(h.ex.signals) == 1 and len(signal_events(h, job_id)) == 1
    h.clock.advance(20)
    h.tick(2)  # the time limit: stopped as always
    assert h.job(job_id).state == "TIMEOUT"


def test_batch_only_and_a_requeue_starts_a_new_run(h: Harness) -> None:
    job_id = h.submit(time="100s", signal={"signal": "TERM", "seconds": 60, "batch_only": True}, **CPU)
    h.tick()
    h.clock.advance(40)
    h.tick()
    assert [s[:3] for s in h.ex.signals] == [(job_id, int(signal.SIGTERM), True)]
    jobs.requeue(h.ctx, ROOT, {"ids": [job_id]})
    h.tick(3)
    job = h.job(job_id)
    assert job.state == "RUNNING" and job.requeue_count == 1
    h.tick()
    assert len(h.ex.signals) == 1  # the new run has 100 s again
    h.clock.advance(40)
    h.tick()
    assert [s[:3] for s in h.ex.signals] == [(job_id, int(signal.SIGTERM), True)] * 2
    assert len(signal_events(h, job_id)) == 2


def test_a_job_without_signal_or_a_failed_delivery(h: Harness) -> None:
    plain = h.submit(time="100s", **CPU)
    failing = h.submit(time="100s", signal="USR2@50", **CPU)
    h.tick()
    original = h.ex.signal

    def broken(handle: object, signum: int, batch_only: bool = True) -> None:
        from ds01q.errors import ExecutorError
        raise ExecutorError("engine said no")

    h.ex.signal = broken  # type: ignore[method-assign]
    h.clock.advance(60)
    h.tick()
    h.ex.signal = original  # type: ignore[method-assign]
    assert signal_events(h, plain) == []
    assert signal_events(h, failing) == ["signal USR2 sent to every process of the job, 40s before the time limit",
                                         "signal USR2 not delivered: engine said no"]
    h.tick(2, advance=5)
    assert [s[:3] for s in h.ex.signals] == []  # claimed once: not retried within the run
    h.clock.advance(40)
    h.tick(2)
    assert h.job(failing).state == "TIMEOUT" and h.job(plain).state == "TIMEOUT"
