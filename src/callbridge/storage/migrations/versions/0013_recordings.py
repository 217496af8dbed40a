"""recordings: one row per recorded call (conn_id), the two-channel WAV made when it ended, its segments and pauses
— issue #13, recordings that follow the call (docs/operations.md, "Recordings")

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('recordings',
    sa.Column('conn_id', sa.String(length=64), nullable=False),
    sa.Column('operation_id', sa.String(length=32), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration', sa.Float(), nullable=False),
    sa.Column('segments', sa.JSON(), nullable=False),
    sa.Column('pauses', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['operation_id'], ['operations.id'],
                            name=op.f('fk_recordings_operation_id_operations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('conn_id', name=op.f('pk_recordings'))
    )
    with op.batch_alter_table('recordings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recordings_operation_id_started_at'), ['operation_id', 'started_at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_recordings_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('recordings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recordings_created_at'))
        batch_op.drop_index(batch_op.f('ix_recordings_operation_id_started_at'))
    op.drop_table('recordings')
