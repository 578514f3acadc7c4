"""Engine and session factory. SQLite runs in WAL mode with a busy timeout."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ds01q.errors import ConfigError

BUSY_TIMEOUT_MS = 10_000
BUSY_TIMEOUT_ENV = "DS01Q_SQLITE_BUSY_TIMEOUT_MS"  # a shorter one for the tests that hold the lock past it


def busy_timeout_ms() -> int:
    """How long a SQLite writer waits for the lock: ``BUSY_TIMEOUT_MS``, or ``$DS01Q_SQLITE_BUSY_TIMEOUT_MS``."""
    raw = os.environ.get(BUSY_TIMEOUT_ENV, "").strip()
    if not raw:
        return BUSY_TIMEOUT_MS
    if not raw.isdigit() or not 0 < int(raw) <= 600_000:
        raise ConfigError(f"{BUSY_TIMEOUT_ENV}={raw!r}: must be milliseconds from 1 to 600000")
    return int(raw)


def make_engine(url: str, **kw: object) -> Engine:
    if url.startswith("sqlite"):
        busy_ms = busy_timeout_ms()
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if url.startswith("sqlite:///"):
                private_files(path)
        engine = create_engine(url, connect_args={"timeout": busy_ms / 1000, "check_same_thread": False}, **kw)
        event.listen(engine, "connect", lambda conn, rec: _sqlite_pragmas(conn, busy_ms))
        return engine
    return create_engine(url, pool_pre_ping=True, **kw)


def private_files(path: str) -> None:
    """The SQLite file and its -wal/-shm are 0600 (scripts, workdirs, --env secrets are in there).

    The database file is created 0600 before SQLite opens it; SQLite gives -wal and -shm the mode of
    the database file. Existing files from an older install are tightened.
    """
    if path.startswith("file:"):
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for extra in ("-wal", "-shm", "-journal"):
        try:
            os.chmod(path + extra, 0o600, follow_symlinks=False)
        except FileNotFoundError:
            pass
        except NotImplementedError:  # no lchmod: the file is ours, never a symlink we created
            os.chmod(path + extra, 0o600)


def _sqlite_pragmas(dbapi_conn, busy_ms: int) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={busy_ms}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=FULL")  # an acknowledged commit survives a power or filesystem failure
    cur.close()


class SqliteSessions(sessionmaker[Session]):
    """``begin()`` (every write transaction) takes this process's write lock first.

    SQLite has one writer at a time. Without the lock, threads of one daemon (launches, exits, requests)
    meet inside SQLite's busy handler, which sleeps between tries (up to 100 ms each) while the database
    may already be free again; a lock hands the turn over at once. The wait is bounded like SQLite's own
    busy timeout, and ends in the same "database is locked" error. Plain ``sessions()`` (reads) take no lock.
    """

    def __init__(self, engine: Engine, **kw: object) -> None:
        super().__init__(engine, **kw)  # type: ignore[arg-type]
        self.wait_s = busy_timeout_ms() / 1000
        self.write_lock = threading.RLock()  # re-entrant: a nested begin() on one thread waits in SQLite, as before

    @contextlib.contextmanager
    def begin(self) -> Iterator[Session]:
        if not self.write_lock.acquire(timeout=self.wait_s):
            raise OperationalError("BEGIN", None, sqlite3.OperationalError("database is locked"))
        try:
            with super().begin() as session:
                yield session
        finally:
            self.write_lock.release()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    if engine.dialect.name == "sqlite":
        return SqliteSessions(engine, expire_on_commit=False)
    return sessionmaker(engine, expire_on_commit=False)


def migrations_dir() -> str:
    """The Alembic scripts, shipped inside the package (``ds01q/db/migrations``)."""
    here = Path(__file__).resolve().parent / "migrations"
    if not (here / "env.py").exists():
        raise FileNotFoundError(f"{here} is missing: reinstall ds01q (the migrations ship in the package)")
    return str(here)


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the Alembic chain up to ``revision``."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", migrations_dir())
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    if url.startswith("sqlite:///"):
        Path(url.split("sqlite:///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        private_files(url.split("sqlite:///", 1)[1])
    command.upgrade(cfg, revision)
