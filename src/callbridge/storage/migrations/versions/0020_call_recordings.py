"""call_recordings: a recorded call's recording while the call lasts (start, pauses, whether the relay records
now, the customer's port), so that a crash of the node, or the node taking the operation over, still finishes it
into its WAV (docs/operations.md, "Recordings"). On PostgreSQL the cluster's fencing trigger guards it, as it does
the other live-state tables (0010).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('call_recordings',
    sa.Column('conn_id', sa.String(length=64), nullable=False),
    sa.Column('operation_id', sa.String(length=32), nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('on_relay', sa.Boolean(), nullable=False),
    sa.Column('off_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('pauses', sa.JSON(), nullable=False),
    sa.Column('customer_port', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('conn_id', name=op.f('pk_call_recordings'))
    )
    with op.batch_alter_table('call_recordings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_call_recordings_node_id'), ['node_id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("CREATE TRIGGER callbridge_fence AFTER INSERT OR UPDATE OR DELETE ON call_recordings "
                   "FOR EACH ROW EXECUTE FUNCTION callbridge_fence('op')")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS callbridge_fence ON call_recordings")
    with op.batch_alter_table('call_recordings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_call_recordings_node_id'))
    op.drop_table('call_recordings')
