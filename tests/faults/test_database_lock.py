"""Another process holds the SQLite write lock (BEGIN IMMEDIATE) for longer than the busy
timeout while users submit and running jobs end: every client gets an id or a one-line error
(never "database is locked", never a traceback, never a hang), the daemon resumes writing once
the lock goes (the exits it could not record are recorded then), and no acknowledged submit is
lost or run twice."""
from __future__ import annotations

import errno
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ds01q.client.api import Client
from ds01q.db.engine import BUSY_TIMEOUT_ENV
from ds01q.errors import ServerUnavailable
from tests.faults.checks import MARKER_SCRIPT, check_invariants, db_file, runs
from tests.faults.proxy import EngineProxy, Faults
from tests.support import Daemon, Result, unless_root

pytestmark = [pytest.mark.docker]
GROUPS = {"student": {"priority": 10, "max_gpus": 7.0, "max_running_jobs": 10}}
BUSY_S = 4  # the test daemons' SQLite busy timeout (10 s in production): the lock is held past it


@pytest.fixture
def short_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, str(BUSY_S * 1000))


@pytest.mark.timeout(180)
def test_a_database_lock_longer_than_the_busy_timeout(short_busy: None, make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon(groups=GROUPS)
    marker = d.root / "marker"
    body = MARKER_SCRIPT.format(marker=marker, sleep=1)
    with Client(d.socket, timeout=30) as c:
        running = c.submit_many([{"script": body, "workdir": str(d.root), "mig": "2g.10gb"}] * 3)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and {c.show(i)["state"] for i in running} != {"RUNNING"}:
            time.sleep(0.1)
        assert {c.show(i)["state"] for i in running} == {"RUNNING"}

    blocker = sqlite3.connect(str(d.root / "ds01q.db"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # held past the busy timeout; the three jobs end meanwhile
    script = d.root / "m.sh"  # the CLI's jobs run in d.root too, where the marker is
    script.write_text(body)
    results: list[Result] = []
    errors: list[BaseException] = []

    def cli_submit() -> None:
        try:
            results.append(d.cli("root", "submit", "--parsable", "--gpus", "0", str(script), cwd=d.root))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=cli_submit) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.5)
    reads = d.cli("ds01q-stu1", "queue")  # reads go on while the lock is held (WAL)
    time.sleep(BUSY_S + 3 - 1.5)
    blocker.execute("ROLLBACK")
    blocker.close()
    for t in threads:
        t.join(timeout=90)
    assert not errors and len(results) == 3 and not any(t.is_alive() for t in threads), (errors, results)
    assert reads.rc == 0 and "Traceback" not in reads.err, reads

    acknowledged = []
    for r in results:
        text = r.out + r.err
        assert "locked" not in text and "Traceback" not in text, r
        if r.rc == 0:
            acknowledged.append(int(r.out.strip()))
        else:  # one line, saying what happened
            assert r.rc == 1 and len(r.err.strip().splitlines()) == 1 and "database" in r.err, r
    after = d.cli("root", "submit", "--parsable", "--gpus", "0", str(script), cwd=d.root)  # writes resume
    assert after.rc == 0, after
    later = int(after.out.strip())
    ids = running + acknowledged + [later]
    with Client(d.socket, timeout=30) as c:
        jobs: dict[int, Any] = check_invariants(d, c, ids, marker, timeout=90)
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}, {i: j["state"] for i, j in jobs.items()}
    assert runs(marker) == {i: 1 for i in ids}
    db = sqlite3.connect(f"file:{d.root / 'ds01q.db'}?mode=ro", uri=True, timeout=30)
    try:  # every job in the database is one somebody was told about: no submit half-done
        assert sorted(i for (i,) in db.execute("SELECT id FROM jobs")) == sorted(ids)
    finally:
        db.close()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs for the database's directory, so the test can fill it."""
    path = tmp_path / "dbfs"
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        unless_root(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; return it (delete it to free the space)."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


@pytest.mark.timeout(180)
def test_a_full_database_disk(make_daemon: Callable[..., Daemon], small_fs: Path) -> None:
    """The database's file system fills up while jobs run: a submit is refused with one line
    (nothing queued), exits wait, reads go on; once space is freed everything resumes and each
    job ends once."""
    d = make_daemon(groups=GROUPS, database=f"sqlite:///{small_fs}/ds01q.db")
    marker = d.root / "marker"
    body = MARKER_SCRIPT.format(marker=marker, sleep=1)
    req = {"script": body, "workdir": str(d.root), "mig": "2g.10gb"}
    with Client(d.socket, timeout=30) as c:
        ids = c.submit_many([req] * 2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and {c.show(i)["state"] for i in ids} != {"RUNNING"}:
            time.sleep(0.1)
        filler = fill(small_fs)
        time.sleep(2)  # the two jobs end while the disk is full
        with pytest.raises(ServerUnavailable) as refused:  # one try, no retry: the daemon's own answer
            c.call("submit_many", jobs=[req], key="full-1")
        assert str(refused.value).startswith("the database") and "locked" not in str(refused.value), refused.value
        assert len(str(refused.value).splitlines()) == 1
        assert {j["id"] for j in c.queue()} >= set(ids)  # reads go on
        filler.unlink()
        later = c.submit_many([req])  # writes resume
        jobs = check_invariants(d, c, ids + later, marker, timeout=90)
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}
    assert runs(marker) == {i: 1 for i in ids + later}
    db = sqlite3.connect(f"file:{small_fs / 'ds01q.db'}?mode=ro", uri=True, timeout=30)
    try:  # the refused submit queued nothing
        assert sorted(i for (i,) in db.execute("SELECT id FROM jobs")) == sorted(ids + later)
    finally:
        db.close()


@pytest.mark.timeout(180)
def test_a_database_lock_between_a_start_and_its_record(short_busy: None, make_daemon: Callable[..., Daemon],
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The lock is taken just as the daemon starts a container (the engine proxy does it) and held
    past the busy timeout: the daemon cannot record RUNNING, the container runs and ends meanwhile.
    Once the lock goes the container is found (adopted or its exit recorded), never started again."""
    holder: list[Daemon] = []
    blockers: list[sqlite3.Connection] = []

    def lock_then_start() -> str:
        blocker = sqlite3.connect(str(db_file(holder[0])), isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        blockers.append(blocker)
        return "forward"

    faults = Faults()
    faults.add("POST", r"/containers/[0-9a-f]+/start", lock_then_start, times=1)
    proxy = EngineProxy(str(tmp_path / "engine.sock"), faults=faults)
    proxy.up()
    monkeypatch.setenv("DOCKER_HOST", proxy.docker_host)
    d = make_daemon(groups=GROUPS)
    holder.append(d)
    marker = d.root / "marker"
    with Client(d.socket, timeout=30) as c:
        ids = c.submit_many([{"script": MARKER_SCRIPT.format(marker=marker, sleep=1), "workdir": str(d.root),
                              "mig": "2g.10gb"}])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and faults.unmet():
        time.sleep(0.1)
    assert faults.unmet() == [], d.log_tail()
    while time.monotonic() < deadline and not runs(marker):  # the engine has started it (its answer may lag)
        time.sleep(0.1)
    time.sleep(BUSY_S + 2)  # past the busy timeout of the daemon's write of RUNNING
    (blocker,) = blockers
    blocker.execute("ROLLBACK")
    blocker.close()
    with Client(d.socket, timeout=30) as c:
        jobs = check_invariants(d, c, ids, marker, timeout=60)
    assert jobs[ids[0]]["state"] == "COMPLETED" and runs(marker) == {ids[0]: 1}
    log = d.log_path.read_text()
    assert "the database refused its record" in log, log[-3000:]  # the write of RUNNING did fail (the case under test)
    proxy.down()
