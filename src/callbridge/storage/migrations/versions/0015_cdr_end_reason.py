"""cdrs: end_reason (NULL, or "media_timeout": the relay received no RTP from a party for the node's media
timeout) — issue #13, dead media ends calls (docs/operations.md, "Dead media")

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cdrs') as batch:
        batch.add_column(sa.Column('end_reason', sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cdrs') as batch:
        batch.drop_column('end_reason')
