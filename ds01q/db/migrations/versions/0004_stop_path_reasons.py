"""one stop path and typed reasons: STOPPING + stop_outcome, reason (typed) vs end_reason (text)

Carries existing rows over:
- a ``reason`` that is not a pending reason (free text such as "exit code 1" or
  "out of memory (container memory limit)") moves to ``end_reason``;
- a job that held slices with ``cancel_requested`` becomes STOPPING with the
  ``stop_outcome`` its ``end_state`` meant;
- the ``held`` flag (a copy of the HELD state), ``cancel_requested`` and
  ``end_state`` are dropped.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

PENDING_REASONS = ("Priority", "Resources", "UserLimit", "GroupLimit", "Dependency", "Held", "Draining",
                   "DependencyNeverSatisfied", "NeverFits")
OUTCOME_BY_END_STATE = {"CANCELLED": "cancelled", "TIMEOUT": "timeout", "PREEMPTED": "admin_requeue",
                        "NODE_FAIL": "layout_change", "COMPLETED": "shell_exit", "FAILED": "shell_exit"}


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('end_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('stop_outcome', sa.String(length=16), nullable=True))
    jobs = sa.table('jobs', sa.column('id', sa.Integer), sa.column('state', sa.String), sa.column('reason', sa.String),
                    sa.column('end_reason', sa.Text), sa.column('stop_outcome', sa.String),
                    sa.column('cancel_requested', sa.Boolean), sa.column('end_state', sa.String))
    op.execute(jobs.update().where(jobs.c.reason.is_not(None), jobs.c.reason.not_in(PENDING_REASONS))
               .values(end_reason=jobs.c.reason, reason=None))
    op.execute(jobs.update().where(jobs.c.state.in_(("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                                     "OUT_OF_MEMORY", "NODE_FAIL")), jobs.c.reason.is_not(None))
               .values(reason=None))
    holding = (jobs.c.state.in_(("STARTING", "RUNNING")), jobs.c.cancel_requested.is_(True))
    op.execute(jobs.update().where(*holding, jobs.c.end_reason == "idle timeout").values(stop_outcome="idle"))
    for end_state, outcome in OUTCOME_BY_END_STATE.items():
        op.execute(jobs.update().where(*holding, jobs.c.stop_outcome.is_(None), jobs.c.end_state == end_state)
                   .values(stop_outcome=outcome))
    op.execute(jobs.update().where(*holding, jobs.c.stop_outcome.is_(None)).values(stop_outcome="shell_exit"))
    op.execute(jobs.update().where(*holding).values(state="STOPPING"))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('held')
        batch_op.drop_column('cancel_requested')
        batch_op.drop_column('end_state')


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('end_state', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('cancel_requested', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('held', sa.Boolean(), nullable=False, server_default=sa.false()))
    jobs = sa.table('jobs', sa.column('state', sa.String), sa.column('reason', sa.String),
                    sa.column('end_reason', sa.Text), sa.column('held', sa.Boolean),
                    sa.column('cancel_requested', sa.Boolean))
    op.execute(jobs.update().where(jobs.c.state == "HELD").values(held=True))
    op.execute(jobs.update().where(jobs.c.state == "STOPPING").values(state="RUNNING", cancel_requested=True))
    op.execute(jobs.update().where(jobs.c.reason.is_(None), jobs.c.end_reason.is_not(None))
               .values(reason=sa.func.substr(jobs.c.end_reason, 1, 32)))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('stop_outcome')
        batch_op.drop_column('end_reason')
