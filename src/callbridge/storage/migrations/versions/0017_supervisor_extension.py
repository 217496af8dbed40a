"""supervisors: extension (digits, "" for none): the phone the supervisor's board rings to listen to a call unless
the supervisor types another (docs/operations.md, "The supervisor's board")

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('supervisors') as batch:
        batch.add_column(sa.Column('extension', sa.String(32), server_default='', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('supervisors') as batch:
        batch.drop_column('extension')
