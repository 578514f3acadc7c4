"""exactly once: jobs.launch_attempt, jobs.submit_key (unique per user), AUTOINCREMENT job ids on SQLite

- ``launch_attempt`` is counted up in the transaction that reserves a job's slices; the
  container of that attempt has a deterministic name, so a relaunch finds it.
- ``submit_key`` is an idempotency key chosen by the client; ``(user, submit_key)`` is unique.
- On SQLite the ``jobs`` table is rebuilt with ``AUTOINCREMENT`` so an id is never reused
  (PostgreSQL sequences never go back already).

Revision ID: 0005b_once
Revises: 0005a_sec
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = '0005b_once'
down_revision = '0005a_sec'
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:  # the rebuild drops and renames jobs, which its children reference: check them after
        op.execute("PRAGMA foreign_keys=OFF")  # (pysqlite: no transaction is open before the first DML)
    kw = {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}} if sqlite else {}
    with op.batch_alter_table('jobs', schema=None, **kw) as batch_op:
        batch_op.add_column(sa.Column('launch_attempt', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('submit_key', sa.String(length=128), nullable=True))
        batch_op.create_index('ux_jobs_user_submit_key', ['user', 'submit_key'], unique=True)
    if sqlite:
        bad = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if bad:
            raise RuntimeError(f"rebuilding jobs broke {len(bad)} references, e.g. {bad[0]}")
        op.execute("PRAGMA foreign_keys=ON")


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ux_jobs_user_submit_key')
        batch_op.drop_column('submit_key')
        batch_op.drop_column('launch_attempt')
