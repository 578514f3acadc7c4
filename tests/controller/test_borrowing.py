"""Borrowing beyond max_gpus and reclaim by preemption, through the controller and the FakeExecutor."""
from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ds01q.db.models import Job
from ds01q.services import jobs
from ds01q.services.context import Caller
from tests.controller.test_controller import ROOT, Harness, config_data, db_url  # noqa: F401 (fixture)

ALICE = Caller(uid=4242, gid=4242, user="alice", admin=False)
BOB = Caller(uid=4243, gid=4243, user="bob", admin=False)
GRACE_S = 5.0
TICK_S = 1.0


class BorrowHarness(Harness):
    borrow_interactive = False

    def write_config(self, slices: list[str]) -> None:
        data: dict[str, Any] = config_data(self.tmp_path, slices)
        data["scheduler"] = {"preempt_grace": f"{GRACE_S:g}s"}
        data["groups"]["student"].update(max_gpus=0.3, borrowing=True, borrow_interactive=self.borrow_interactive)
        self.config_path.write_text(yaml.safe_dump(data))

    def as_user(self, caller: Caller, **a: Any) -> int:
        return self.submit(caller, **a)


@pytest.fixture
def h(tmp_path: Path, db_url: str) -> Iterator[BorrowHarness]:  # noqa: F811
    tmp_path.chmod(0o777)
    harness = BorrowHarness(tmp_path, db_url)
    yield harness
    harness.engine.dispose()


def state(h: Harness, job_id: int) -> str:
    return h.job(job_id).state


def test_a_borrower_is_preempted_and_requeued_for_a_within_quota_job(h: BorrowHarness) -> None:
    mine = [h.as_user(ALICE, mig="2g.10gb") for _ in range(3)]  # quota 0.3: one 2g.10gb (2/7)
    h.tick()
    assert [state(h, j) for j in mine] == ["RUNNING"] * 3  # two of them borrow idle slices
    shown = {j: jobs.show(h.ctx, ROOT, {"id": j}) for j in mine}
    assert [shown[j].get("borrowing") for j in mine] == [False, True, True]
    assert [r["id"] for r in jobs.queue(h.ctx, ROOT, {}) if r.get("borrowing")] == mine[1:]
    h.clock.advance(TICK_S)
    theirs = h.as_user(BOB, mig="2g.10gb")  # within bob's quota; every slice is taken
    t0 = h.clock.now()
    h.tick(advance=TICK_S)
    youngest = mine[2]
    assert state(h, youngest) in ("STOPPING", "PREEMPTED", "PENDING")
    while state(h, theirs) != "RUNNING" and h.clock.now() - t0 <= GRACE_S + 2 * TICK_S:
        h.tick(advance=TICK_S)
    assert state(h, theirs) == "RUNNING"
    assert h.job(theirs).started_at - t0 <= GRACE_S + TICK_S  # within the grace period plus one pass
    assert state(h, youngest) == "PENDING" and h.job(youngest).requeue_count == 1
    assert [e[0] for e in h.events(youngest)][-3:] == ["STOPPING", "PREEMPTED", "PENDING"]
    assert [state(h, j) for j in mine[:2]] == ["RUNNING", "RUNNING"]  # only the youngest went
    for _ in range(5):  # no loop: nothing else is stopped, the requeued job waits
        h.tick(advance=TICK_S)
    assert h.ex.calls.count(("stop", youngest)) == 1
    assert [c for c in h.ex.calls if c[0] == "stop"] == [("stop", youngest)]
    assert state(h, youngest) == "PENDING" and state(h, theirs) == "RUNNING"


def set_signal(h: Harness, job_id: int, value: dict[str, Any]) -> None:
    with h.sessions.begin() as s:
        s.get(Job, job_id).signal = json.dumps(value)


