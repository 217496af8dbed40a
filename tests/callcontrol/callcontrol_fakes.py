"""In-memory fakes of callcontrol's ports, and a `World` that wires them to a service for the tests."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from callbridge.callcontrol.errors import CallControlError, InvalidParameter
from callbridge.callcontrol.events import DomainEvent
from callbridge.callcontrol.model import (
    ActivityCode,
    Agent,
    AgentStateChange,
    AuxState,
    CallRecord,
    Cdr,
    DialPlan,
    Did,
    DisplayChange,
    Disposition,
    LegRecord,
    Operation,
    Queue,
    Recall,
    Token,
    TransferRecord,
    Trunk,
)
from callbridge.callcontrol.ports import OriginateRequest
from callbridge.callcontrol.service import CallControlService

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


@dataclass
class FakeHandle:
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeScheduler:
    """Runs callbacks when the test advances the clock, in due order (ties in scheduling order)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, FakeHandle, Callable[[], None]]] = []
        self._seq = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle()
        heapq.heappush(self._heap, (self.clock.t + delay, next(self._seq), handle, callback))
        return handle

    def pending(self) -> list[float]:
        return sorted(when - self.clock.t for when, _, h, _ in self._heap if not h.cancelled)

    def advance(self, seconds: float) -> None:
        end = self.clock.t + seconds
        while self._heap and self._heap[0][0] <= end:
            when, _, handle, callback = heapq.heappop(self._heap)
            self.clock.t = max(self.clock.t, when)
            if not handle.cancelled:
                callback()
        self.clock.t = end


class FakeSignalling:
    """Records every request; the test answers them through the service's on_* methods."""

    def __init__(self) -> None:
        self.requests: list[tuple[Any, ...]] = []
        self.available = True
        self.draining = False
        self.recordable = True  # what `record` answers: False, a call whose media is not anchored
        self.anchored = True  # what `monitor` answers: False, a call whose media is not anchored
        self.waits: list[tuple[str, str]] = []  # (customer leg, queue) told to wait with the queue's audio

    def is_available(self) -> bool:
        return self.available

    def accepts_new_calls(self, operation_id: str | None = None) -> bool:
        return self.available and not self.draining

    def accepts_new_logins(self) -> bool:
        return self.available and not self.draining

    def originate(self, request: OriginateRequest) -> None:
        self.requests.append(("originate", request))

    def bridge(self, leg_a: str, leg_b: str) -> None:
        self.requests.append(("bridge", leg_a, leg_b))

    def hold(self, leg_id: str, action_id: str) -> None:
        self.requests.append(("hold", leg_id, action_id))

    def unhold(self, leg_id: str, action_id: str) -> None:
        self.requests.append(("unhold", leg_id, action_id))

    def mute(self, leg_id: str, action_id: str) -> None:
        self.requests.append(("mute", leg_id, action_id))

    def unmute(self, leg_id: str, action_id: str) -> None:
        self.requests.append(("unmute", leg_id, action_id))

    def send_dtmf(self, leg_id: str, tones: str, action_id: str) -> None:
        self.requests.append(("dtmf", leg_id, tones, action_id))

    def release(self, leg_id: str, cause: int | None = None, action_id: str | None = None) -> None:
        self.requests.append(("release", leg_id, cause, action_id))

    def reject(self, leg_id: str, status: int, retry_after: int | None = None) -> None:
        self.requests.append(("reject", leg_id, status, retry_after))

    def monitor(self, request: OriginateRequest) -> bool:
        self.requests.append(("monitor", request))
        return self.anchored

    def listen_in_page(self, conn_id: str, leg_id: str) -> bool:
        self.requests.append(("listen_in_page", conn_id, leg_id))
        return self.anchored

    def waiting(self, conn_id: str, leg_id: str, queue: Queue) -> None:
        self.waits.append((leg_id, queue.name))  # apart from `requests`: a hint for the media, not a SIP request

    def record(self, conn_id: str, on: bool) -> bool:
        self.requests.append(("record", conn_id, on))
        return self.recordable

    # --- test helpers
    def originates(self) -> list[OriginateRequest]:
        return [r[1] for r in self.requests if r[0] == "originate"]

    def last_originate(self, destination: str | None = None) -> OriginateRequest:
        found = [o for o in self.originates() if destination is None or o.destination == destination]
        assert found, f"nothing originated to {destination}"
        return found[-1]

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [r for r in self.requests if r[0] == kind]

    def since(self, mark: int) -> list[tuple[Any, ...]]:
        return self.requests[mark:]


