"""Slurm compatibility: error file, array tasks and throttle, signal, mail, open mode, who held a job

``depends_on`` keeps its column; it now also holds a Slurm dependency object
(``{"mode": "all"|"any", "items": [...]}``) besides the old list of afterok ids.
``eligible_at`` (existing) carries ``--begin``.

Revision ID: 0005c_slurm
Revises: 0005b_once
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = '0005c_slurm'
down_revision = '0005b_once'
branch_labels = None
depends_on = None


def _keep_autoincrement() -> dict:
    """A rebuild of ``jobs`` on SQLite keeps AUTOINCREMENT (0005b_once): ids are never reused."""
    return {"table_kwargs": {"sqlite_autoincrement": True}} if op.get_bind().dialect.name == "sqlite" else {}


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None, **_keep_autoincrement()) as batch_op:
        batch_op.add_column(sa.Column('error_path', sa.String(length=4096), nullable=True))
        batch_op.add_column(sa.Column('array_task_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('array_throttle', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('signal', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('mail_user', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('mail_type', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('open_mode', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('held_by_admin', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index('ix_jobs_array_id', ['array_id'])


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None, **_keep_autoincrement()) as batch_op:
        batch_op.drop_index('ix_jobs_array_id')
        for name in ('held_by_admin', 'open_mode', 'mail_type', 'mail_user', 'signal', 'array_throttle',
                     'array_task_id', 'error_path'):
            batch_op.drop_column(name)
