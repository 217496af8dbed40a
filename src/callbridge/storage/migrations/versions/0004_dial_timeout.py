"""operations.dial_timeout: how long a dialled customer rings (dial, aux_call, auto recalls), per operation

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('operations') as batch:
        batch.add_column(sa.Column('dial_timeout', sa.Float(), server_default='45', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('operations') as batch:
        batch.drop_column('dial_timeout')
