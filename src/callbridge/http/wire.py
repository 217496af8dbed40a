"""Domain events -> wire events: which domain events have a wire type, and the `data` each carries (`openapi.json`,
`Event`), read from the service's state at the moment the event is published.

Rules:
- `to_wire` answers (type, data, conn_id), or None for a domain event with no wire type (action outcomes, queueing,
  dispositions, recalls) or one the document does not report (a number answering, a hold of an agentless call).
- A transfer event carries the Transfer resource as it was, in containers of its own that nothing changes
  afterwards; its ringing and answered times are remembered per transfer (the last 4000) from its own events.
- `agent.state_changed` always carries `reason`, the domain's reason for the move (`api`, `offered`, `answered`,
  `call_end`, `acw_end`, `registration_lost`...; `restart` and `registration expired` come from start-up
  reconciliation, `EventLog.restarted`).
- A context that no longer knows a call or an agent gives the defaults the document allows; a transfer it does not
  know is an error (the log logs it and publishes nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from callbridge.callcontrol.commands import AgentView, CallFacts
from callbridge.callcontrol.errors import CallControlError
from callbridge.callcontrol.events import (
    AgentStateChanged,
    CallAnswered,
    CallDialing,
    CallDtmf,
    CallEnded,
    CallHeld,
    CallMediaDirect,
    CallMonitorEnded,
    CallMonitorStarted,
    CallOffered,
    DisplayChanged,
    DomainEvent,
    TransferAnswered,
    TransferCancelled,
    TransferCompleted,
    TransferCreated,
    TransferEvent,
    TransferFailed,
    TransferRinging,
)
from callbridge.callcontrol.model import TransferRecord
from callbridge.http.resources import agent_state, call_direction, display_json, rfc3339, rfc3339_or_none, transfer_json

KEEP_TRANSFER_TIMES = 4000


class EventContext(Protocol):
    """What the log reads from the service to build `data` (CallControlService has these)."""

    def get_transfer(self, operation_id: str, transfer_id: str) -> TransferRecord: ...

    def get_agent(self, operation_id: str, extension: str) -> AgentView: ...

    # what most events read, without building a view per event: one field of the agent, a few of the call
    def agent_registered(self, operation_id: str, extension: str) -> bool | None: ...

    def call_facts(self, operation_id: str, conn_id: str) -> CallFacts | None: ...


_TRANSFER_TYPES: dict[type[TransferEvent], str] = {
    TransferCreated: "transfer.created", TransferRinging: "transfer.ringing", TransferAnswered: "transfer.answered",
    TransferCompleted: "transfer.completed", TransferFailed: "transfer.failed",
    TransferCancelled: "transfer.cancelled",
}


Wire = tuple[str, dict[str, Any], str | None]

# Which method builds the wire event of a domain event: the first of these classes the event is an instance of
# (none: no wire type). Looked up once per class and remembered.
_BUILDERS: tuple[tuple[type[DomainEvent], str], ...] = (
    (TransferEvent, "_transfer"), (CallOffered, "_offered"), (CallDialing, "_dialing"), (CallAnswered, "_answered"),
    (CallHeld, "_held"), (CallEnded, "_ended"), (CallDtmf, "_dtmf"),
    (CallMonitorStarted, "_monitor_started"), (CallMonitorEnded, "_monitor_ended"), (CallMediaDirect, "_media_direct"),
    (AgentStateChanged, "_agent_state"), (DisplayChanged, "_display"),
)


class WireMapper:
    def __init__(self) -> None:
        self.context: EventContext | None = None
        self.transfer_times: dict[str, tuple[float | None, float | None]] = {}
        self._builders: dict[type[DomainEvent], Callable[[Any], Wire | None]] = {}

    def to_wire(self, event: DomainEvent) -> tuple[str, dict[str, Any], str | None] | None:
        kind = type(event)
        build = self._builders.get(kind)
        if build is None:  # first event of its class: the first of `_BUILDERS` it is an instance of
            name = next((name for base, name in _BUILDERS if issubclass(kind, base)), "_no_wire")
            build = self._builders[kind] = getattr(self, name)
        return build(event)

    @staticmethod
    def _no_wire(event: DomainEvent) -> None:
        return None

    def _offered(self, event: CallOffered) -> Wire:
        call = self._call(event.operation_id, event.conn_id)
        return "call.offered", {
            "conn_id": event.conn_id, "agent_id": event.agent,
            "direction": call_direction(call.direction) if call else "inbound",
            "customer_number": event.customer_number, "queue": call.queue if call else None,
        }, event.conn_id

    @staticmethod
    def _dialing(event: CallDialing) -> Wire:
        return "call.offered", {
            "conn_id": event.conn_id, "agent_id": event.agent, "direction": "outbound",
            "customer_number": event.customer_number, "queue": None,
        }, event.conn_id

    @staticmethod
    def _answered(event: CallAnswered) -> Wire | None:
        if event.agent is None:
            return None  # the document's call.answered names an agent; a number answering is a transfer event
        return "call.answered", {"conn_id": event.conn_id, "agent_id": event.agent}, event.conn_id

    def _held(self, event: CallHeld) -> Wire | None:
        call = self._call(event.operation_id, event.conn_id)
        if call is None or call.agent is None:
            return None
        return "call.held", {"conn_id": event.conn_id, "agent_id": call.agent, "held": event.held}, event.conn_id

    def _ended(self, event: CallEnded) -> Wire:
        call = self._call(event.operation_id, event.conn_id)
        ended_at = call.ended_at if call and call.ended_at is not None else event.at
        # "target" is whoever stood on the agent's side after a transfer: the document names it "agent".
        by = {"customer": "customer", "system": "system"}.get(event.hangup_by, "agent")
        return "call.ended", {
            "conn_id": event.conn_id, "agent_id": call.agent if call else None, "ended_by": by,
            "sip_cause": event.sip_cause, "end_reason": event.end_reason,
            "duration_s": round(max(0.0, ended_at - call.created_at), 3) if call else 0.0,
        }, event.conn_id

    @staticmethod
    def _dtmf(event: CallDtmf) -> Wire:
        return "call.dtmf", {"conn_id": event.conn_id, "leg_id": event.leg_id, "leg": event.leg,
                             "digit": event.digit, "duration_ms": event.duration_ms}, event.conn_id

    @staticmethod
    def _monitor_started(event: CallMonitorStarted) -> Wire:
        return "call.monitor_started", {"conn_id": event.conn_id, "monitor_id": event.monitor_id,
                                        "supervisor": event.supervisor,
                                        "started_at": rfc3339(event.started_at)}, event.conn_id

    @staticmethod
    def _monitor_ended(event: CallMonitorEnded) -> Wire:
        return "call.monitor_ended", {"conn_id": event.conn_id, "monitor_id": event.monitor_id,
                                      "supervisor": event.supervisor,
                                      "started_at": rfc3339_or_none(event.started_at),
                                      "ended_at": rfc3339(event.ended_at), "reason": event.reason}, event.conn_id

    @staticmethod
    def _media_direct(event: CallMediaDirect) -> Wire:
        return "call.media_direct", {"conn_id": event.conn_id, "reason": event.reason}, event.conn_id

    def _agent_state(self, event: AgentStateChanged) -> Wire:
        state, aux = agent_state(event.state)
        previous, _ = agent_state(event.previous)
        registered = self.context.agent_registered(event.operation_id, event.agent) if self.context else None
        return "agent.state_changed", {
            "agent_id": event.agent, "state": state, "previous_state": previous, "aux_state": aux,
            "registered": bool(registered), "reason": event.reason,
        }, None

    def _display(self, event: DisplayChanged) -> Wire:
        agent = self._agent(event.operation_id, event.agent)
        return "agent.display_changed", {
            "agent_id": event.agent, "button": event.button, "display": "show" if event.visible else "hide",
            "buttons": display_json(agent.display if agent else ((event.button, event.visible),)),
        }, None

    def _transfer(self, event: TransferEvent) -> Wire:
        kind = _TRANSFER_TYPES[type(event)]
        ringing_at, answered_at = self.transfer_times.get(event.transfer_id, (None, None))
        state: str | None = None
        if isinstance(event, TransferRinging):
            ringing_at, state = event.at, "ringing"
        elif isinstance(event, TransferAnswered):
            answered_at, state = event.at, "answered"
        self.transfer_times[event.transfer_id] = (ringing_at, answered_at)
        record = self._transfer_record(event)
        data = transfer_json(record, ringing_at=ringing_at, answered_at=answered_at, state=state)
        if kind == "transfer.created":
            data["state"] = "created"
        if len(self.transfer_times) > KEEP_TRANSFER_TIMES:
            self.transfer_times.pop(next(iter(self.transfer_times)))
        return kind, data, event.conn_id

    def _transfer_record(self, event: TransferEvent) -> TransferRecord:
        if self.context is not None:
            try:
                return self.context.get_transfer(event.operation_id, event.transfer_id)
            except CallControlError:
                pass
        raise LookupError(f"transfer {event.transfer_id} is unknown to the event log's context")

    def _call(self, operation_id: str, conn_id: str) -> CallFacts | None:
        return None if self.context is None else self.context.call_facts(operation_id, conn_id)

    def _agent(self, operation_id: str, extension: str) -> AgentView | None:
        if self.context is None:
            return None
        try:
            return self.context.get_agent(operation_id, extension)
        except CallControlError:
            return None
