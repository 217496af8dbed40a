"""The live state of one call-control service: every call, leg, agent, transfer, timer and pending action it holds.

Theory of operation. All live call state is in memory, in the process that holds the SIP dialogs; the service is
single-threaded (the adapters call it from one event loop) and never blocks. `LiveState` is plain data: it is built
once by the service and handed, by reference, to each collaborator (`agents`, `lifecycle`, `acd`, `actions`,
`transfer_engine`, `outbound`, `reads`, `reports`), which keep references to the containers they use. A
container is never replaced, only changed in place, so every collaborator sees the same calls and agents.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from callbridge.callcontrol.calls import Call
from callbridge.callcontrol.commands import ActionVerb
from callbridge.callcontrol.directory import Agent
from callbridge.callcontrol.errors import CallEnded, CallNotFound
from callbridge.callcontrol.events import ActionCompleted, ActionFailed
from callbridge.callcontrol.ids import IdFactory
from callbridge.callcontrol.ports import TimerHandle
from callbridge.callcontrol.records import LOGOUT, READY, Recall, TransferRecord
from callbridge.callcontrol.routing import IdleAgents, QueueBook

_V = TypeVar("_V")
KEEP_FINISHED = 1000  # ended calls, finished transfers and action outcomes kept for reads


@dataclass(slots=True)
class AgentRuntime:
    """An agent's live state: its state-table state, registration, idle time and call."""

    agent: Agent
    state: str = LOGOUT
    state_since: float = 0.0
    reason: str = ""
    registered: bool = False
    idle_since: float = 0.0
    conn_id: str | None = None  # the call this agent is rung for or talks on
    leg_id: str | None = None  # its leg on that call
    last_conn_id: str | None = None
    last_call_ended_at: float | None = None
    untyped_conn_id: str | None = None  # the last call not yet typed
    ready_after_call: bool = False  # hang_type_ready: skip ACW at the end of this call
    display: dict[str, bool] = field(default_factory=dict)

    @property
    def extension(self) -> str:
        return self.agent.extension

    @property
    def operation_id(self) -> str:
        return self.agent.operation_id

    @property
    def available(self) -> bool:
        return self.registered and self.state == READY and self.conn_id is None


class OfferingCalls:
    """The calls being offered, as a container the queue book skips (their state says so; nothing to keep)."""

    __slots__ = ("_calls",)

    def __init__(self, calls: dict[str, Call]) -> None:
        self._calls = calls

    def __contains__(self, conn_id: object) -> bool:
        call = self._calls.get(conn_id) if isinstance(conn_id, str) else None
        return call is not None and call.state == "offering"


@dataclass(slots=True)
class PendingAction:
    action_id: str
    verb: ActionVerb
    conn_id: str
    operation_id: str
    on_success: Callable[[], None] | None


@dataclass(slots=True)
class TransferRun:
    record: TransferRecord
    trunk: str | None = None


class LiveState:
    """Everything the service holds in memory; `seq` is the number of the last event published."""

    __slots__ = ("actions", "agents", "book", "calls", "ended_calls", "finished_transfers", "idle", "ids", "leg_calls",
                 "node_id", "offering", "outcomes", "recalls", "seq", "timers", "transfers")

    def __init__(self, node_id: str, ids: IdFactory) -> None:
        self.node_id = node_id
        self.ids = ids
        self.seq = 0
        self.calls: dict[str, Call] = {}
        self.ended_calls: OrderedDict[str, Call] = OrderedDict()
        self.leg_calls: dict[str, str] = {}  # leg_id -> conn_id of the live call it belongs to
        self.agents: dict[tuple[str, str], AgentRuntime] = {}
        self.transfers: dict[str, TransferRun] = {}
        self.finished_transfers: OrderedDict[str, TransferRecord] = OrderedDict()
        self.book = QueueBook()
        self.offering = OfferingCalls(self.calls)
        self.idle = IdleAgents()
        self.timers: dict[str, TimerHandle] = {}
        self.actions: dict[str, PendingAction] = {}
        self.outcomes: OrderedDict[str, ActionCompleted | ActionFailed] = OrderedDict()
        self.recalls: dict[str, Recall] = {}

    def live_call(self, operation_id: str, conn_id: str) -> Call:
        """The operation's call `conn_id` while it is up: CALL_NOT_FOUND for an unknown call or another
        operation's, CALL_ENDED for one of its calls that ended (the native API's per-call verbs)."""
        call = self.calls.get(conn_id)
        if call is None:
            ended = self.ended_calls.get(conn_id)
            if ended is not None and ended.operation_id == operation_id:
                raise CallEnded()
            raise CallNotFound()
        if call.operation_id != operation_id:
            raise CallNotFound()
        if call.state == "ended":
            raise CallEnded()
        return call


def keep(store: OrderedDict[str, _V], key: str, value: _V) -> None:
    """Keep `value` for reads, dropping the oldest entries beyond `KEEP_FINISHED`."""
    store[key] = value
    while len(store) > KEEP_FINISHED:
        store.popitem(last=False)
