"""Revision 0005e_multi on SQLite and PostgreSQL: the tables match the models, and it goes down and up again."""
from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from ds01q.db.engine import make_engine, upgrade
from ds01q.db.models import Base
from tests.dbs import DATABASES, database_url

TABLES = {"nodes", "node_commands", "node_exits", "node_samples"}


def _diffs(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    out = []
    for d in diffs:
        items = d if isinstance(d, list) else [d]
        for item in items:
            if any(getattr(x, "name", None) in TABLES or getattr(getattr(x, "table", None), "name", None) in TABLES
                   or x in TABLES for x in item[1:] if x is not None):
                out.append(item)
    return out


@pytest.mark.parametrize("kind", DATABASES)
def test_node_tables_match_the_models_and_downgrade(kind: str, tmp_path: Path) -> None:
    url = database_url(kind, tmp_path)
    upgrade(url)
    assert _diffs(url) == []
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from ds01q.db.engine import migrations_dir

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", migrations_dir())
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    command.downgrade(cfg, "0004")
    engine = make_engine(url)
    assert not TABLES & set(inspect(engine).get_table_names())
    engine.dispose()
    upgrade(url)
    engine = make_engine(url)
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()
