"""The server re-drives a command whose RQ message Redis lost (as a Redis restart does), and an
acknowledged command is never waited on again. Redis in a testcontainer; SQLite for the ledger."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from ds01q.db import nodes
from ds01q.db.engine import make_engine, make_sessionmaker, upgrade
from ds01q.dispatch.messages import queue_name
from ds01q.dispatch.remote import RemoteExecutor
from ds01q.errors import ExecutorError
from ds01q.executors.base import Handle
from tests.multinode.cluster import Services

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]


@pytest.fixture
def redis_url(services: Services) -> str:
    return services.redis_url  # the directory's Redis (conftest), flushed by each test


@pytest.fixture
def remote(tmp_path: Path, redis_url: str) -> Iterator[tuple[RemoteExecutor, Any]]:
    url = f"sqlite:///{tmp_path}/t.db"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    with sessions.begin() as s:
        nodes.heartbeat(s, "n1", time.time(), {})
    ex = RemoteExecutor(sessions, redis_url, redrive_s=0.5, command_timeout_s=20)
    ex.redis.flushdb()
    yield ex, sessions
    ex.close()


def queued(ex: RemoteExecutor) -> list[int]:
    from rq import Queue

    return [int(j.args[0]) for j in Queue(queue_name("n1"), connection=ex.redis).get_jobs()]


def wait_for(pred: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_lost_message_is_sent_again_and_the_ack_ends_the_wait(remote: tuple[RemoteExecutor, Any]) -> None:
    ex, sessions = remote
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _stop(ex, errors))
    t.start()
    first = wait_for(lambda: queued(ex))
    ex.redis.flushall()  # what a Redis restart without persistence does to the queue
    again = wait_for(lambda: queued(ex))  # re-driven
    assert again == first and ex.redriven >= 1
    with sessions.begin() as s:  # the agent acknowledges (once)
        assert nodes.finish_command(s, first[0], True, {}, time.time())
    t.join(timeout=10)
    assert not t.is_alive() and errors == []


def test_a_failed_command_is_a_one_line_executor_error(remote: tuple[RemoteExecutor, Any]) -> None:
    ex, sessions = remote
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _stop(ex, errors))
    t.start()
    cmd = wait_for(lambda: queued(ex))[0]
    with sessions.begin() as s:
        nodes.finish_command(s, cmd, False, {"error": "no such container"}, time.time())
    t.join(timeout=10)
    assert [str(e) for e in errors] == ["node n1: no such container"]


def test_a_down_node_refuses_commands_at_once(remote: tuple[RemoteExecutor, Any]) -> None:
    ex, sessions = remote
    with sessions.begin() as s:
        nodes.set_state(s, nodes.get(s, "n1"), nodes.DOWN, "test")  # type: ignore[arg-type]
    with pytest.raises(ExecutorError, match="node n1 is DOWN"):
        ex.stop(Handle(1, "n1/abc"), 1.0)
    assert queued(ex) == []


def _stop(ex: RemoteExecutor, errors: list[BaseException]) -> None:
    try:
        ex.stop(Handle(1, "n1/abc"), 1.0)
    except BaseException as e:  # reported to the test's thread
        errors.append(e)