def test_reclaim_sends_the_jobs_signal_then_kills_after_the_grace(h: BorrowHarness) -> None:
    mine = [h.as_user(ALICE, mig="2g.10gb") for _ in range(3)]
    h.tick()
    youngest, older = mine[2], mine[1]
    set_signal(h, youngest, {"signal": "USR1", "seconds": 60, "batch_only": False})
    set_signal(h, older, {"signal": "USR2", "seconds": 60, "batch_only": False})
    h.clock.advance(TICK_S)
    theirs = h.as_user(BOB, mig="2g.10gb")
    t0 = h.clock.now()
    h.tick()
    assert h.ex.signals == [(youngest, signal.SIGUSR1, False, t0)]  # the job's --signal (not B:), at once; no other job
    while h.clock.now() < t0 + GRACE_S:  # the grace: the borrower keeps its slice, nothing is killed
        assert ("stop", youngest) not in h.ex.calls
        assert (state(h, youngest), state(h, theirs)) == ("STOPPING", "PENDING")
        h.clock.advance(TICK_S)
        h.tick()
    assert h.clock.now() == t0 + GRACE_S and h.ex.calls.count(("stop", youngest)) == 1  # killed now
    h.tick()  # its exit wakes the loop: one pass later the within-quota job runs
    assert state(h, theirs) == "RUNNING" and h.job(theirs).started_at == t0 + GRACE_S
    assert state(h, youngest) == "PENDING" and len(h.ex.signals) == 1


def test_a_borrower_that_exits_on_its_signal_is_requeued_without_a_kill(h: BorrowHarness) -> None:
    mine = [h.as_user(ALICE, mig="2g.10gb") for _ in range(3)]
    h.tick()
    youngest = mine[2]
    theirs = h.as_user(BOB, mig="2g.10gb")
    h.tick(advance=TICK_S)
    assert h.ex.signals[0][:2] == (youngest, signal.SIGTERM)  # no --signal: SIGTERM
    h.ex.finish(youngest, exit_code=0)  # it saved its state and left
    h.tick()
    assert state(h, theirs) == "RUNNING" and ("stop", youngest) not in h.ex.calls
    assert state(h, youngest) == "PENDING" and h.job(youngest).requeue_count == 1


def test_no_requeue_ends_a_preempted_borrower(h: BorrowHarness) -> None:
    mine = [h.as_user(ALICE, mig="2g.10gb", requeue=r) for r in (True, True, False)]
    h.tick()
    h.as_user(BOB, mig="2g.10gb")
    h.tick(int(GRACE_S / TICK_S) + 3, advance=TICK_S)
    job = h.job(mine[2])
    assert (job.state, job.end_reason) == ("CANCELLED", "preempted (--no-requeue)")


def test_interactive_sessions_do_not_borrow_unless_the_group_allows(h: BorrowHarness) -> None:
    first = h.as_user(ALICE, mig="2g.10gb")
    h.tick()
    shell = h.as_user(ALICE, mig="2g.10gb", interactive=True, script=None)
    h.tick()
    assert state(h, first) == "RUNNING" and state(h, shell) == "PENDING"
    assert h.job(shell).reason == "UserLimit"


def test_a_group_may_let_interactive_sessions_borrow(tmp_path: Path, db_url: str) -> None:  # noqa: F811
    tmp_path.chmod(0o777)

    class Lending(BorrowHarness):
        borrow_interactive = True

    h = Lending(tmp_path, db_url)
    try:
        h.as_user(ALICE, mig="2g.10gb")
        h.tick()
        shell = h.as_user(ALICE, mig="2g.10gb", interactive=True, script=None)
        h.tick()
        assert state(h, shell) == "RUNNING"
        assert jobs.show(h.ctx, ROOT, {"id": shell})["borrowing"] is True
    finally:
        h.engine.dispose()


def test_a_signal_that_cannot_be_sent_falls_back_to_the_usual_stop(h: BorrowHarness) -> None:
    mine = [h.as_user(ALICE, mig="2g.10gb") for _ in range(3)]
    h.tick()
    theirs = h.as_user(BOB, mig="2g.10gb")
    h.ex.fail_signals = 1
    h.tick()
    assert ("signal", mine[2]) in h.ex.calls and h.ex.signals == []
    h.tick()  # no grace is waited for a signal that never went out: stopped at once
    assert h.ex.calls.count(("stop", mine[2])) == 1
    h.tick()
    assert state(h, theirs) == "RUNNING" and state(h, mine[2]) == "PENDING"
