"""The agent's worker loop: an RQ worker that returns without a stop request (RQ swallows
errors such as a Redis restart mid-dequeue and returns) is replaced; a stop request ends it."""
from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from ds01q.daemon.agent import serve


class Lost(Exception):
    pass


def test_a_worker_that_returns_or_raises_is_replaced_until_a_stop_request() -> None:
    agent: Any = SimpleNamespace(stop_event=threading.Event(), node="n1")
    runs: list[str] = []

    class Worker:
        def work(self, **_: Any) -> bool:
            runs.append("work")
            if len(runs) == 1:
                return False  # what RQ does after "found an unhandled exception, quitting..."
            if len(runs) == 2:
                raise Lost("Connection refused")  # Redis away while the worker starts
            agent.stop_event.set()  # SIGTERM: AgentWorker.request_stop sets the event
            return True

    agent.stop_event.wait = lambda _t: agent.stop_event.is_set()  # no real sleeping between tries
    serve(agent, Worker, "INFO", Lost)
    assert runs == ["work", "work", "work"]
