"""The domain's nouns: operations and their directory, calls and legs, and the records written through.

Two kinds of objects live here:

- **Directory and records** are frozen dataclasses. The storage adapter reads the directory (operations, agents,
  queues, trunks, auxiliary states, activity codes, DIDs, tokens) and writes the records (agent state changes,
  call and leg records, CDRs, transfer records, dispositions, recalls). Records are snapshots: the storage writer
  thread may hold them while the domain moves on, so they never change after they are made.
- **Live state** (`Call`, `Leg`) is mutable and belongs to the call-control service alone; the outside world sees
  it through `CallRecord`/`LegRecord` snapshots and the read-only views of `callbridge.callcontrol.commands`.

Times are wall-clock seconds since the epoch (floats), as the `Clock` port gives them. Phone numbers, extensions
and codes are strings: leading zeros and a leading `+` or `9` matter (agentbox contract, "Request shape").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

# --- directory ------------------------------------------------------------------------------------------------

AfterTransferState = Literal["acw", "ready"]
Transport = Literal["udp", "tcp"]
CallerIdPolicy = Literal["customer", "agent", "fixed"]
"""Caller ID toward a transfer target or an outside number: the customer's number (the default, with
Diversion/History-Info naming the agent), the agent's extension, or the trunk's fixed number."""


@dataclass(frozen=True, slots=True)
class Operation:
    """A tenant (the Wolkvox `wolkvox_server`, e.g. "0042") and its call-control settings."""

    id: str
    sip_domain: str
    realm: str = ""  # digest realm; empty means the SIP domain
    name: str = ""
    time_zone: str = "UTC"  # IANA name; recall dates and quota resets are read in it
    acw_seconds: float = 0.0  # after-call work length; 0 = straight back to ready
    after_transfer_state: AfterTransferState = "acw"  # where an agent goes when its call is transferred away
    default_queue: str | None = None
    ring_timeout: float = 20.0  # how long a queue call rings one agent before the next is tried
    transfer_timeout: float = 30.0  # how long a transfer target rings
    dial_timeout: float = 45.0  # dial/aux_call/recall: how long the customer's phone rings
    max_transfers: int = 5  # hop limit: transfers per call
    recent_call_window: float = 600.0  # aux_call: the last call ended at most this long ago
    action_timeout: float = 5.0  # hang/hold/mute/dtmf: the SIP final response must come within this
    token_concurrency_limit: int = 2  # default for new tokens
    daily_quota: int | None = None  # default for new tokens; None = no quota

    @property
    def digest_realm(self) -> str:
        return self.realm or self.sip_domain


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent of an operation; registers as sip:<extension>@<operation domain>."""

    operation_id: str
    extension: str
    name: str = ""
    ha1_md5: str = ""  # hex MD5(extension:realm:password) (RFC 7616 §3.4.2)
    ha1_sha256: str = ""  # hex SHA-256 of the same
    queues: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuxState:
    """An auxiliary ("not ready") state of an operation, e.g. id "2" named "Break"."""

    operation_id: str
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ActivityCode:
    """A disposition code; `type` takes one of group 1 (`cod_act`) and one of group 2 (`cod_act_2`)."""

    operation_id: str
    group: Literal[1, 2]
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Queue:
    operation_id: str
    name: str
    max_wait_seconds: float = 60.0  # nobody available this long: the caller gets 480 with Retry-After
    ring_timeout: float | None = None  # None = the operation's
    retry_after: int = 60  # seconds, for the 480


@dataclass(frozen=True, slots=True)
class DialPlan:
    """What a trunk may dial, and how the dialled string becomes the number sent.

    A number is first checked against `allowed_patterns` (full-match regular expressions over the digits as the
    agent gave them; empty = any number of digits with an optional leading '+'), then `strip` leading characters
    are removed and `prefix` is prepended, and the result's length must be within [min_length, max_length].
    """

    allowed_patterns: tuple[str, ...] = ()
    strip: int = 0
    prefix: str = ""
    min_length: int = 3
    max_length: int = 20

    def apply(self, number: str) -> str | None:
        """The number to send, or None when the dial plan refuses `number`."""
        if not re.fullmatch(r"\+?[0-9]+", number):
            return None
        if self.allowed_patterns and not any(re.fullmatch(p, number) for p in self.allowed_patterns):
            return None
        result = self.prefix + number[self.strip :]
        if not self.min_length <= len(result) <= self.max_length:
            return None
        return result


