"""accounting: job_usage, usage_samples, rollups, rollup_watermarks, rollup_dirty

Jobs that ended before this revision have no job_usage row; reports start with the
first job that ends after the upgrade.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rollup_dirty',
    sa.Column('period', sa.String(length=8), nullable=False),
    sa.Column('period_start', sa.Float(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('period', 'period_start')
    )
    op.create_table('rollup_watermarks',
    sa.Column('period', sa.String(length=8), nullable=False),
    sa.Column('done_until', sa.Float(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('period')
    )
    op.create_table('rollups',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('period', sa.String(length=8), nullable=False),
    sa.Column('period_start', sa.Float(), nullable=False),
    sa.Column('user', sa.String(length=128), nullable=False),
    sa.Column('group', sa.String(length=64), nullable=False),
    sa.Column('cgroup', sa.String(length=300), nullable=False),
    sa.Column('jobs', sa.Integer(), nullable=False),
    sa.Column('wall_s', sa.Float(), nullable=False),
    sa.Column('gpu_equiv_s', sa.Float(), nullable=False),
    sa.Column('gpu_mem_gb_h', sa.Float(), nullable=False),
    sa.Column('cpu_s', sa.Float(), nullable=False),
    sa.Column('max_rss_bytes', sa.BigInteger(), nullable=True),
    sa.Column('energy_kwh', sa.Float(), nullable=True),
    sa.Column('computed_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('period', 'period_start', 'user', 'group', 'cgroup', name='uq_rollups_key')
    )
    op.create_table('job_usage',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('run', sa.Integer(), nullable=False),
    sa.Column('user', sa.String(length=128), nullable=False),
    sa.Column('group', sa.String(length=64), nullable=False),
    sa.Column('cgroup', sa.String(length=300), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('ended_at', sa.Float(), nullable=False),
    sa.Column('wall_s', sa.Float(), nullable=False),
    sa.Column('gpu_share', sa.Float(), nullable=False),
    sa.Column('gpu_mem_mb', sa.Integer(), nullable=False),
    sa.Column('profiles', sa.String(length=200), nullable=False),
    sa.Column('gpu_equiv_s', sa.Float(), nullable=False),
    sa.Column('gpu_mem_gb_h', sa.Float(), nullable=False),
    sa.Column('cpu_s', sa.Float(), nullable=True),
    sa.Column('max_rss_bytes', sa.BigInteger(), nullable=True),
    sa.Column('energy_kwh', sa.Float(), nullable=True),
    sa.Column('recorded_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'run', name='uq_job_usage_run')
    )
    with op.batch_alter_table('job_usage', schema=None) as batch_op:
        batch_op.create_index('ix_job_usage_ended_at', ['ended_at'], unique=False)
        batch_op.create_index('ix_job_usage_started_at', ['started_at'], unique=False)
        batch_op.create_index('ix_job_usage_user', ['user'], unique=False)
        batch_op.create_index('ix_job_usage_wall_s', ['wall_s'], unique=False)

    op.create_table('usage_samples',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('cpu_s', sa.Float(), nullable=True),
    sa.Column('mem_bytes', sa.BigInteger(), nullable=True),
    sa.Column('max_rss_bytes', sa.BigInteger(), nullable=True),
    sa.Column('gpu_util', sa.Float(), nullable=True),
    sa.Column('power_w', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('usage_samples', schema=None) as batch_op:
        batch_op.create_index('ix_usage_samples_job_at', ['job_id', 'at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('usage_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_samples_job_at')

    op.drop_table('usage_samples')
    with op.batch_alter_table('job_usage', schema=None) as batch_op:
        batch_op.drop_index('ix_job_usage_wall_s')
        batch_op.drop_index('ix_job_usage_user')
        batch_op.drop_index('ix_job_usage_started_at')
        batch_op.drop_index('ix_job_usage_ended_at')

    op.drop_table('job_usage')
    op.drop_table('rollups')
    op.drop_table('rollup_watermarks')
    op.drop_table('rollup_dirty')
