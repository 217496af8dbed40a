"""cluster: nodes, operation leases with fencing epochs, and (PostgreSQL) the fencing trigger on live-state tables

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

The trigger is the database's half of fencing (docs/cluster.md, "Fencing"): a transaction that declares itself a
cluster node's (`callbridge.node` and `callbridge.fence`, set by `callbridge.cluster.fencing` at the start of each
writer batch) may write a row of an operation only while that node holds the operation's lease at the epoch it
declares and the lease has not expired by PostgreSQL's clock. The lease row is read FOR SHARE, so a takeover
(an UPDATE of that row) waits for the writing transaction to end, and a write after the takeover sees the new
epoch: no write of a stale owner can land after a new owner got the lease. Transactions that declare nothing
(a single node, `callbridge admin`, start-up reconciliation) are not fenced. SQLite has no cluster: no trigger.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

# Tables whose rows are an operation's live state or records, written by the node owning the operation. The
# second element is how a row names its operation: a column, or the call its conn_id belongs to.
FENCED = (
    ('calls', 'NEW.operation_id'), ('cdrs', 'NEW.operation_id'), ('transfers', 'NEW.operation_id'),
    ('dispositions', 'NEW.operation_id'), ('recalls', 'NEW.operation_id'), ('registrations', 'NEW.operation_id'),
    ('agent_state_history', 'NEW.operation_id'), ('agent_display', 'NEW.operation_id'),
    ('events', 'NEW.operation_id'), ('legs', 'conn'), ('dialogs', 'conn'),
)

FUNCTION = """
CREATE OR REPLACE FUNCTION callbridge_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
DECLARE
    fence text := current_setting('callbridge.fence', true);
    me text := current_setting('callbridge.node', true);
    rec record;
    op_id text;
    held bigint;
    lease record;
BEGIN
    IF fence IS NULL OR fence = '' THEN
        RETURN NULL;  -- not a cluster node's transaction: not fenced
    END IF;
    IF TG_OP = 'DELETE' THEN rec := OLD; ELSE rec := NEW; END IF;
    IF TG_ARGV[0] = 'conn' THEN
        SELECT c.operation_id INTO op_id FROM calls c WHERE c.conn_id = rec.conn_id;
        IF op_id IS NULL THEN
            RETURN NULL;  -- a leg or dialog of no recorded call names no operation
        END IF;
    ELSE
        op_id := rec.operation_id;
    END IF;
    held := (fence::jsonb ->> op_id)::bigint;
    SELECT l.node_id, l.epoch, l.expires_at > now() AS live INTO lease
        FROM cluster_leases l WHERE l.operation_id = op_id FOR SHARE;
    IF held IS NULL OR lease.epoch IS NULL OR lease.node_id IS DISTINCT FROM me OR lease.epoch <> held
       OR NOT lease.live THEN
        RAISE EXCEPTION 'callbridge fence: node % holds no live lease of operation % at epoch % (lease: %, %)',
            me, op_id, held, lease.node_id, lease.epoch
            USING ERRCODE = 'CBF01';
    END IF;
    RETURN NULL;
END
$fence$
"""


def upgrade() -> None:
    op.create_table('cluster_nodes',
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=False),
    sa.Column('sip_host', sa.String(length=64), nullable=False),
    sa.Column('sip_port', sa.Integer(), nullable=False),
    sa.Column('http_url', sa.String(length=255), server_default='', nullable=False),
    sa.Column('incarnation', sa.String(length=32), nullable=False),
    sa.Column('draining', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('node_id', name=op.f('pk_cluster_nodes')),
    sa.UniqueConstraint('slot', name=op.f('uq_cluster_nodes_slot'))
    )
    op.create_table('cluster_leases',
    sa.Column('operation_id', sa.String(length=32), nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=True),
    sa.Column('epoch', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('move_to', sa.String(length=64), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['operation_id'], ['operations.id'], name=op.f('fk_cluster_leases_operation_id_operations'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('operation_id', name=op.f('pk_cluster_leases'))
    )
    with op.batch_alter_table('cluster_leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cluster_leases_node_id'), ['node_id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(FUNCTION)
        for table, source in FENCED:
            op.execute(f"CREATE TRIGGER callbridge_fence AFTER INSERT OR UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION callbridge_fence('{'conn' if source == 'conn' else 'op'}')")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for table, _ in FENCED:
            op.execute(f"DROP TRIGGER IF EXISTS callbridge_fence ON {table}")
        op.execute("DROP FUNCTION IF EXISTS callbridge_fence()")
    with op.batch_alter_table('cluster_leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cluster_leases_node_id'))
    op.drop_table('cluster_leases')
    op.drop_table('cluster_nodes')
