"""operations: recording (always | never | on_demand) and recording_retention_days (NULL: kept forever); queues:
recording (NULL: the operation's) — issue #13, recordings that follow the call (docs/operations.md)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

_POLICIES = "recording IN ('always', 'never', 'on_demand')"


def upgrade() -> None:
    with op.batch_alter_table('operations') as batch:
        batch.add_column(sa.Column('recording', sa.String(16), server_default='never', nullable=False))
        batch.add_column(sa.Column('recording_retention_days', sa.Integer(), nullable=True))
        batch.create_check_constraint(op.f('ck_operations_recording'), _POLICIES)
    with op.batch_alter_table('queues') as batch:
        batch.add_column(sa.Column('recording', sa.String(16), nullable=True))
        batch.create_check_constraint(op.f('ck_queues_queue_recording'), _POLICIES)


def downgrade() -> None:
    with op.batch_alter_table('queues') as batch:
        batch.drop_constraint(op.f('ck_queues_queue_recording'), type_='check')
        batch.drop_column('recording')
    with op.batch_alter_table('operations') as batch:
        batch.drop_constraint(op.f('ck_operations_recording'), type_='check')
        batch.drop_column('recording_retention_days')
        batch.drop_column('recording')
