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
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
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


# SQLAlchemy's SQLite DATETIME text (its default `storage_format`), which `sqlite_utc_text` writes too.
SQLITE_DATETIME_FORMAT = ("%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d")


def sqlite_utc_text(value: datetime | None) -> str | None:
    """What SQLAlchemy binds for a `UtcDateTime` on SQLite with the default DATETIME format (`process_bind_param`,
    then DATETIME's `%`-format), in one C call: `isoformat` writes the same digits. The storage writer binds its
    rows' times with it (`rowwrites`): a call writes some thirty of them, on the writer thread, holding the GIL the
    event loop needs."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: callbridge stores aware UTC times only")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without the "+00:00"


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
    Column("sip_domain", String(255), nullable=False, unique=True),
    Column("realm", String(255), nullable=False, server_default=""),  # digest realm; "" = the SIP domain
    Column("name", String(200), nullable=False, server_default=""),
    Column("time_zone", String(64), nullable=False, server_default="UTC"),
    Column("acw_seconds", Float, nullable=False, server_default="0"),  # after-call work; 0 = straight to ready
    Column("after_transfer_state", String(16), nullable=False, server_default="acw"),
    Column("default_queue", String(64)),
    Column("ring_timeout", Float, nullable=False, server_default="20"),
    Column("transfer_timeout", Float, nullable=False, server_default="30"),
    Column("dial_timeout", Float, nullable=False, server_default="45"),  # dial/aux_call/recall: customer rings
    Column("max_transfers", Integer, nullable=False, server_default="5"),
    Column("recent_call_window", Float, nullable=False, server_default="600"),
    Column("action_timeout", Float, nullable=False, server_default="5"),
    Column("token_concurrency_limit", Integer, nullable=False, server_default="2"),
    Column("daily_quota", Integer),  # default for new tokens; None = no quota
    # digest algorithms offered to the operation's phones, comma-separated, SHA-256 first; "" = the node's setting
    Column("digest_algorithms", String(32), nullable=False, server_default=""),
    Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    # docs/design.md, "Media": through the relay or between the parties, and what to do when no relay answers
    Column("media_mode", String(16), nullable=False, server_default="anchored"),
    Column("media_relay_down", String(16), nullable=False, server_default="direct"),
    # docs/operations.md, "Audio": hold music as converted WAV (NULL: built-in), what a ringing transfer plays
    Column("hold_music", LargeBinary),
    Column("hold_music_name", String(255), nullable=False, server_default=""),
    Column("transfer_audio", String(16), nullable=False, server_default="ringback"),
    Column("ringback_tone", String(16), nullable=False, server_default="etsi"),
    # docs/operations.md, "Recordings": the policy (a queue may override it) and days kept (NULL: forever)
    Column("recording", String(16), nullable=False, server_default="never"),
    Column("recording_retention_days", Integer),
    CheckConstraint("after_transfer_state IN ('acw', 'ready')", name="after_transfer_state"),
    CheckConstraint("media_mode IN ('anchored', 'direct')", name="media_mode"),
    CheckConstraint("media_relay_down IN ('direct', 'refuse')", name="media_relay_down"),
    CheckConstraint("transfer_audio IN ('ringback', 'music')", name="transfer_audio"),
    CheckConstraint("ringback_tone IN ('etsi', 'us')", name="ringback_tone"),
    CheckConstraint("recording IN ('always', 'never', 'on_demand')", name="recording"),
)

queues = Table(
    "queues", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("max_wait_seconds", Float, nullable=False, server_default="60"),
    Column("ring_timeout", Float),  # None = the operation's
    Column("retry_after", Integer, nullable=False, server_default="60"),
    Column("recording", String(16)),  # None = the operation's
    Column("music", LargeBinary),  # converted WAV; None = the operation's hold music
    Column("music_name", String(255), nullable=False, server_default=""),
    Column("announcement", LargeBinary),  # converted WAV; None = no announcement
    Column("announcement_name", String(255), nullable=False, server_default=""),
    Column("announcement_interval", Float, nullable=False, server_default="30"),
    CheckConstraint("recording IN ('always', 'never', 'on_demand')", name="queue_recording"),
    _operation_fk(),
)

agents = Table(
    "agents", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("extension", String(32), primary_key=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("ha1_md5", String(32), nullable=False),  # MD5(extension:realm:password)
    Column("ha1_sha256", String(64), nullable=False),  # SHA-256(extension:realm:password)
    Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    _operation_fk(),
)

# A supervisor of one operation signs in to the board (`/supervisor`) with a username and a password kept as a
# salted scrypt hash (RFC 7914): unlike an agent's, no digest needs it, so nothing weaker than a slow hash is kept.
supervisors = Table(
    "supervisors", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("username", String(32), primary_key=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("password_hash", String(200), nullable=False),  # scrypt$n$r$p$salt-hex$hash-hex
    # the phone the board's Listen rings unless the supervisor types another ("": none), an agent's extension
    Column("extension", String(32), nullable=False, server_default=""),
    Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    _operation_fk(),
)

agent_queues = Table(
    "agent_queues", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("extension", String(32), primary_key=True),
    Column("queue", String(64), primary_key=True),
    Column("position", Integer, nullable=False, server_default="0"),  # keeps the agent's queue order
    _agent_fk(),
    ForeignKeyConstraint(["operation_id", "queue"], ["queues.operation_id", "queues.name"], ondelete="CASCADE"),
)

aux_states = Table(
    "aux_states", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("id", String(32), primary_key=True),  # what `change_status` names, e.g. "2"
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

# A token's requests counted toward its daily quota, where it has one, by a cluster's nodes (storage/token_usage.py):
# one row per token, the day (the operation's) and the count of that day; a later day starts the count again.
token_usage = Table(
    "token_usage", metadata,
    Column("token_id", Integer, primary_key=True, autoincrement=False),
    Column("day", Date, nullable=False),
    Column("used", Integer, nullable=False),
    ForeignKeyConstraint(["token_id"], ["tokens.id"], ondelete="CASCADE"),
)

# Bumped in the transaction of every administrative write (`administration`); a running node polls it and reloads
# its in-memory directory only when it moved (`directory.Directory.refresh`). One row, id 1, made by migration 0002.
directory_version = Table(
    "directory_version", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False, server_default="0"),
    CheckConstraint("id = 1", name="single_row"),
)

trunks = Table(
    "trunks", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("name", String(64), primary_key=True),
    # outbound: where calls go, and how numbers are rewritten first (the domain's DialPlan)
    Column("host", String(255), nullable=False),  # an IP literal; names are never resolved
    Column("port", Integer, nullable=False, server_default="5060"),
    Column("transport", String(8), nullable=False, server_default="udp"),
    Column("dial_patterns", JSON, nullable=False),  # full-match regexes; [] = any number
    Column("dial_strip", Integer, nullable=False, server_default="0"),
    Column("dial_prefix", String(32), nullable=False, server_default=""),
    Column("dial_min_length", Integer, nullable=False, server_default="3"),
    Column("dial_max_length", Integer, nullable=False, server_default="20"),
    Column("caller_id_policy", String(16), nullable=False, server_default="customer"),
    Column("caller_id_number", String(64), nullable=False, server_default=""),
    # registration to the provider and answers to its 401/407 challenges
    Column("register", Boolean, nullable=False, server_default=false()),
    Column("auth_username", String(128)),
    Column("auth_password", String(256)),
    Column("auth_realm", String(255)),  # None = whatever realm the provider challenges with
    # inbound: the provider's source networks
    Column("inbound_networks", JSON, nullable=False),
    # api=dtmf toward its customers: RFC 4733 in the media (anchored calls) or SIP INFO
    Column("dtmf_mode", String(8), nullable=False, server_default="rfc4733"),
    CheckConstraint("caller_id_policy IN ('customer', 'agent', 'fixed')", name="caller_id_policy"),
    CheckConstraint("dtmf_mode IN ('rfc4733', 'info')", name="dtmf_mode"),
    CheckConstraint("transport IN ('udp', 'tcp')", name="transport"),
    _operation_fk(),
)

# Where an operation's events are POSTed, signed with `secret` (`callbridge.http.webhooks`). The secret is stored as
# given, unlike agents' passwords and tokens: signing needs the secret itself (as answering a provider needs a
# trunk's password). Loaded with the operation (`[[webhooks]]`) or by `callbridge admin webhook`.
webhooks = Table(
    "webhooks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("operation_id", String(32), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("secret", String(256), nullable=False),
    Column("events", JSON, nullable=False),  # event types sent; [] = every event
    Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    UniqueConstraint("operation_id", "url"),
    _operation_fk(),
)

# The durable event log (`storage.event_log`): every wire event, written in the writer batch of the state change it
# reports. `seq` is per operation and only grows; pruning by age never removes an operation's newest row, so the
# next seq after a restart is always max(seq) + 1. No foreign key: an event outlives nothing it names.
events = Table(
    "events", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(32), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("conn_id", String(64)),
    Column("line", Text, nullable=False),  # the wire JSON object, as streams and webhooks send it
    Index(None, "at"),
)

# Per webhook target: the last seq delivered (or given up); delivery resumes after it (`http.webhooks`). No foreign
# key on purpose: a cursor saved in the writer batch that races the target's removal must not fail that batch (and
# with it the atomicity of the events in it); a cursor whose webhook is gone is never read.
webhook_cursors = Table(
    "webhook_cursors", metadata,
    Column("webhook_id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

dids = Table(
    "dids", metadata,
    Column("operation_id", String(32), primary_key=True),
    Column("number", String(32), primary_key=True),
    Column("queue", String(64), nullable=False),
    Column("trunk", String(64)),  # None = delivered by any trunk of the operation
    ForeignKeyConstraint(["operation_id", "trunk"], ["trunks.operation_id", "trunks.name"], ondelete="CASCADE"),
    ForeignKeyConstraint(["operation_id", "queue"], ["queues.operation_id", "queues.name"], ondelete="CASCADE"),
)

# --- written through at run time ----------------------------------------------------------------------------
# Call records (calls, legs, cdrs, transfers, dispositions) reference calls by conn_id without a foreign key: they
# are written fire-and-forget in the domain's order, and a record must never be lost to that order.

agent_state_history = Table(
    "agent_state_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("operation_id", String(32), nullable=False),
    Column("extension", String(32), nullable=False),
    Column("state", String(40), nullable=False),  # logout, ready, ringing, on_call, acw, or aux:<id>
    Column("previous_state", String(40), nullable=False),
    Column("reason", String(200), nullable=False, server_default=""),
    Column("conn_id", String(64)),
    Column("entered_at", UtcDateTime, nullable=False),
    Column("node_id", String(64), nullable=False),
    _agent_fk(),
    Index(None, "operation_id", "extension", "entered_at"),
)

agent_display = Table(
    "agent_display", metadata,
    # agent_display: the current visibility of each console button of an agent
    Column("operation_id", String(32), primary_key=True),
    Column("extension", String(32), primary_key=True),
    Column("button", String(16), primary_key=True),
    Column("visible", Boolean, nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
    _agent_fk(),
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
    Column("user_agent", String(255), nullable=False, server_default=""),
    Column("node_id", String(64), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    _agent_fk(),
    Index(None, "expires_at"),
)

calls = Table(
    "calls", metadata,
    Column("conn_id", String(64), primary_key=True),
    Column("operation_id", String(32), nullable=False),
    Column("node_id", String(64), nullable=False),  # the node holding the call's dialogs
    Column("direction", String(16), nullable=False),  # inbound, outbound, internal
    Column("customer_number", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # the domain's call state; "ended" once closed
    Column("queue", String(64)),
    Column("extension", String(32)),  # the agent talking with the customer, if any
    Column("started_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime),
    Column("ended_at", UtcDateTime),
    Column("hangup_by", String(16)),  # customer, agent, target, system
    Column("sip_cause", Integer),
    Column("transfer_count", Integer, nullable=False, server_default="0"),
    Column("related_conn_id", String(64)),
    _operation_fk(),
    Index(None, "node_id", "ended_at"),
    Index(None, "operation_id", "started_at"),  # the history's listing: one operation's calls by time (history.py)
)

legs = Table(
    "legs", metadata,
    Column("leg_id", String(64), primary_key=True),
    Column("conn_id", String(64), nullable=False),
    Column("role", String(16), nullable=False),  # customer, agent, target
    Column("party", String(255), nullable=False),  # number or extension at the far end
    Column("state", String(16), nullable=False),  # calling, ringing, up, ended
    Column("extension", String(32)),  # the agent whose state this leg drives, if any
    Column("started_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime),
    Column("ended_at", UtcDateTime),
    Column("sip_status", Integer),
    Column("ended_by", String(16)),
    Index(None, "conn_id"),
)

cdrs = Table(
    "cdrs", metadata,
    Column("conn_id", String(64), primary_key=True),
    Column("operation_id", String(32), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("customer_number", String(64), nullable=False),
    Column("queue", String(64)),
    Column("agents", JSON, nullable=False),  # every agent who answered, in order
    Column("started_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime),
    Column("ended_at", UtcDateTime, nullable=False),
    Column("hangup_by", String(16), nullable=False),
    Column("sip_cause", Integer),
    Column("transfer_count", Integer, nullable=False),
    Column("legs", JSON, nullable=False),  # every leg of the call: ids, roles, parties, times, causes
    Column("related_conn_id", String(64)),
    Column("end_reason", String(32)),  # why callbridge ended the call ("media_timeout"), when it did for a reason
    _operation_fk(),
    Index(None, "operation_id", "started_at"),
)

recordings = Table(
    # one per call (conn_id) that was recorded: the two-channel WAV made when it ended (docs/operations.md,
    # "Recordings"); `segments` and `pauses` are lists of objects, offsets in seconds from the WAV's start
    "recordings", metadata,
    Column("conn_id", String(64), primary_key=True),
    Column("operation_id", String(32), nullable=False),
    Column("path", Text, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),  # the WAV's first sample
    Column("duration", Float, nullable=False),  # seconds
    Column("segments", JSON, nullable=False),
    Column("pauses", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    _operation_fk(),
    Index(None, "operation_id", "started_at"),
    Index(None, "created_at"),
)

# A recorded call's recording while the call lasts (b2bua/recorder.py), written through at each start and stop on
# the relay: what this node after a crash, or the node that takes the call's operation over, needs to finish it into
# its WAV (`storage.open_recordings`). Removed in the batch that writes the call's `recordings` row. `pauses` is a
# list of [start, end] in unix seconds; no foreign key, as for the other records written through.
call_recordings = Table(
    "call_recordings", metadata,
    Column("conn_id", String(64), primary_key=True),
    Column("operation_id", String(32), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),  # the first start the relay took
    Column("on_relay", Boolean, nullable=False),  # the relay records the call now
    Column("off_since", UtcDateTime),  # stopped (paused) at, after a start
    Column("pauses", JSON, nullable=False),
    Column("customer_port", Integer),  # the relay's port facing the customer: the WAV's customer channel
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "node_id"),
)


transfers = Table(
    "transfers", metadata,
    Column("id", String(64), primary_key=True),
    Column("conn_id", String(64), nullable=False),
    Column("operation_id", String(32), nullable=False),
    Column("kind", String(16), nullable=False),  # blind, attended
    Column("extension", String(32), nullable=False),  # the agent who asked for it
    Column("target", String(255), nullable=False),
    Column("target_kind", String(16), nullable=False),  # agent, number
    Column("state", String(16), nullable=False),
    Column("outcome", String(32)),  # None while running
    Column("sip_cause", Integer),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime),
    Column("target_leg_id", String(64)),
    Column("dialled", String(255), nullable=False, server_default=""),
    Column("timeout", Float, nullable=False),
    Column("customer_requeued", Boolean, nullable=False, server_default=false()),
    Column("node_id", String(64), nullable=False),
    _operation_fk(),
    Index(None, "conn_id"),
)

dispositions = Table(
    "dispositions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("operation_id", String(32), nullable=False),
    Column("conn_id", String(64), nullable=False),
    Column("extension", String(32), nullable=False),
    Column("cod_act", String(32), nullable=False),
    Column("cod_act_2", String(32), nullable=False, server_default=""),
    Column("comments", Text, nullable=False, server_default=""),
    Column("typed_at", UtcDateTime, nullable=False),
    _operation_fk(),
    Index(None, "conn_id"),
)

recalls = Table(
    "recalls", metadata,
    Column("id", String(64), primary_key=True),
    Column("operation_id", String(32), nullable=False),
    Column("extension", String(32), nullable=False),
    Column("customer_phone", String(64), nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    Column("recall_type", String(16), nullable=False),  # auto, manual
    Column("created_at", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),  # pending, due, dialled, notified
    Column("conn_id", String(64)),
    CheckConstraint("recall_type IN ('auto', 'manual')", name="recall_type"),
    _agent_fk(),
    Index(None, "state", "due_at"),
)

dialogs = Table(
    "dialogs", metadata,
    # One row per live SIP dialog (RFC 3261 §12.1): enough to send its BYE after a crash (§15.1.1).
    Column("leg_id", String(64), primary_key=True),
    Column("conn_id", String(64), nullable=False),
    Column("call_id", String(255), nullable=False),
    Column("local_tag", String(128), nullable=False),
    Column("remote_tag", String(128), nullable=False),
    Column("local_uri", String(1024), nullable=False),  # our From (To on dialogs the peer opened)
    Column("remote_uri", String(1024), nullable=False),
    Column("local_cseq", Integer, nullable=False),
    Column("remote_cseq", Integer),
    Column("remote_target", String(1024), nullable=False),  # the peer's Contact
    Column("route_set", JSON, nullable=False),  # Route header values, in order
    Column("peer_host", String(64), nullable=False),  # where the dialog's requests go (NAT-aware)
    Column("peer_port", Integer, nullable=False),
    Column("transport", String(8), nullable=False),
    # An anchored call's relay (host:port; NULL: direct media): its ng call-id is conn_id, the leg's tag its leg_id.
    Column("media_relay", String(64)),
    Column("sent_sdp", LargeBinary),  # the last SDP we sent the party, and the last it sent us (adoption: hold,
    Column("remote_sdp", LargeBinary),  # resume and transfers on the node that takes the call over start from them)
    Column("node_id", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("call_id", "local_tag"),
    Index(None, "node_id"),
)

# --- the cluster: which node owns which operation (docs/cluster.md) ----------------------------------------------

cluster_nodes = Table(
    "cluster_nodes", metadata,
    # One row per node that ever joined; live while its heartbeat is younger than the lease (PostgreSQL's clock).
    Column("node_id", String(64), primary_key=True),
    Column("slot", Integer, nullable=False, unique=True),  # small stable number: Kamailio's dispatcher set id
    Column("sip_host", String(64), nullable=False),
    Column("sip_port", Integer, nullable=False),
    Column("http_url", String(255), nullable=False, server_default=""),
    Column("incarnation", String(32), nullable=False),  # a fresh random value per process start
    Column("draining", Boolean, nullable=False, server_default=false()),
    Column("started_at", UtcDateTime, nullable=False),
    Column("heartbeat_at", UtcDateTime, nullable=False),
)

cluster_leases = Table(
    "cluster_leases", metadata,
    # One row per operation placed on a node. `epoch` grows by one each time the lease changes hands (or is taken
    # after it expired); every fenced write carries the writer's epoch (cluster/fencing.py).
    Column("operation_id", String(32), primary_key=True),
    Column("node_id", String(64)),  # None: released, free for the planner to place
    Column("epoch", BigInteger, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("move_to", String(64)),  # an administrator's handover target (`callbridge admin cluster move`)
    Column("updated_at", UtcDateTime, nullable=False),
    _operation_fk(),
    Index(None, "node_id"),
)
