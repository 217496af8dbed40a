"""The native API's resources as JSON: Transfer, Agent, CallSummary/Call, Leg, Cdr (`openapi.json`, components).

The domain's words and the document's differ in a few places; the mapping lives here and nowhere else:

- transfer state: the domain's `trying` (INVITE sent, nothing heard yet) is the document's `created`; `consulting`
  (attended: the agent talks to the target) is `answered`.
- transfer outcome and failure: the document separates where the customer ended up (`outcome`:
  connected_to_target, back_with_agent, sent_to_queue, customer_left) from why a transfer failed (`failure`: busy,
  rejected, no_answer, unreachable, customer_hung_up, error); the domain keeps one `outcome` and a
  `customer_requeued` flag.
- agent state: `aux:<id>` is `aux` with `aux_state` = id.
- call state: `offering` and `dialing` are `ringing`; a `connected` call on hold is `held`. Direction `internal`
  (an agent calling an agent) is `outbound` (it starts on the agent's side).
- times are RFC 3339 in UTC with milliseconds (`2026-01-01T00:00:00.000Z`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from callbridge.callcontrol.commands import AgentView, CallView, LegView
from callbridge.callcontrol.model import AUX_PREFIX, Cdr, TransferRecord

DISPLAY_BUTTONS = ("hungup", "disposition", "dial")


def rfc3339(t: float) -> str:
    stamp = datetime.fromtimestamp(t, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def rfc3339_or_none(t: float | None) -> str | None:
    return None if t is None else rfc3339(t)


def _cause(status: int | None) -> int | None:
    return status if status is not None and 300 <= status <= 699 else None


_TRANSFER_STATES: Mapping[str, str] = {
    "created": "created", "trying": "created", "ringing": "ringing", "consulting": "answered",
    "completed": "completed", "failed": "failed", "cancelled": "cancelled",
}
_FAILURES: Mapping[str, str] = {
    "busy": "busy", "rejected": "rejected", "no_answer": "no_answer", "unreachable": "unreachable",
    "customer_hangup": "customer_hung_up",
}


def transfer_state(record: TransferRecord) -> str:
    return _TRANSFER_STATES[record.state]


def transfer_json(record: TransferRecord, *, ringing_at: float | None = None, answered_at: float | None = None,
                  state: str | None = None) -> dict[str, Any]:
    """The Transfer resource. `ringing_at`/`answered_at` come from the event log (the record keeps no such times);
    `state` overrides the record's for an event emitted before the record moved (blind `transfer.answered`)."""
    outcome: str | None = None
    failure: str | None = None
    if record.state == "completed":
        outcome = "connected_to_target"
    elif record.state == "cancelled":
        outcome = "back_with_agent"
    elif record.state == "failed":
        if record.outcome == "customer_hangup":
            outcome = "customer_left"
        elif record.customer_requeued:
            outcome = "sent_to_queue"
        else:
            outcome = "back_with_agent"
        failure = _FAILURES.get(record.outcome or "", "error")
    return {
        "id": record.id,
        "conn_id": record.conn_id,
        "kind": record.kind,
        "agent_id": record.agent,
        "target": record.target,
        "target_type": record.target_kind,
        "state": state or transfer_state(record),
        "outcome": outcome,
        "failure": failure,
        "sip_cause": _cause(record.sip_cause) if record.state in ("failed", "cancelled") else None,
        "timeout": min(300, max(1, round(record.timeout))),
        "created_at": rfc3339(record.created_at),
        "ringing_at": rfc3339_or_none(ringing_at),
        "answered_at": rfc3339_or_none(answered_at),
        "ended_at": rfc3339_or_none(record.ended_at),
    }


def agent_state(state: str) -> tuple[str, str | None]:
    """(document state, aux_state) of a domain state name."""
    if state.startswith(AUX_PREFIX):
        return "aux", state[len(AUX_PREFIX):]
    return state, None


