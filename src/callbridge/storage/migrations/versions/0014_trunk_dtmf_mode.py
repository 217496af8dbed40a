"""trunks: dtmf_mode (rfc4733 | info), how api=dtmf reaches the customers of a trunk — issue #13, DTMF in the
media (docs/operations.md, "DTMF")

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('trunks') as batch:
        batch.add_column(sa.Column('dtmf_mode', sa.String(8), server_default='rfc4733', nullable=False))
        batch.create_check_constraint(op.f('ck_trunks_dtmf_mode'), "dtmf_mode IN ('rfc4733', 'info')")


def downgrade() -> None:
    with op.batch_alter_table('trunks') as batch:
        batch.drop_constraint(op.f('ck_trunks_dtmf_mode'), type_='check')
        batch.drop_column('dtmf_mode')
