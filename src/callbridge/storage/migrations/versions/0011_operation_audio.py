"""operations: hold_music (converted WAV, NULL for the built-in music), hold_music_name, transfer_audio (ringback |
music while a transfer target rings) and ringback_tone (etsi | us): what the customer hears (docs/operations.md)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('operations') as batch:
        batch.add_column(sa.Column('hold_music', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('hold_music_name', sa.String(255), server_default='', nullable=False))
        batch.add_column(sa.Column('transfer_audio', sa.String(16), server_default='ringback', nullable=False))
        batch.add_column(sa.Column('ringback_tone', sa.String(16), server_default='etsi', nullable=False))
        batch.create_check_constraint(op.f('ck_operations_transfer_audio'), "transfer_audio IN ('ringback', 'music')")
        batch.create_check_constraint(op.f('ck_operations_ringback_tone'), "ringback_tone IN ('etsi', 'us')")


def downgrade() -> None:
    with op.batch_alter_table('operations') as batch:
        batch.drop_constraint(op.f('ck_operations_ringback_tone'), type_='check')
        batch.drop_constraint(op.f('ck_operations_transfer_audio'), type_='check')
        batch.drop_column('ringback_tone')
        batch.drop_column('transfer_audio')
        batch.drop_column('hold_music_name')
        batch.drop_column('hold_music')
