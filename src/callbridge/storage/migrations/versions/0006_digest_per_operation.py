"""operations.digest_algorithms: the digest algorithms offered to an operation's phones ("" = the node's);
ix_calls_operation_id_started_at: the history's listing of one operation's calls by time

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('operations') as batch:
        batch.add_column(sa.Column('digest_algorithms', sa.String(length=32), server_default='', nullable=False))
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_calls_operation_id_started_at'), ['operation_id', 'started_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_calls_operation_id_started_at'))
    with op.batch_alter_table('operations') as batch:
        batch.drop_column('digest_algorithms')
