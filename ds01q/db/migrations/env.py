"""Alembic environment for ds01q (run by `ds01q admin db upgrade`)."""
from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from ds01q.db.engine import make_engine
from ds01q.db.models import Base
import ds01q.accounting.models  # noqa: F401,E402  (accounting tables on the same Base)
import ds01q.db.audit  # noqa: F401,E402  (the audit log on the same Base)

config = context.config
target_metadata = Base.metadata


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