def display_json(display: Iterable[tuple[str, bool]]) -> dict[str, str]:
    """Every console button, `show` unless agent_display hid it."""
    shown = dict(display)
    return {button: "show" if shown.get(button, True) else "hide" for button in DISPLAY_BUTTONS}


def agent_json(view: AgentView, call: CallView | None) -> dict[str, Any]:
    state, aux = agent_state(view.state)
    return {
        "agent_id": view.extension,
        "name": view.name,
        "state": state,
        "aux_state": aux,
        "registered": view.registered,
        "conn_id": view.conn_id,
        "on_hold": bool(call and call.held),
        "muted": bool(call and call.muted),
        "display": display_json(view.display),
        "state_since": rfc3339(view.state_since),
    }


_CALL_STATES: Mapping[str, str] = {
    "queued": "queued", "offering": "ringing", "dialing": "ringing", "connected": "connected",
    "transferring": "transferring", "ended": "ended",
}


def call_state(view: CallView) -> str:
    if view.state == "connected" and view.held:
        return "held"
    return _CALL_STATES[view.state]


def call_direction(direction: str) -> str:
    return "inbound" if direction == "inbound" else "outbound"


def call_summary_json(view: CallView) -> dict[str, Any]:
    return {
        "conn_id": view.conn_id,
        "direction": call_direction(view.direction),
        "state": call_state(view),
        "customer_number": view.customer_number,
        "agent_id": view.agent,
        "queue": view.queue,
        "transfers": view.transfer_count,
        "started_at": rfc3339(view.created_at),
        "answered_at": rfc3339_or_none(view.answered_at),
        "ended_at": rfc3339_or_none(view.ended_at),
    }


def leg_json(leg: LegView, held: bool) -> dict[str, Any]:
    state = leg.state
    if held and leg.role == "customer" and state == "up":
        state = "held"
    return {
        "leg_id": leg.leg_id,
        "role": leg.role,
        "party": leg.party,
        "state": state,
        "started_at": rfc3339(leg.created_at),
        "answered_at": rfc3339_or_none(leg.answered_at),
        "ended_at": rfc3339_or_none(leg.ended_at),
        "sip_cause": _cause(leg.sip_status) if leg.answered_at is None else None,
    }


def call_json(view: CallView, history: list[dict[str, Any]]) -> dict[str, Any]:
    body = call_summary_json(view)
    body["legs"] = [leg_json(leg, view.held) for leg in sorted(view.legs, key=lambda leg: leg.created_at)]
    body["history"] = history
    return body


def _seconds(t: float) -> float:
    return round(t, 3)


def recording_url(conn_id: str) -> str:
    return f"/v2/calls/{conn_id}/recording"


def cdr_json(cdr: Cdr, recorded: bool = False) -> dict[str, Any]:
    """The Cdr resource: the record written when the call ended, as the database keeps it; `recording` names the
    call's recording when one was stored."""
    return {
        "conn_id": cdr.conn_id,
        "direction": call_direction(cdr.direction),
        "customer_number": cdr.customer_number,
        "queue": cdr.queue,
        "agents": list(cdr.agents),
        "started_at": rfc3339(cdr.started_at),
        "answered_at": rfc3339_or_none(cdr.answered_at),
        "ended_at": rfc3339(cdr.ended_at),
        "duration": _seconds(max(0.0, cdr.duration)),
        "talk_time": _seconds(max(0.0, cdr.talk_time)),
        "hangup_by": cdr.hangup_by,
        "end_reason": cdr.end_reason,
        "sip_cause": _cause(cdr.sip_cause),
        "transfers": cdr.transfer_count,
        "related_conn_id": cdr.related_conn_id,
        "legs": [leg_json(LegView(leg.leg_id, leg.role, leg.party, leg.state, leg.agent, leg.created_at,
                                  leg.answered_at, leg.ended_at, leg.sip_status), False)
                 for leg in sorted(cdr.legs, key=lambda leg: (leg.created_at, leg.leg_id))],
        "recording": recording_url(cdr.conn_id) if recorded else None,
    }