@dataclass
class InMemoryDirectory:
    operations: dict[str, Operation] = field(default_factory=dict)
    agents: dict[tuple[str, str], Agent] = field(default_factory=dict)
    queues: dict[tuple[str, str], Queue] = field(default_factory=dict)
    trunks: dict[str, list[Trunk]] = field(default_factory=dict)
    dids: dict[tuple[str, str], Did] = field(default_factory=dict)
    aux: dict[str, list[AuxState]] = field(default_factory=dict)
    codes: dict[str, list[ActivityCode]] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)

    def get_operation(self, operation_id: str) -> Operation | None:
        return self.operations.get(operation_id)

    def list_operations(self) -> Sequence[Operation]:
        return list(self.operations.values())

    def get_agent(self, operation_id: str, extension: str) -> Agent | None:
        return self.agents.get((operation_id, extension))

    def list_agents(self, operation_id: str) -> Sequence[Agent]:
        return [a for (op, _), a in self.agents.items() if op == operation_id]

    def get_queue(self, operation_id: str, name: str) -> Queue | None:
        return self.queues.get((operation_id, name))

    def list_queues(self, operation_id: str) -> Sequence[Queue]:
        return [q for (op, _), q in self.queues.items() if op == operation_id]

    def list_trunks(self, operation_id: str) -> Sequence[Trunk]:
        return self.trunks.get(operation_id, [])

    def get_did(self, operation_id: str, number: str) -> Did | None:
        return self.dids.get((operation_id, number))

    def list_aux_states(self, operation_id: str) -> Sequence[AuxState]:
        return self.aux.get(operation_id, [])

    def list_activity_codes(self, operation_id: str) -> Sequence[ActivityCode]:
        return self.codes.get(operation_id, [])

    def get_token(self, token_hash: str) -> Token | None:
        return self.tokens.get(token_hash)


@dataclass
class InMemoryStates:
    changes: list[AgentStateChange] = field(default_factory=list)
    displays: list[DisplayChange] = field(default_factory=list)

    def record_agent_state(self, change: AgentStateChange) -> None:
        self.changes.append(change)

    def record_display(self, change: DisplayChange) -> None:
        self.displays.append(change)

    def history(self, agent: str) -> list[str]:
        return [c.state for c in self.changes if c.agent == agent]


@dataclass
class InMemoryRecords:
    calls: dict[str, CallRecord] = field(default_factory=dict)
    legs: dict[str, LegRecord] = field(default_factory=dict)
    cdrs: list[Cdr] = field(default_factory=list)
    transfers: list[TransferRecord] = field(default_factory=list)
    dispositions: list[Disposition] = field(default_factory=list)

    def save_call(self, call: CallRecord) -> None:
        self.calls[call.conn_id] = call

    def save_leg(self, leg: LegRecord) -> None:
        self.legs[leg.leg_id] = leg

    def save_cdr(self, cdr: Cdr) -> None:
        self.cdrs.append(cdr)

    def save_transfer(self, transfer: TransferRecord) -> None:
        self.transfers.append(transfer)

    def save_disposition(self, disposition: Disposition) -> None:
        self.dispositions.append(disposition)

    def transfer_states(self, transfer_id: str) -> list[str]:
        return [t.state for t in self.transfers if t.id == transfer_id]


@dataclass
class InMemoryRecalls:
    recalls: dict[str, Recall] = field(default_factory=dict)

    def save_recall(self, recall: Recall) -> None:
        self.recalls[recall.id] = recall

    def pending_recalls(self) -> Sequence[Recall]:
        return [r for r in self.recalls.values() if r.state == "pending"]


