"""Every client answered, every submit once: idempotency keys, the batch submit, the client's
retries, a connection carrying many requests, paged logs, and database errors as one line."""
from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from ds01q import protocol
from ds01q.client.api import Client
from ds01q.errors import RequestError, ServerUnavailable
from ds01q.services import submit
from ds01q.services.dbguard import db_guarded
from tests.controller.test_controller import ALICE, ROOT, Harness
from tests.dbs import DATABASES, migrated_url


@pytest.fixture(params=DATABASES)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, migrated_url(request.param, tmp_path))
    yield harness
    harness.engine.dispose()


def req(h: Harness, **a: Any) -> dict[str, Any]:
    return {"script": "#!/bin/sh\necho hi\n", "workdir": str(h.tmp_path), **a}


def test_a_retried_submit_returns_the_same_id(h: Harness) -> None:
    first = submit.submit(h.ctx, ROOT, req(h, key="k-1"))
    again = submit.submit(h.ctx, ROOT, req(h, key="k-1"))
    home = h.tmp_path / "alice"
    home.mkdir()
    os.chown(home, ALICE.uid, ALICE.gid)
    other = submit.submit(h.ctx, ALICE, req(h, key="k-1", workdir=str(home)))  # keys are per user
    assert again["id"] == first["id"] and again.get("existing") and other["id"] != first["id"]
    assert submit.submit(h.ctx, ROOT, req(h))["id"] not in (first["id"], other["id"])


@pytest.mark.parametrize("key", ["", "a b", "x" * 101, 5, "../k"])
def test_a_bad_key_is_one_line(h: Harness, key: object) -> None:
    with pytest.raises(RequestError, match="^key: 1-100 characters"):
        submit.submit(h.ctx, ROOT, req(h, key=key))


def test_submit_many_queues_all_in_one_transaction(h: Harness) -> None:
    out = submit.submit_many(h.ctx, ROOT, {"jobs": [req(h, name=f"j{i}") for i in range(50)], "key": "b1"})
    ids = out["ids"]
    assert len(ids) == 50 and len(set(ids)) == 50
    assert [h.job(i).name for i in ids] == [f"j{i}" for i in range(50)]
    assert h.job(ids[7]).output_path == os.path.join(str(h.tmp_path), f"ds01q-{ids[7]}.out")
    assert submit.submit_many(h.ctx, ROOT, {"jobs": [req(h) for _ in range(50)], "key": "b1"})["ids"] == ids
    h.tick()
    assert sum(h.job(i).state == "RUNNING" for i in ids) == 3  # three slices


def test_submit_many_is_all_or_nothing(h: Harness) -> None:
    before = submit.submit(h.ctx, ROOT, req(h))["id"]
    jobs = [req(h) for _ in range(5)] + [req(h, mig="9g.99gb")]
    with pytest.raises(RequestError, match="^job 5: --mig '9g.99gb' is not a MIG profile"):
        submit.submit_many(h.ctx, ROOT, {"jobs": jobs})
    with pytest.raises(RequestError, match="^jobs: a list of 1 to"):
        submit.submit_many(h.ctx, ROOT, {"jobs": "x"})
    assert submit.submit(h.ctx, ROOT, req(h))["id"] == before + 1  # nothing of the batch was queued


def test_database_trouble_is_one_line() -> None:
    @db_guarded
    def locked(*a: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    with pytest.raises(ServerUnavailable) as e:
        locked()
    assert str(e.value) == "the database is busy (another writer holds it); nothing was changed, try again"


# ------------------------------------------------------------------ the client against a small server
class PageServer:
    """Answers the protocol on a Unix socket: ``logs`` in pages of ``page`` bytes, ``ping``; counts connections."""

    def __init__(self, path: str, text: str, page: int = 7, start_after: float = 0.0) -> None:
        self.path, self.text, self.page = path, text, page
        self.connections = 0
        self.requests = 0
        self.sock: socket.socket | None = None
        threading.Thread(target=self._run, args=(start_after,), daemon=True).start()

    def _run(self, delay: float) -> None:
        time.sleep(delay)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(socket.SOMAXCONN)
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = protocol.LineReader(conn)
        while (msg := reader.read()) is not None:
            self.requests += 1
            a = msg["args"]
            if msg["op"] == "logs":
                off = a["offset"]
                data = self.text[off:off + self.page]
                protocol.send(conn, protocol.ok({"data": data, "offset": off + len(data), "final": True}))
            else:
                protocol.send(conn, protocol.ok({"user": "root"}))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


@pytest.fixture
def sock_path() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="ds01q-c-")
    yield os.path.join(d, "s.sock")


def test_logs_pages_until_the_end_of_the_file(sock_path: str) -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    srv = PageServer(sock_path, text, start_after=0.0)
    with Client(sock_path, timeout=5) as c:
        assert "".join(c.logs(1)) == text
    assert srv.connections == 1 and srv.requests > 100 // 7  # many requests over one connection
    srv.close()


def test_the_client_waits_for_a_server_that_is_starting(sock_path: str) -> None:
    srv = PageServer(sock_path, "", start_after=0.5)
    with Client(sock_path, timeout=5) as c:
        assert c.call("ping") == {"user": "root"}
    srv.close()


def test_no_server_is_one_line_after_the_wait(sock_path: str) -> None:
    with pytest.raises(ServerUnavailable, match=f"^no ds01q server on {sock_path} \\(start `ds01q server`"):
        Client(sock_path, timeout=5, connect_wait=0.3).call("ping")


def test_burst_of_connections_beyond_the_old_backlog(sock_path: str) -> None:
    srv = PageServer(sock_path, "", start_after=0.0)
    time.sleep(0.1)
    results: list[Any] = []

    def one() -> None:
        try:
            results.append(Client(sock_path, timeout=10).call("ping"))
        except Exception as e:  # collected: the assertion below names it
            results.append(e)

    threads = [threading.Thread(target=one) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [{"user": "root"}] * 64, [r for r in results if not isinstance(r, dict)][:3]
    srv.close()
