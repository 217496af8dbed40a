"""The records the domain writes through, and the vocabulary they are written in.

Records are snapshots (frozen dataclasses): the storage writer thread may hold them while the domain moves on, so
they never change after they are made. Agent state changes, display changes, call and leg rows, CDRs, transfer
records, dispositions and recalls; and the names of the states and outcomes they carry (agent states, leg and call
states, who hung up, transfer kinds, states and outcomes, recall types). Times are wall-clock seconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


# --- calls and legs -------------------------------------------------------------------------------------------

LegRole = Literal["customer", "agent", "target"]
# "media_timeout": the relay saw no RTP from a party for the node's media timeout; "relay_lost": the relay carrying
# the call's media went down and no other relay could take the call over (b2bua/relay_loss.py)
EndReason = Literal["media_timeout", "relay_lost"]
LegState = Literal["calling", "ringing", "up", "ended"]
CallDirection = Literal["inbound", "outbound", "internal"]
CallState = Literal["queued", "offering", "dialing", "connected", "transferring", "ended"]
HangupBy = Literal["customer", "agent", "target", "system"]

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
    end_reason: EndReason | None = None  # why callbridge ended it, when `hangup_by` is "system" for a known reason

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