@dataclass
class EventLog:
    events: list[DomainEvent] = field(default_factory=list)

    def publish(self, event: DomainEvent) -> None:
        self.events.append(event)

    def names(self, since: int = 0) -> list[str]:
        return [e.name for e in self.events[since:]]

    def of(self, cls: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


OP = "0042"
OTHER_OP = "0077"


def counter_ids() -> Callable[[str], str]:
    n = itertools.count(1)
    return lambda prefix: f"{prefix}{next(n)}"


class World:
    """Operation 0042 (agents 1001-1003 in queue "sales", aux "2" Break, codes, a trunk, DID 5550100) and
    operation 0077 (agent 2001), wired to a service with in-memory ports."""

    def __init__(self, **op_settings: Any) -> None:
        self.clock = FakeClock()
        self.scheduler = FakeScheduler(self.clock)
        self.signalling = FakeSignalling()
        self.directory = InMemoryDirectory()
        self.states = InMemoryStates()
        self.records = InMemoryRecords()
        self.recalls = InMemoryRecalls()
        self.events = EventLog()
        d = self.directory
        settings: dict[str, Any] = {"time_zone": "America/Bogota", "default_queue": "sales", "acw_seconds": 10.0,
                                    "ring_timeout": 15.0} | op_settings
        d.operations[OP] = Operation(OP, "op42.example.test", **settings)
        d.operations[OTHER_OP] = Operation(OTHER_OP, "op77.example.test", default_queue="support")
        for ext in ("1001", "1002", "1003"):
            d.agents[(OP, ext)] = Agent(OP, ext, f"Agent {ext}", queues=("sales",))
        d.agents[(OTHER_OP, "2001")] = Agent(OTHER_OP, "2001", "Other", queues=("support",))
        d.queues[(OP, "sales")] = Queue(OP, "sales", max_wait_seconds=60.0, retry_after=30)
        d.queues[(OP, "vip")] = Queue(OP, "vip", max_wait_seconds=20.0)
        d.aux[OP] = [AuxState(OP, "2", "Break")]
        d.codes[OP] = [ActivityCode(OP, 1, "10", "Sale"), ActivityCode(OP, 1, "11", "No sale"),
                       ActivityCode(OP, 2, "20", "Callback")]
        d.trunks[OP] = [Trunk(OP, "carrier", "127.0.0.1", 5080,
                              dial_plan=DialPlan(allowed_patterns=(r"[0-9]{7,10}", r"\+57[0-9]{10}"), strip=0,
                                                 prefix="9", min_length=8, max_length=14))]
        d.dids[(OP, "5550100")] = Did(OP, "5550100", "sales", "carrier")
        d.dids[(OP, "5550199")] = Did(OP, "5550199", "vip", "carrier")
        self.service = CallControlService(directory=d, states=self.states, records=self.records,
                                          recalls=self.recalls, signalling=self.signalling, events=self.events,
                                          clock=self.clock, scheduler=self.scheduler, ids=counter_ids())
        self._customer_legs = itertools.count(1)

    # --- driving

    def login(self, *extensions: str, op: str = OP) -> None:
        for ext in extensions:
            self.service.on_registration_changed(op, ext, True)
            self.service.change_status(op, ext, "ready")
            self.clock.t += 1.0  # distinct idle times, in the order given

    def inbound(self, did: str = "5550100", number: str = "3001234567") -> tuple[str, str]:
        leg = f"cust{next(self._customer_legs)}"
        return self.service.on_inbound_call(OP, did, leg, number), leg

    def offer_leg(self, ext: str) -> str:
        return self.signalling.last_originate(ext).leg_id

    def connected_call(self, ext: str = "1001", number: str = "3001234567") -> tuple[str, str, str]:
        """A customer talking with `ext`: (conn_id, customer leg, agent leg)."""
        conn_id, cust = self.inbound(number=number)
        agent_leg = self.offer_leg(ext)
        self.service.on_leg_answered(agent_leg)
        assert self.service.get_call(OP, conn_id).state == "connected"
        return conn_id, cust, agent_leg

    def state(self, ext: str, op: str = OP) -> str:
        return self.service.get_agent(op, ext).state


def _footprint(world: World) -> tuple[int, ...]:
    return (len(world.signalling.requests), len(world.events.events), len(world.states.changes),
            len(world.records.transfers), len(world.records.dispositions), len(world.records.cdrs),
            len(world.states.displays), len(world.recalls.recalls), len(world.records.calls),
            len(world.records.legs), len(world.scheduler.pending()))


def expect(world: World, error_id: str, fn: Callable[..., Any], *args: Any, parameter: str | None = None,
           **kwargs: Any) -> None:
    before = _footprint(world)
    with pytest.raises(CallControlError) as info:
        fn(*args, **kwargs)
    assert info.value.error_id == error_id
    if parameter is not None:
        assert isinstance(info.value, InvalidParameter) and info.value.parameter == parameter
    assert _footprint(world) == before, "a refused verb changed something"
