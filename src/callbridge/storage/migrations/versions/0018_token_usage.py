"""token_usage: a token's requests of the day counted toward its daily quota by a cluster's nodes, so that every
node sees one count and neither a failover nor a restart resets it (docs/cluster.md, "Any node answers the API")

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('token_usage',
    sa.Column('token_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['tokens.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_id')
    )


def downgrade() -> None:
    op.drop_table('token_usage')
