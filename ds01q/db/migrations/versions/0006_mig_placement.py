"""MIG placements in the inventory: each slice's GPU instance id and placement (start and size in
memory slices, as nvmlGpuInstanceGetInfo reports them or the static inventory declares them).
NULL for whole GPUs and where the placement is unknown (NVML without privileges).

Revision ID: 0006_mig_placement
Revises: 0005e_multi
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = '0006_mig_placement'
down_revision = '0005e_multi'
branch_labels = None
depends_on = None

COLUMNS = ('placement_start', 'placement_size', 'gi_id')


def upgrade() -> None:
    with op.batch_alter_table('slices', schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('slices', schema=None) as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