@dataclass(frozen=True, slots=True)
class TrunkCredentials:
    """Digest credentials toward the provider (401/407), and for the optional registration."""

    username: str
    password: str
    realm: str | None = None  # None = whatever realm the provider challenges with


@dataclass(frozen=True, slots=True)
class Did:
    """A number delivered by a trunk, routed to a queue of the operation."""

    operation_id: str
    number: str
    queue: str
    trunk: str = ""


@dataclass(frozen=True, slots=True)
class Trunk:
    operation_id: str
    name: str
    host: str  # outbound gateway (an address, never resolved by callbridge's tests)
    port: int = 5060
    transport: Transport = "udp"
    dial_plan: DialPlan = field(default_factory=DialPlan)
    caller_id_policy: CallerIdPolicy = "customer"
    caller_id_number: str = ""  # for the "fixed" policy, and outbound calls
    register: bool = False
    credentials: TrunkCredentials | None = None
    inbound_networks: tuple[str, ...] = ()  # CIDR networks allowed to send calls in
    dids: tuple[Did, ...] = ()


@dataclass(frozen=True, slots=True)
class Token:
    """An API token of an operation; only its hash is stored."""

    id: str
    operation_id: str
    hash: str
    concurrency_limit: int = 2
    daily_quota: int | None = None
    label: str = ""
    revoked: bool = False


# --- agent state ----------------------------------------------------------------------------------------------

LOGOUT = "logout"
READY = "ready"
RINGING = "ringing"
ON_CALL = "on_call"
ACW = "acw"
AUX_PREFIX = "aux:"


def aux_state(aux_id: str) -> str:
    """The agent-state name of an auxiliary state: "aux:<id>"."""
    return AUX_PREFIX + aux_id


@dataclass(frozen=True, slots=True)
class AgentStateChange:
    """One entry of an agent's state history (written through)."""

    operation_id: str
    agent: str  # extension
    state: str  # logout | ready | aux:<id> | ringing | on_call | acw
    reason: str
    at: float
    previous: str = LOGOUT
    conn_id: str | None = None


@dataclass(frozen=True, slots=True)
class DisplayChange:
    """agent_display: a console button shown or hidden (written through)."""

    operation_id: str
    agent: str
    button: Literal["hungup", "disposition", "dial"]
    visible: bool
    at: float


# --- calls and legs (live) ------------------------------------------------------------------------------------

LegRole = Literal["customer", "agent", "target"]
LegState = Literal["calling", "ringing", "up", "ended"]
CallDirection = Literal["inbound", "outbound", "internal"]
CallState = Literal["queued", "offering", "dialing", "connected", "transferring", "ended"]
HangupBy = Literal["customer", "agent", "target", "system"]


@dataclass(slots=True)
class Leg:
    """One SIP dialog of a call, seen from the domain: who it reaches and how far it got."""

    leg_id: str
    conn_id: str
    role: LegRole
    party: str  # a number or an extension
    state: LegState = "calling"
    agent: str | None = None  # the agent whose state this leg drives, if any
    created_at: float = 0.0
    answered_at: float | None = None
    ended_at: float | None = None
    sip_status: int | None = None  # final status of a failed leg, or the cause it was released with
    ended_by: HangupBy | None = None

    def record(self) -> LegRecord:
        return LegRecord(self.leg_id, self.conn_id, self.role, self.party, self.state, self.agent,
                         self.created_at, self.answered_at, self.ended_at, self.sip_status, self.ended_by)


@dataclass(frozen=True, slots=True)
class CallHistoryEntry:
    at: float
    what: str  # e.g. "queued", "offered", "answered", "held", "transfer_failed"
    detail: str = ""


