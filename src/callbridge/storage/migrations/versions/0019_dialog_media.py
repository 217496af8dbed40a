"""dialogs: media_relay, sent_sdp, remote_sdp: what a node taking a call over needs of its media (docs/cluster.md,
"Media in the cluster"). media_relay names the rtpengine relay (host:port) of an anchored call's relay call (whose
ng call-id is the conn_id and whose tag for the leg is its leg_id), NULL for direct media; sent_sdp and remote_sdp
are the last SDP callbridge sent the leg's party and the last one that party sent (hold, resume and transfers on
the adopting node start from them).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dialogs') as batch:
        batch.add_column(sa.Column('media_relay', sa.String(64), nullable=True))
        batch.add_column(sa.Column('sent_sdp', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('remote_sdp', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('dialogs') as batch:
        batch.drop_column('remote_sdp')
        batch.drop_column('sent_sdp')
        batch.drop_column('media_relay')
