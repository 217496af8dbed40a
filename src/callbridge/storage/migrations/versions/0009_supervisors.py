"""supervisors: the supervisor's board accounts, one operation each, password as a salted scrypt hash

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('supervisors',
    sa.Column('operation_id', sa.String(length=32), nullable=False),
    sa.Column('username', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), server_default='', nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.ForeignKeyConstraint(['operation_id'], ['operations.id'], name=op.f('fk_supervisors_operation_id_operations'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('operation_id', 'username', name=op.f('pk_supervisors'))
    )


def downgrade() -> None:
    op.drop_table('supervisors')
