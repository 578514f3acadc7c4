"""``wait``: the daemon answers once the jobs end (or at the timeout), reading only their states."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ds01q.errors import NotFound, RequestError
from ds01q.services import waiting
from tests.controller.test_controller import ROOT, Harness, db_url, h  # noqa: F401  (the fixtures)


def test_wait_answers_when_the_last_job_ends(h: Harness) -> None:  # noqa: F811
    a, b = h.submit(), h.submit()
    h.tick()
    assert waiting.wait(h.ctx, ROOT, {"ids": [a, b], "timeout": 0}) == {
        "states": {str(a): "RUNNING", str(b): "RUNNING"}, "done": False}
    answers: list[dict[str, Any]] = []
    waiter = threading.Thread(target=lambda: answers.append(waiting.wait(h.ctx, ROOT, {"ids": [a, b], "timeout": 15})))
    waiter.start()
    h.ex.finish(a, exit_code=0)
    h.tick()
    time.sleep(3 * waiting.POLL_S)
    assert waiter.is_alive() and not answers  # one of two ended: still waiting
    h.ex.finish(b, exit_code=3)
    h.tick()
    waiter.join(timeout=5)
    assert answers == [{"states": {str(a): "COMPLETED", str(b): "FAILED"}, "done": True}]


def test_wait_gives_up_at_its_timeout(h: Harness) -> None:  # noqa: F811
    job = h.submit()
    t = time.monotonic()
    out = waiting.wait(h.ctx, ROOT, {"ids": [job], "timeout": 0.5})
    assert out == {"states": {str(job): "PENDING"}, "done": False} and 0.5 <= time.monotonic() - t < 5


@pytest.mark.parametrize("args, message", [
    ({"ids": []}, "job ids must be 1 to 1000 positive whole numbers"),
    ({"ids": ["1"]}, "job ids must be 1 to 1000 positive whole numbers"),
    ({"ids": [1], "timeout": 21}, "timeout: seconds from 0 to 20"),
    ({"ids": [1], "timeout": -1}, "timeout: seconds from 0 to 20"),
    ({"ids": [1], "timeout": True}, "timeout: seconds from 0 to 20"),
])
def test_bad_wait_requests_are_one_line(h: Harness, args: dict[str, Any], message: str) -> None:  # noqa: F811
    with pytest.raises(RequestError, match="^" + message + "$"):
        waiting.wait(h.ctx, ROOT, args)


def test_waiting_on_an_unknown_job_is_one_line(h: Harness) -> None:  # noqa: F811
    job = h.submit()
    with pytest.raises(NotFound, match=f"^job {job + 1} not found$"):
        waiting.wait(h.ctx, ROOT, {"ids": [job, job + 1], "timeout": 0})



def test_a_job_that_ended_for_good_is_not_read_again(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    done, running = h.submit(), h.submit()
    h.tick()
    h.ex.finish(done, exit_code=0)
    h.tick()
    asked: list[list[int]] = []
    read = waiting.store.job_states
    monkeypatch.setattr(waiting.store, "job_states", lambda s, ids: asked.append(list(ids)) or read(s, ids))
    out = waiting.wait(h.ctx, ROOT, {"ids": [done, running], "timeout": 3 * waiting.POLL_S})
    assert out == {"states": {str(done): "COMPLETED", str(running): "RUNNING"}, "done": False}
    assert asked[0] == [done, running] and len(asked) >= 2 and all(ids == [running] for ids in asked[1:]), asked
