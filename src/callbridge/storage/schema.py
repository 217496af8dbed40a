"""The database schema, in SQLAlchemy Core: one `metadata`, the same on SQLite and PostgreSQL.

Rules
- The migrations in `migrations/versions/` build exactly this schema; a test compares them (Alembic's
  autogenerate finds no difference). Change both together: a new revision, never an edited old one.
- Natural keys where the domain has them: an operation is its Wolkvox `wolkvox_server` code ("0042"); an agent is
  (operation, extension); a queue, trunk or auxiliary state is (operation, name/code); a call is its `conn_id`.
- Secrets are never stored in the clear where a hash serves: agents keep HA1 digests (RFC 7616 §3.4.2, MD5 and
  SHA-256, in the operation's realm), tokens keep the SHA-256 of the token. Trunk credentials toward a provider are
  the exception: answering the provider's challenge in a realm known only at challenge time needs the password.
- Times are UTC instants (`UtcDateTime`): timezone-aware in Python, `timestamptz` on PostgreSQL, UTC text on SQLite.
- Clustering stays possible: every row about live state (registrations, calls, legs, dialogs, transfers) names
  the `node_id` that owns it, so a node reconciles only what it owned and a request can be forwarded to the owner.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC. Naive datetimes are refused: a time without a zone is a bug."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: callbridge stores aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> Any:
    return text("CURRENT_TIMESTAMP")


def _agent_fk(*, ondelete: str = "CASCADE") -> ForeignKeyConstraint:
    return ForeignKeyConstraint(["operation_id", "extension"], ["agents.operation_id", "agents.extension"],
                                ondelete=ondelete)


def _operation_fk() -> ForeignKeyConstraint:
    return ForeignKeyConstraint(["operation_id"], ["operations.id"], ondelete="CASCADE")


# --- the directory: what administrators create -----------------------------------------------------------------

operations = Table(
    "operations", metadata,
    Column("id", String(32), primary_key=True),  # the Wolkvox `wolkvox_server`, e.g. "0042"
    Column("name", String(200), nullable=False),
    Column("domain", String(255), nullable=False, unique=True),  # SIP domain, also the digest realm
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("acw_seconds", Integer, nullable=False, server_default="0"),  # after-call work; 0 = straight to ready
    Column("after_transfer", String(16), nullable=False, server_default="acw"),  # agent state after a transfer
    Column("max_transfers", Integer, nullable=False, server_default="5"),
    Column("transfer_timeout_seconds", Integer, nullable=False, server_default="30"),
    Column("default_queue", String(64)),
    Column("outbound_trunk", String(64)),
    Column("settings", JSON, nullable=False, server_default=text("'{}'")),
    Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    CheckConstraint("after_transfer IN ('acw', 'ready')", name="after_transfer"),
)

queues = Table(
    "queues", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("ring_timeout_seconds", Integer, nullable=False, server_default="20"),
    Column("max_wait_seconds", Integer, nullable=False, server_default="60"),
    Column("retry_after_seconds", Integer, nullable=False, server_default="60"),
    _operation_fk(),
)

agents = Table(
    "agents", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("extension", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("ha1_md5", String(32), nullable=False),  # MD5(extension:realm:password)
    Column("ha1_sha256", String(64), nullable=False),  # SHA-256(extension:realm:password)
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    _operation_fk(),
)

agent_queues = Table(
    "agent_queues", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("extension", String(32), primary_key=True),
    Column("queue", String(64), primary_key=True),
    _agent_fk(),
    ForeignKeyConstraint(["operation_id", "queue"], ["queues.operation_id", "queues.name"], ondelete="CASCADE"),
)

aux_states = Table(
    "aux_states", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("code", String(32), primary_key=True),  # what `change_status` names, e.g. "3"
    Column("name", String(200), nullable=False),
    _operation_fk(),
)

activity_codes = Table(
    "activity_codes", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("code_group", Integer, primary_key=True),  # 1 = cod_act, 2 = cod_act_2
    Column("code", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    CheckConstraint("code_group IN (1, 2)", name="code_group"),
    _operation_fk(),
)

tokens = Table(
    "tokens", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("operation_id", String(32), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("label", String(200), nullable=False, server_default=""),
    Column("concurrency_limit", Integer, nullable=False, server_default="2"),
    Column("daily_quota", Integer),  # None = no quota
    Column("revoked", Boolean, nullable=False, server_default=false()),
    Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    Column("revoked_at", UtcDateTime),
    CheckConstraint("concurrency_limit >= 1", name="concurrency_limit"),
    _operation_fk(),
)

trunks = Table(
    "trunks", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("name", String(64), primary_key=True),
    # outbound: where calls go, and how numbers are rewritten first
    Column("gateway_host", String(255), nullable=False),  # an IP literal; names are never resolved
    Column("gateway_port", Integer, nullable=False, server_default="5060"),
    Column("transport", String(8), nullable=False, server_default="udp"),
    Column("dial_patterns", JSON, nullable=False, server_default=text("'[]'")),  # regexes; [] = nothing allowed
    Column("dial_strip", Integer, nullable=False, server_default="0"),  # leading digits removed
    Column("dial_prefix", String(32), nullable=False, server_default=""),  # then prepended
    Column("caller_id_policy", String(16), nullable=False, server_default="customer"),
    Column("caller_id", String(64)),  # the number sent when the policy is "fixed"
    # registration to the provider and answers to its 401/407 challenges
    Column("register", Boolean, nullable=False, server_default=false()),
    Column("auth_username", String(128)),
    Column("auth_password", String(256)),
    Column("register_expires", Integer, nullable=False, server_default="3600"),
    # inbound: the provider's source networks
    Column("inbound_networks", JSON, nullable=False, server_default=text("'[]'")),
    CheckConstraint("caller_id_policy IN ('customer', 'agent', 'fixed')", name="caller_id_policy"),
    CheckConstraint("transport IN ('udp', 'tcp')", name="transport"),
    _operation_fk(),
)

dids = Table(
    "dids", metadata,
    Column("number", String(32), primary_key=True),  # a DID reaches exactly one operation
    Column("operation_id", String(32), nullable=False),
    Column("trunk", String(64)),
    Column("queue", String(64), nullable=False),
    _operation_fk(),
    ForeignKeyConstraint(["operation_id", "trunk"], ["trunks.operation_id", "trunks.name"], ondelete="CASCADE"),
    ForeignKeyConstraint(["operation_id", "queue"], ["queues.operation_id", "queues.name"], ondelete="CASCADE"),
)

# --- written through at run time ----------------------------------------------------------------------------

agent_state_history = Table(
    "agent_state_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("operation_id", String(32), nullable=False),
    Column("extension", String(32), nullable=False),
    Column("state", String(32), nullable=False),  # logout, ready, ringing, on_call, acw, or aux:<code>
    Column("previous_state", String(32)),
    Column("reason", String(200)),
    Column("entered_at", UtcDateTime, nullable=False),
    Column("node_id", String(64), nullable=False),
    _agent_fk(),
    Index(None, "operation_id", "extension", "entered_at"),
)

registrations = Table(
    "registrations", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("extension", String(32), primary_key=True),
    Column("contact_uri", String(1024), primary_key=True),  # a binding is (address of record, contact URI)
    Column("source_host", String(64), nullable=False),  # where the REGISTER came from (NAT: send there)
    Column("source_port", Integer, nullable=False),
    Column("transport", String(8), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("call_id", String(255), nullable=False),
    Column("cseq", Integer, nullable=False),
    Column("user_agent", String(255)),
    Column("node_id", String(64), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    _agent_fk(),
    Index(None, "expires_at"),
)

calls = Table(
    "calls", metadata,
    Column("conn_id", String(64), primary_key=True),
    Column("operation_id", String(32), nullable=False),
    Column("direction", String(16), nullable=False),  # inbound, outbound, internal
    Column("state", String(16), nullable=False),  # the domain's call state; "ended" once closed
    Column("customer_number", String(64)),
    Column("extension", String(32)),  # the agent holding the call, if any
    Column("queue", String(64)),
    Column("did", String(32)),
    Column("transfer_count", Integer, nullable=False, server_default="0"),
    Column("started_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime),
    Column("ended_at", UtcDateTime),
    Column("node_id", String(64), nullable=False),  # the node holding the call's dialogs
    _operation_fk(),
    Index(None, "node_id", "ended_at"),
)

legs = Table(
    "legs", metadata,
    Column("leg_id", String(64), primary_key=True),
    Column("conn_id", String(64), nullable=False),
    Column("role", String(16), nullable=False),  # customer, agent, target, consult
    Column("direction", String(16), nullable=False),  # inbound (they called us) or outbound (we called them)
    Column("party", String(255), nullable=False),  # number or extension at the far end
    Column("extension", String(32)),  # set when the far end is an agent
    Column("state", String(16), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime),
    Column("ended_at", UtcDateTime),
    Column("sip_cause", Integer),
    Column("node_id", String(64), nullable=False),
    ForeignKeyConstraint(["conn_id"], ["calls.conn_id"], ondelete="CASCADE"),
    Index(None, "conn_id"),
)

cdrs = Table(
    "cdrs", metadata,
    Column("conn_id", String(64), primary_key=True),
    Column("operation_id", String(32), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("caller", String(255), nullable=False),
    Column("callee", String(255), nullable=False),
    Column("extension", String(32)),  # the agent who handled it last
    Column("queue", String(64)),
    Column("did", String(32)),
    Column("started_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime),
    Column("ended_at", UtcDateTime, nullable=False),
    Column("hangup_by", String(16), nullable=False),  # customer, agent, system
    Column("sip_cause", Integer),
    Column("reason", String(200)),
    Column("legs", JSON, nullable=False),  # every leg of the call: ids, roles, parties, times, causes
    Column("node_id", String(64), nullable=False),
    ForeignKeyConstraint(["conn_id"], ["calls.conn_id"], ondelete="CASCADE"),
    Index(None, "operation_id", "started_at"),
)

transfers = Table(
    "transfers", metadata,
    Column("id", String(64), primary_key=True),
    Column("conn_id", String(64), nullable=False),
    Column("operation_id", String(32), nullable=False),
    Column("extension", String(32), nullable=False),  # the transferring agent
    Column("kind", String(16), nullable=False),  # blind, attended
    Column("target", String(255), nullable=False),
    Column("state", String(32), nullable=False),
    Column("outcome", String(32)),  # completed, failed, cancelled; None while running
    Column("sip_cause", Integer),
    Column("requested_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime),
    Column("node_id", String(64), nullable=False),
    ForeignKeyConstraint(["conn_id"], ["calls.conn_id"], ondelete="CASCADE"),
    Index(None, "conn_id"),
)

dispositions = Table(
    "dispositions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("operation_id", String(32), nullable=False),
    Column("extension", String(32), nullable=False),
    Column("conn_id", String(64)),  # the call typed; None if the agent had none
    Column("cod_act", String(32), nullable=False),
    Column("cod_act_2", String(32)),
    Column("comments", Text),
    Column("typed_at", UtcDateTime, nullable=False),
    _agent_fk(),
    Index(None, "conn_id"),
)

recalls = Table(
    "recalls", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("operation_id", String(32), nullable=False),
    Column("extension", String(32), nullable=False),
    Column("customer_phone", String(64), nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    Column("recall_type", String(16), nullable=False),  # auto, manual
    Column("conn_id", String(64)),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("recall_type IN ('auto', 'manual')", name="recall_type"),
    _agent_fk(),
    Index(None, "due_at"),
)

dialogs = Table(
    "dialogs", metadata,
    # One row per live SIP dialog (RFC 3261 §12): enough to send its BYE after a crash.
    Column("leg_id", String(64), primary_key=True),
    Column("conn_id", String(64), nullable=False),
    Column("call_id", String(255), nullable=False),
    Column("local_tag", String(128), nullable=False),
    Column("remote_tag", String(128), nullable=False),
    Column("local_uri", String(1024), nullable=False),
    Column("remote_uri", String(1024), nullable=False),
    Column("local_cseq", Integer, nullable=False),
    Column("remote_cseq", Integer),
    Column("remote_target", String(1024), nullable=False),
    Column("route_set", JSON, nullable=False),  # list of Route header values, in order
    Column("peer_host", String(64), nullable=False),  # where the dialog's requests are sent (NAT-aware)
    Column("peer_port", Integer, nullable=False),
    Column("transport", String(8), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("call_id", "local_tag"),
    Index(None, "node_id"),
)
