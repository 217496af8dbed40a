"""queues: music (converted WAV, NULL: the operation's hold music), music_name, announcement (converted WAV, NULL:
none), announcement_name and announcement_interval (seconds): what a customer waiting in the queue hears
(docs/operations.md, "Audio: what each party hears")

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('queues') as batch:
        batch.add_column(sa.Column('music', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('music_name', sa.String(255), server_default='', nullable=False))
        batch.add_column(sa.Column('announcement', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('announcement_name', sa.String(255), server_default='', nullable=False))
        batch.add_column(sa.Column('announcement_interval', sa.Float(), server_default='30', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('queues') as batch:
        batch.drop_column('announcement_interval')
        batch.drop_column('announcement_name')
        batch.drop_column('announcement')
        batch.drop_column('music_name')
        batch.drop_column('music')
