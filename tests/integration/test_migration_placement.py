"""Revision 0006_mig_placement on SQLite and PostgreSQL: the slice placement columns match the
models, and the revision goes down and up again."""
from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from ds01q.db.engine import make_engine, migrations_dir, upgrade
from ds01q.db.models import Base
from tests.dbs import DATABASES, database_url

COLUMNS = {"placement_start", "placement_size", "gi_id"}


def _slice_columns(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("slices")}
    finally:
        engine.dispose()


def _slice_diffs(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    flat = [x for d in diffs for x in (d if isinstance(d, list) else [d])]
    return [d for d in flat if "slices" in (d[2] if len(d) > 2 and isinstance(d[2], str) else "")
            or getattr(d[1], "name", None) == "slices"]


@pytest.mark.parametrize("kind", DATABASES)
def test_placement_columns_match_the_models_and_downgrade(kind: str, tmp_path: Path) -> None:
    url = database_url(kind, tmp_path)
    upgrade(url)
    assert COLUMNS <= _slice_columns(url)
    assert _slice_diffs(url) == []
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", migrations_dir())
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    command.downgrade(cfg, "0005e_multi")
    assert not COLUMNS & _slice_columns(url)
    upgrade(url)
    assert COLUMNS <= _slice_columns(url)
