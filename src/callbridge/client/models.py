"""The native API's resources as the clients return them (``callbridge/http/openapi.json`` defines them).

Read leniently: members this client does not know are kept in ``raw`` and otherwise ignored; a missing optional
member is None; timestamps (RFC 3339) become aware datetimes, or None when absent or unreadable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")
TRANSFER_STATES = ("created", "ringing", "answered", "completed", "failed", "cancelled")
TERMINAL_TRANSFER_STATES = frozenset({"completed", "failed", "cancelled"})


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _obj(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Event:
    """One event of the operation's stream; ``seq`` orders them without gaps."""

    seq: int
    type: str
    at: datetime | None
    operation: str
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: Any) -> Event:
        obj = _obj(value)
        seq = _int(obj.get("seq"))
        if seq is None or not isinstance(obj.get("type"), str):
            raise ValueError("an event needs an integer seq and a type")
        data = obj.get("data")
        return cls(seq=seq, type=obj["type"], at=_time(obj.get("at")), operation=str(obj.get("operation", "")),
                   data=data if isinstance(data, Mapping) else {})


@dataclass(frozen=True)
class Transfer:
    id: str
    conn_id: str
    kind: str
    agent_id: str
    target: str
    state: str
    target_type: str | None = None
    outcome: str | None = None
    failure: str | None = None
    sip_cause: int | None = None
    timeout: int | None = None
    created_at: datetime | None = None
    ringing_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_TRANSFER_STATES

    @classmethod
    def from_json(cls, value: Any) -> Transfer:
        o = _obj(value)
        return cls(id=str(o["id"]), conn_id=str(o.get("conn_id", "")), kind=str(o.get("kind", "blind")),
                   agent_id=str(o.get("agent_id", "")), target=str(o.get("target", "")), state=str(o["state"]),
                   target_type=_str(o.get("target_type")), outcome=_str(o.get("outcome")),
                   failure=_str(o.get("failure")), sip_cause=_int(o.get("sip_cause")), timeout=_int(o.get("timeout")),
                   created_at=_time(o.get("created_at")), ringing_at=_time(o.get("ringing_at")),
                   answered_at=_time(o.get("answered_at")), ended_at=_time(o.get("ended_at")), raw=dict(o))


@dataclass(frozen=True)
class Agent:
    agent_id: str
    state: str
    name: str | None = None
    aux_state: str | None = None
    registered: bool | None = None
    conn_id: str | None = None
    on_hold: bool | None = None
    muted: bool | None = None
    display: Mapping[str, str] = field(default_factory=dict)
    state_since: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, value: Any) -> Agent:
        o = _obj(value)
        display = o.get("display")

        def flag(name: str) -> bool | None:
            v = o.get(name)
            return v if isinstance(v, bool) else None

        return cls(agent_id=str(o["agent_id"]), state=str(o["state"]), name=_str(o.get("name")),
                   aux_state=_str(o.get("aux_state")), registered=flag("registered"),
                   conn_id=_str(o.get("conn_id")), on_hold=flag("on_hold"), muted=flag("muted"),
                   display={str(k): str(v) for k, v in display.items()} if isinstance(display, Mapping) else {},
                   state_since=_time(o.get("state_since")), raw=dict(o))


@dataclass(frozen=True)
class Leg:
    leg_id: str
    role: str
    party: str
    state: str
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    sip_cause: int | None = None

    @classmethod
    def from_json(cls, value: Any) -> Leg:
        o = _obj(value)
        return cls(leg_id=str(o["leg_id"]), role=str(o.get("role", "")), party=str(o.get("party", "")),
                   state=str(o.get("state", "")), started_at=_time(o.get("started_at")),
                   answered_at=_time(o.get("answered_at")), ended_at=_time(o.get("ended_at")),
                   sip_cause=_int(o.get("sip_cause")))


@dataclass(frozen=True)
class Call:
    """A call; ``legs`` and ``history`` are filled by ``get_call`` and empty in listings."""

    conn_id: str
    state: str
    direction: str | None = None
    customer_number: str | None = None
    agent_id: str | None = None
    queue: str | None = None
    transfers: int = 0
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    legs: tuple[Leg, ...] = ()
    history: tuple[Event, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, value: Any) -> Call:
        o = _obj(value)
        legs = o.get("legs") or []
        history = o.get("history") or []
        if not isinstance(legs, list) or not isinstance(history, list):
            raise ValueError("legs and history are lists")
        return cls(conn_id=str(o["conn_id"]), state=str(o["state"]), direction=_str(o.get("direction")),
                   customer_number=_str(o.get("customer_number")), agent_id=_str(o.get("agent_id")),
                   queue=_str(o.get("queue")), transfers=_int(o.get("transfers")) or 0,
                   started_at=_time(o.get("started_at")), answered_at=_time(o.get("answered_at")),
                   ended_at=_time(o.get("ended_at")), legs=tuple(Leg.from_json(x) for x in legs),
                   history=tuple(Event.from_json(x) for x in history), raw=dict(o))


@dataclass(frozen=True)
class Cdr:
    """A call detail record (``GET /v2/cdrs``); ``duration`` and ``talk_time`` in seconds."""

    conn_id: str
    direction: str | None = None
    customer_number: str | None = None
    queue: str | None = None
    agents: tuple[str, ...] = ()
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration: float = 0.0
    talk_time: float = 0.0
    hangup_by: str | None = None
    sip_cause: int | None = None
    transfers: int = 0
    related_conn_id: str | None = None
    legs: tuple[Leg, ...] = ()
    recording: str | None = None  # the path of the call's recording (GET it with the token), when one was stored
    end_reason: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, value: Any) -> Cdr:
        o = _obj(value)
        agents, legs = o.get("agents") or [], o.get("legs") or []
        if not isinstance(agents, list) or not isinstance(legs, list):
            raise ValueError("agents and legs are lists")
        duration, talk = o.get("duration"), o.get("talk_time")
        return cls(conn_id=str(o["conn_id"]), direction=_str(o.get("direction")),
                   customer_number=_str(o.get("customer_number")), queue=_str(o.get("queue")),
                   agents=tuple(str(a) for a in agents), started_at=_time(o.get("started_at")),
                   answered_at=_time(o.get("answered_at")), ended_at=_time(o.get("ended_at")),
                   duration=float(duration) if isinstance(duration, int | float) else 0.0,
                   talk_time=float(talk) if isinstance(talk, int | float) else 0.0,
                   hangup_by=_str(o.get("hangup_by")), sip_cause=_int(o.get("sip_cause")),
                   transfers=_int(o.get("transfers")) or 0, related_conn_id=_str(o.get("related_conn_id")),
                   legs=tuple(Leg.from_json(x) for x in legs), recording=_str(o.get("recording")),
                   end_reason=_str(o.get("end_reason")), raw=dict(o))


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``next_cursor`` (None on the last page) asks for the next one."""

    items: tuple[T, ...]
    next_cursor: str | None = None
