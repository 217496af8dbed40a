"""operations.media_mode and media_relay_down: whether calls are anchored on the media relay, and what a call does
when no relay answers at its start (docs/design.md, "Media")

Revision ID: 0008
Revises: 0006 (0007 was never used)
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('operations') as batch:
        batch.add_column(sa.Column('media_mode', sa.String(16), server_default='anchored', nullable=False))
        batch.add_column(sa.Column('media_relay_down', sa.String(16), server_default='direct', nullable=False))
        batch.create_check_constraint(op.f('ck_operations_media_mode'), "media_mode IN ('anchored', 'direct')")
        batch.create_check_constraint(op.f('ck_operations_media_relay_down'),
                                      "media_relay_down IN ('direct', 'refuse')")


def downgrade() -> None:
    with op.batch_alter_table('operations') as batch:
        batch.drop_constraint(op.f('ck_operations_media_relay_down'), type_='check')
        batch.drop_constraint(op.f('ck_operations_media_mode'), type_='check')
        batch.drop_column('media_relay_down')
        batch.drop_column('media_mode')
