"""What the service's verbs take and give: parameter checks, results and read-only views.

The verbs themselves are methods of `CallControlService` (one per agentbox verb, plus the native API's). Their
parameters are checked here first, because the contract ranks "400 invalid parameter" before "404 agent": a
malformed parameter is refused before any lookup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callbridge.callcontrol.errors import InvalidParameter
from callbridge.callcontrol.model import Call, Leg, RecallType

_NUMBER = re.compile(r"\+?[0-9]{1,32}")
_EXTENSION = re.compile(r"[0-9]{1,32}")
_TONES = re.compile(r"[0-9*#A-D]{1,64}")
_CODE = re.compile(r"[0-9A-Za-z_.-]{1,64}")

DisplayButton = Literal["hungup", "disposition", "dial"]
DISPLAY_BUTTONS: tuple[DisplayButton, ...] = ("hungup", "disposition", "dial")
ActionVerb = Literal["hang", "hold", "unhold", "mute", "unmute", "dtmf"]


def check_agent_id(agent_id: str) -> str:
    if not _EXTENSION.fullmatch(agent_id):
        raise InvalidParameter("agent_id")
    return agent_id


def check_number(value: str, parameter: str = "customer_phone") -> str:
    """A dialable number: digits with an optional leading '+'. Anything else never reaches a SIP message."""
    if not _NUMBER.fullmatch(value):
        raise InvalidParameter(parameter)
    return value


def check_tones(tones: str) -> str:
    if not _TONES.fullmatch(tones):
        raise InvalidParameter("tones")
    return tones


def check_code(value: str, parameter: str) -> str:
    if not _CODE.fullmatch(value):
        raise InvalidParameter(parameter)
    return value


def check_display(display: str, button: str) -> tuple[DisplayButton, bool]:
    if display not in ("show", "hide"):
        raise InvalidParameter("display")
    for name in DISPLAY_BUTTONS:
        if button == name:
            return name, display == "show"
    raise InvalidParameter("button")


def check_type_recall(type_recall: str) -> RecallType:
    if type_recall == "auto":
        return "auto"
    if type_recall == "manual":
        return "manual"
    raise InvalidParameter("type_recall")


def parse_recall_date(date: str, time_zone: str) -> float:
    """`YYYYmmddHHiiss` in the operation's time zone, as epoch seconds."""
    if not re.fullmatch(r"[0-9]{14}", date):
        raise InvalidParameter("date")
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    try:
        local = datetime.strptime(date, "%Y%m%d%H%M%S").replace(tzinfo=zone)
    except ValueError as exc:
        raise InvalidParameter("date") from exc
    return local.timestamp()


# --- results --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionTicket:
    """A verb that waits for the SIP final response (hang, hold, mute, dtmf, hang_type_ready) returns this at once.

    The outcome follows as an `ActionCompleted` or `ActionFailed` event with the same `action_id` (at most the
    operation's `action_timeout` later), and `CallControlService.action_outcome(action_id)` keeps it for a while,
    so a waiter that subscribes after the event still finds it. `turning_on` says which way a toggle goes
    (hold: True = putting on hold); None for the others.
    """

    action_id: str
    verb: ActionVerb
    conn_id: str
    turning_on: bool | None = None


# --- views ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentView:
    operation_id: str
    extension: str
    name: str
    state: str
    state_since: float
    reason: str
    registered: bool
    available: bool
    conn_id: str | None
    queues: tuple[str, ...]
    display: tuple[tuple[str, bool], ...]


@dataclass(frozen=True, slots=True)
class LegView:
    leg_id: str
    role: str
    party: str
    state: str
    agent: str | None
    created_at: float
    answered_at: float | None
    ended_at: float | None
    sip_status: int | None

    @classmethod
    def of(cls, leg: Leg) -> LegView:
        return cls(leg.leg_id, leg.role, leg.party, leg.state, leg.agent, leg.created_at, leg.answered_at,
                   leg.ended_at, leg.sip_status)


@dataclass(frozen=True, slots=True)
class CallView:
    conn_id: str
    operation_id: str
    direction: str
    state: str
    customer_number: str
    queue: str | None
    agent: str | None
    held: bool
    muted: bool
    transfer_count: int
    transfer_id: str | None
    created_at: float
    answered_at: float | None
    ended_at: float | None
    legs: tuple[LegView, ...]
    history: tuple[tuple[float, str, str], ...]

    @classmethod
    def of(cls, call: Call) -> CallView:
        return cls(call.conn_id, call.operation_id, call.direction, call.state, call.customer_number, call.queue,
                   call.agent, call.held, call.muted, call.transfer_count, call.transfer_id, call.created_at,
                   call.answered_at, call.ended_at, tuple(LegView.of(leg) for leg in call.legs.values()),
                   tuple((h.at, h.what, h.detail) for h in call.history))


class CallFacts(NamedTuple):
    """The few fields of a call that an event's wire data reads (`Reads.call_facts`): built per call event, where
    a whole CallView (its legs and history copied into frozen views) cost several microseconds."""

    direction: str
    queue: str | None
    agent: str | None
    created_at: float
    ended_at: float | None