@dataclass(slots=True)
class Call:
    """A customer's call: one stable conn_id over its whole life, across transfers."""

    conn_id: str
    operation_id: str
    direction: CallDirection
    customer_number: str
    created_at: float
    node_id: str = "local"  # the node holding the dialogs (cluster ownership)
    state: CallState = "queued"
    queue: str | None = None
    legs: dict[str, Leg] = field(default_factory=dict)
    history: list[CallHistoryEntry] = field(default_factory=list)
    customer_leg_id: str | None = None
    agent_leg_id: str | None = None  # the leg toward whoever talks with the customer for the operation
    agent: str | None = None  # that party's extension when it is an agent
    agents: list[str] = field(default_factory=list)  # every agent who answered, in order
    held: bool = False
    muted: bool = False
    transfer_count: int = 0
    transfer_id: str | None = None  # the running transfer
    answered_at: float | None = None
    ended_at: float | None = None
    hangup_by: HangupBy | None = None
    sip_cause: int | None = None
    queue_deadline: float | None = None
    customer_id: str = ""
    customer_name: str = ""
    related_conn_id: str | None = None  # aux_call: the call it follows
    dialled_number: str = ""  # outbound: the number sent to the trunk, after the dial plan
    trunk: str | None = None  # outbound: the trunk it goes through

    def leg(self, leg_id: str | None) -> Leg | None:
        return self.legs.get(leg_id) if leg_id is not None else None

    def live_legs(self) -> list[Leg]:
        return [leg for leg in self.legs.values() if leg.state != "ended"]

    def record(self) -> CallRecord:
        return CallRecord(self.conn_id, self.operation_id, self.node_id, self.direction, self.customer_number,
                          self.state, self.queue, self.agent, self.created_at, self.answered_at, self.ended_at,
                          self.hangup_by, self.sip_cause, self.transfer_count, self.related_conn_id)


# --- records (written through) --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LegRecord:
    leg_id: str
    conn_id: str
    role: LegRole
    party: str
    state: LegState
    agent: str | None
    created_at: float
    answered_at: float | None
    ended_at: float | None
    sip_status: int | None
    ended_by: HangupBy | None


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call's row, written when it starts, changes hands and ends (start-up reconciliation closes open ones)."""

    conn_id: str
    operation_id: str
    node_id: str
    direction: CallDirection
    customer_number: str
    state: CallState
    queue: str | None
    agent: str | None
    created_at: float
    answered_at: float | None
    ended_at: float | None
    hangup_by: HangupBy | None
    sip_cause: int | None
    transfer_count: int
    related_conn_id: str | None


@dataclass(frozen=True, slots=True)
class Cdr:
    """The call detail record of a finished call: every leg, party and time, who hung up and the SIP cause."""

    conn_id: str
    operation_id: str
    node_id: str
    direction: CallDirection
    customer_number: str
    queue: str | None
    agents: tuple[str, ...]
    started_at: float
    answered_at: float | None
    ended_at: float
    hangup_by: HangupBy
    sip_cause: int | None
    transfer_count: int
    legs: tuple[LegRecord, ...]
    related_conn_id: str | None = None

    @property
    def duration(self) -> float:
        return self.ended_at - self.started_at

    @property
    def talk_time(self) -> float:
        return 0.0 if self.answered_at is None else self.ended_at - self.answered_at


TransferKind = Literal["blind", "attended"]
TransferState = Literal["created", "trying", "ringing", "consulting", "completed", "failed", "cancelled"]
TransferOutcome = Literal["completed", "busy", "rejected", "unreachable", "no_answer", "failed", "cancelled",
                          "customer_hangup", "target_hangup"]
TargetKind = Literal["agent", "number"]


@dataclass(frozen=True, slots=True)
class TransferRecord:
    """A transfer and how far it got; a new snapshot is written at every step."""

    id: str
    conn_id: str
    operation_id: str
    kind: TransferKind
    agent: str  # who asked for it
    target: str  # as asked: an extension or a number
    target_kind: TargetKind
    state: TransferState
    created_at: float
    updated_at: float
    outcome: TransferOutcome | None = None
    sip_cause: int | None = None
    ended_at: float | None = None
    target_leg_id: str | None = None
    dialled: str = ""  # the number sent to the trunk after the dial plan, or the extension
    timeout: float = 30.0
    customer_requeued: bool = False  # failure after the agent had left: the customer went back to a queue

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Disposition:
    """`type`: the activity codes recorded for an agent's call."""

    operation_id: str
    conn_id: str
    agent: str
    cod_act: str
    cod_act_2: str
    comments: str
    at: float


RecallType = Literal["auto", "manual"]
RecallState = Literal["pending", "due", "dialled", "notified"]


@dataclass(frozen=True, slots=True)
class Recall:
    """A scheduled callback; `auto` dials when due and the agent is ready, `manual` notifies the agent."""

    id: str
    operation_id: str
    agent: str
    customer_phone: str
    due_at: float
    type_recall: RecallType
    created_at: float
    state: RecallState = "pending"
    conn_id: str | None = None  # the call an `auto` recall made
