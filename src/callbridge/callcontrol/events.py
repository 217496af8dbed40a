"""Domain events: what happened, in order.

Every event the service publishes carries `seq`, a number that increases by one with each event of the service
(the native API's `/v2/events` resumes from it), `at` (the clock's time) and `operation_id` (events are scoped to
their tenant). Events are built with `seq=0, at=0.0` and stamped by the service as it publishes them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from callbridge.callcontrol.model import (
    EndReason,
    HangupBy,
    LegRole,
    TargetKind,
    TransferKind,
    TransferOutcome,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainEvent:
    operation_id: str
    seq: int = 0
    at: float = 0.0

    @property
    def name(self) -> str:
        """A stable name for the wire: the class name in snake case, e.g. "transfer_failed"."""
        out = []
        for i, ch in enumerate(type(self).__name__):
            if ch.isupper() and i:
                out.append("_")
            out.append(ch.lower())
        return "".join(out)

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data: {"type": name, "seq": ..., "at": ..., "operation_id": ..., fields...}."""
        return {"type": self.name, **asdict(self)}


# --- calls ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CallQueued(DomainEvent):
    conn_id: str
    queue: str
    customer_number: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOffered(DomainEvent):
    conn_id: str
    agent: str
    leg_id: str
    customer_number: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallDialing(DomainEvent):
    """dial/aux_call/recall: the agent's phone rings first, then the customer is called."""

    conn_id: str
    agent: str
    customer_number: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallAnswered(DomainEvent):
    conn_id: str
    agent: str | None
    leg_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallMonitorStarted(DomainEvent):
    """A supervisor's phone (`supervisor`, the extension rung) answered and hears both parties from `started_at`."""

    conn_id: str
    monitor_id: str
    supervisor: str
    started_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CallMonitorEnded(DomainEvent):
    """The listening ended (`reason`: stopped, supervisor_hangup, no_answer, call_ended); `started_at` None: the
    supervisor's phone never answered."""

    conn_id: str
    monitor_id: str
    supervisor: str
    started_at: float | None
    ended_at: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallHeld(DomainEvent):
    conn_id: str
    held: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CallMuted(DomainEvent):
    conn_id: str
    muted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded(DomainEvent):
    conn_id: str
    hangup_by: HangupBy
    sip_cause: int | None
    end_reason: EndReason | None = None  # why callbridge ended it, when it did for a reason (the CDR's end_reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallDtmf(DomainEvent):
    """A DTMF digit the customer sent in the call's media (RFC 4733), as the relay saw it (docs/operations.md,
    "DTMF")."""

    conn_id: str
    leg_id: str
    leg: LegRole  # whose media carried it ("customer")
    digit: str  # 0-9, *, #, A-D
    duration_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CallMediaDirect(DomainEvent):
    """The call's operation anchors media on a relay, but this call's media flows between the parties: no relay
    was up when it arrived and the operation's policy is to go on (docs/design.md, "Media")."""

    conn_id: str
    reason: str  # "relay_down"


# --- transfers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferEvent(DomainEvent):
    transfer_id: str
    conn_id: str
    kind: TransferKind


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferCreated(TransferEvent):
    agent: str
    target: str
    target_kind: TargetKind


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRinging(TransferEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferAnswered(TransferEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferCompleted(TransferEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferFailed(TransferEvent):
    outcome: TransferOutcome
    sip_cause: int | None
    customer_requeued: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferCancelled(TransferEvent):
    pass


# --- agents ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStateChanged(DomainEvent):
    agent: str
    state: str
    previous: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DisplayChanged(DomainEvent):
    agent: str
    button: str
    visible: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Dispositioned(DomainEvent):
    agent: str
    conn_id: str
    cod_act: str
    cod_act_2: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecallScheduled(DomainEvent):
    recall_id: str
    agent: str
    customer_phone: str
    due_at: float
    type_recall: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecallDue(DomainEvent):
    """A recall's time came: `manual` ones notify the agent; `auto` ones dial once the agent is ready."""

    recall_id: str
    agent: str
    customer_phone: str
    type_recall: str


# --- actions (hang, hold, mute, dtmf wait for the SIP final response) ----------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionCompleted(DomainEvent):
    action_id: str
    verb: str
    conn_id: str
    sip_status: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionFailed(DomainEvent):
    """The phone or carrier refused (`sip_status`) or did not answer in time (`sip_status` None)."""

    action_id: str
    verb: str
    conn_id: str
    sip_status: int | None
    error_id: str = "CALL_NOT_UPDATED"
