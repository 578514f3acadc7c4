"""The databases the store and controller suites run on: SQLite, and a real PostgreSQL."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

DATABASES = ["sqlite", "postgresql"]


def postgres_url() -> str:
    """A fresh database on the local PostgreSQL (started by scripts/ci-services.sh --all), as role root."""
    def psql(sql: str, db: str = "postgres") -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-q", "-d", db, "-c", sql], check=True,
                       capture_output=True)

    if subprocess.run(["pg_isready", "-q"], capture_output=True).returncode != 0:
        pytest.fail("PostgreSQL is not running: run scripts/ci-services.sh --all (the README test command does)")
    subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-q", "-c", "CREATE ROLE root SUPERUSER LOGIN"],
                   capture_output=True)
    name = f"ds01q_test_{os.getpid()}"  # one per test process: parallel runs never share it
    psql(f"DROP DATABASE IF EXISTS {name}")
    psql(f"CREATE DATABASE {name} OWNER root")
    return f"postgresql+psycopg2://root@/{name}?host=/var/run/postgresql"


def database_url(kind: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/t.db" if kind == "sqlite" else postgres_url()
