"""The databases the store and controller suites run on: SQLite, and a real PostgreSQL."""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

DATABASES = ["sqlite", "postgresql"]
_TEMPLATES: dict[str, str] = {}  # kind -> a database at the Alembic head, made once per test process


def psql(sql: str, db: str = "postgres") -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-q", "-d", db, "-c", sql], check=True,
                   capture_output=True)


def postgres_ready() -> None:
    if subprocess.run(["pg_isready", "-q"], capture_output=True).returncode != 0:
        pytest.fail("PostgreSQL is not running: run scripts/ci-services.sh --all (the README test command does)")
    subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-q", "-c", "CREATE ROLE root SUPERUSER LOGIN"],
                   capture_output=True)


def postgres_url(template: str | None = None) -> str:
    """A fresh database on the local PostgreSQL (started by scripts/ci-services.sh --all), as role root;
    empty, or a copy of ``template``."""
    postgres_ready()
    name = f"ds01q_test_{os.getpid()}"  # one per test process: parallel runs never share it
    psql(f"DROP DATABASE IF EXISTS {name}")
    psql(f"CREATE DATABASE {name} OWNER root" + (f" TEMPLATE {template}" if template else ""))
    return f"postgresql+psycopg2://root@/{name}?host=/var/run/postgresql"


def database_url(kind: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/t.db" if kind == "sqlite" else postgres_url()


def migrated_url(kind: str, tmp_path: Path) -> str:
    """A fresh database already at the Alembic head: a copy of one this process migrated once (the
    migrations themselves run from an empty database in tests/integration, through ``database_url``)."""
    from ds01q.db.engine import upgrade

    if kind not in _TEMPLATES:
        if kind == "sqlite":
            tmpl_dir = tempfile.mkdtemp(prefix="ds01q-tmpl-", dir="/tmp")
            atexit.register(shutil.rmtree, tmpl_dir, ignore_errors=True)
            _TEMPLATES[kind] = f"{tmpl_dir}/t.db"
            upgrade(f"sqlite:///{_TEMPLATES[kind]}")  # NullPool: closed after, the WAL folded into the file
        else:
            name = f"ds01q_tmpl_{os.getpid()}"
            postgres_ready()
            psql(f"DROP DATABASE IF EXISTS {name}")
            psql(f"CREATE DATABASE {name} OWNER root")
            upgrade(f"postgresql+psycopg2://root@/{name}?host=/var/run/postgresql")
            atexit.register(lambda: subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-q", "-c",
                                                    f"DROP DATABASE IF EXISTS {name}"], capture_output=True))
            _TEMPLATES[kind] = name
    if kind == "sqlite":
        shutil.copyfile(_TEMPLATES[kind], tmp_path / "t.db")
        os.chmod(tmp_path / "t.db", 0o600)
        return f"sqlite:///{tmp_path}/t.db"
    return postgres_url(template=_TEMPLATES[kind])
