"""Engine and session factory. SQLite runs in WAL mode with a busy timeout."""
from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
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


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
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
