"""Live calls and legs: mutable, and the call-control service's alone.

The outside world sees them through `CallRecord`/`LegRecord` snapshots (`records`) and the read-only views of
`callbridge.callcontrol.commands`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from callbridge.callcontrol.records import (
    CallDirection,
    CallRecord,
    CallState,
    HangupBy,
    LegRecord,
    LegRole,
    LegState,
)

# "off": never recorded; "recording"; "paused" (to be resumed); "stopped" (a later start records again)
RecordingState = Literal["off", "recording", "paused", "stopped"]


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
    recording: RecordingState = "off"  # the call's recording on its relay (callcontrol.recordings)
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
