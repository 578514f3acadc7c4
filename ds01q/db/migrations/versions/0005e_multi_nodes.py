"""several nodes: the node registry (heartbeats, UP/DOWN/DRAINED) and the dispatch tables
(commands to agents, exits and usage samples reported by them)

Revision ID: 0005e_multi
Revises: 0005c_slurm
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = '0005e_multi'
down_revision = '0005c_slurm'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'nodes',
        sa.Column('name', sa.String(128), primary_key=True),
        sa.Column('state', sa.String(16), nullable=False, server_default='UP'),
        sa.Column('reason', sa.String(400), nullable=True),
        sa.Column('last_heartbeat', sa.Float(), nullable=False),
        sa.Column('registered_at', sa.Float(), nullable=False),
        sa.Column('running', sa.Text(), nullable=False, server_default='{}'),
    )
    op.create_table(
        'node_commands',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('node', sa.String(128), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('payload', sa.Text(), nullable=False),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('result', sa.Text(), nullable=True),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('done_at', sa.Float(), nullable=True),
    )
    op.create_index('ix_node_commands_node', 'node_commands', ['node'])
    op.create_index('ix_node_commands_job_id', 'node_commands', ['job_id'])
    op.create_index('ix_node_commands_state', 'node_commands', ['state'])
    op.create_table(
        'node_exits',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('node', sa.String(128), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('ref', sa.String(128), nullable=False),
        sa.Column('exit_code', sa.Integer(), nullable=True),
        sa.Column('oom_killed', sa.Boolean(), nullable=False),
        sa.Column('finished_at', sa.Float(), nullable=True),
        sa.Column('cpu_s', sa.Float(), nullable=True),
        sa.Column('max_rss_bytes', sa.BigInteger(), nullable=True),
        sa.Column('error', sa.String(400), nullable=False),
        sa.Column('reported_at', sa.Float(), nullable=False),
    )
    op.create_index('uq_node_exits_job_ref', 'node_exits', ['job_id', 'ref'], unique=True)
    op.create_table(
        'node_samples',
        sa.Column('job_id', sa.Integer(), primary_key=True),
        sa.Column('ref', sa.String(128), nullable=False),
        sa.Column('cpu_s', sa.Float(), nullable=False),
        sa.Column('mem_bytes', sa.BigInteger(), nullable=False),
        sa.Column('max_rss_bytes', sa.BigInteger(), nullable=True),
        sa.Column('at', sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('node_samples')
    op.drop_index('uq_node_exits_job_ref', table_name='node_exits')
    op.drop_table('node_exits')
    op.drop_index('ix_node_commands_state', table_name='node_commands')
    op.drop_index('ix_node_commands_job_id', table_name='node_commands')
    op.drop_index('ix_node_commands_node', table_name='node_commands')
    op.drop_table('node_commands')
    op.drop_table('nodes')
