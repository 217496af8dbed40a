"""The service's core: live state, the ports, and the moves every verb and adapter report shares.

Theory of operation. All live call state is in memory, in the process that holds the SIP dialogs; the service is
single-threaded (the adapters call it from one event loop) and never blocks: reads of the directory are served from
memory, writes are fire-and-forget, time is the `Clock`, and timeouts are `Scheduler` callbacks. Each state change
goes through its table (`states`, `transfer`) so a move the tables do not allow raises instead of drifting.

Ordering rules that the tests pin down:
- a call's legs are released before the agents on them are freed, so an agent freed by the end of a call is never
  offered the call that is ending;
- an agent whose offer rang out is put back to `ready` with a fresh idle time and the call is re-dispatched before
  that agent is offered anything, so ring-no-answer moves to the next agent;
- the effects of an action (hang, hold, mute, dtmf) are registered before the request goes to the signalling port,
  so a report that comes back at once is not lost.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from callbridge.callcontrol.commands import ActionTicket, ActionVerb
from callbridge.callcontrol.errors import AgentNotFound, AgentNotLoggedIn, CallControlError, NumberNotAllowed
from callbridge.callcontrol.events import (
    ActionCompleted,
    ActionFailed,
    AgentStateChanged,
    CallEnded,
    CallOffered,
    CallQueued,
    DomainEvent,
)
from callbridge.callcontrol.model import (
    LOGOUT,
    ON_CALL,
    READY,
    RINGING,
    Agent,
    AgentStateChange,
    Call,
    CallDirection,
    CallHistoryEntry,
    CallState,
    Cdr,
    HangupBy,
    Leg,
    LegRole,
    Operation,
    Queue,
    Recall,
    TransferRecord,
    Trunk,
)
from callbridge.callcontrol.ports import (
    CallRecordRepository,
    Clock,
    DirectoryRepository,
    EventSink,
    OriginateRequest,
    RecallRepository,
    Scheduler,
    Signalling,
    StateRepository,
    TimerHandle,
)
from callbridge.callcontrol.routing import IdleAgents, QueueBook, serves
from callbridge.callcontrol.states import (
    AgentAction,
    AgentInput,
    CallInput,
    LegAction,
    LegInput,
    agent_transition,
    call_transition,
    is_logged_in,
    leg_transition,
)

IdFactory = Callable[[str], str]
_E = TypeVar("_E", bound=DomainEvent)
_V = TypeVar("_V")
_KEEP_FINISHED = 1000  # ended calls, finished transfers and action outcomes kept for reads


class _RandomHex:
    """128-bit random values as 32 hex digits, drawn from the OS in blocks (one `os.urandom` per 256 ids)."""

    __slots__ = ("_block", "_next")
    _IDS_PER_BLOCK = 256

    def __init__(self) -> None:
        self._block = ""
        self._next = 0

    def __call__(self) -> str:
        at = self._next
        if at >= len(self._block):
            self._block, at = os.urandom(16 * self._IDS_PER_BLOCK).hex(), 0
        self._next = at + 32
        return self._block[at:at + 32]


_random_hex = _RandomHex()


def random_ids(prefix: str) -> str:
    """Opaque, URL-safe, unique ids: a one-letter kind and 32 hex digits (128 random bits, as uuid4 has 122).

    conn_id, leg, transfer and action ids are random rather than a counter: unique across restarts and nodes
    without coordination, and they say nothing about how many calls a node carried or which one came first.
    Drawing the randomness in blocks keeps them off the hot path's profile.
    """
    return prefix + _random_hex()


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


class _OfferingCalls:
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


class ServiceCore:
    def __init__(self, *, directory: DirectoryRepository, states: StateRepository, records: CallRecordRepository,
                 recalls: RecallRepository, signalling: Signalling, events: EventSink, clock: Clock,
                 scheduler: Scheduler, node_id: str = "local", ids: IdFactory = random_ids) -> None:
        self._directory = directory
        self._states = states
        self._records = records
        self._recall_repo = recalls
        self._signalling = signalling
        self._events = events
        self._clock = clock
        self._scheduler = scheduler
        self._node_id = node_id
        self._ids = ids
        self._seq = 0
        self._calls: dict[str, Call] = {}
        self._ended_calls: OrderedDict[str, Call] = OrderedDict()
        self._leg_calls: dict[str, str] = {}
        self._agents: dict[tuple[str, str], AgentRuntime] = {}
        self._transfers: dict[str, TransferRun] = {}
        self._finished_transfers: OrderedDict[str, TransferRecord] = OrderedDict()
        self._book = QueueBook()
        self._offering = _OfferingCalls(self._calls)
        self._idle = IdleAgents()
        self._timers: dict[str, TimerHandle] = {}
        self._actions: dict[str, PendingAction] = {}
        self._outcomes: OrderedDict[str, ActionCompleted | ActionFailed] = OrderedDict()
        self._recalls: dict[str, Recall] = {}

    # --- plumbing ---------------------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The sequence number of the last event published (0 before the first)."""
        return self._seq

    def _now(self) -> float:
        return self._clock.now()

    def _emit(self, event: _E) -> _E:
        """Stamp `event` (seq, at) and publish it. Every caller passes an event it has just built and shares with
        nobody yet, so it is stamped in place rather than copied (`dataclasses.replace` was a hot-path cost)."""
        self._seq += 1
        object.__setattr__(event, "seq", self._seq)
        object.__setattr__(event, "at", self._now())
        self._events.publish(event)
        return event

    def _arm(self, key: str, delay: float, callback: Callable[[], None]) -> None:
        self._disarm(key)
        self._timers[key] = self._scheduler.call_later(max(0.0, delay), lambda: self._fire(key, callback))

    def _fire(self, key: str, callback: Callable[[], None]) -> None:
        if self._timers.pop(key, None) is not None:  # a cancelled timer that runs anyway does nothing
            callback()

    def _disarm(self, key: str) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _operation(self, operation_id: str) -> Operation:
        op = self._directory.get_operation(operation_id)
        if op is None:
            raise CallControlError(f"operation {operation_id} does not exist")
        return op

    def _queue(self, operation_id: str, name: str) -> Queue:
        return self._directory.get_queue(operation_id, name) or Queue(operation_id, name)

    @staticmethod
    def _keep(store: OrderedDict[str, _V], key: str, value: _V) -> None:
        store[key] = value
        while len(store) > _KEEP_FINISHED:
            store.popitem(last=False)

    # --- agents -----------------------------------------------------------------------------------------------

    def _require_agent(self, operation_id: str, agent_id: str) -> tuple[Operation, AgentRuntime]:
        op = self._directory.get_operation(operation_id)
        rt = self._find_agent(operation_id, agent_id) if op is not None else None
        if op is None or rt is None:
            raise AgentNotFound()
        return op, rt

    def _require_logged_in(self, operation_id: str, agent_id: str) -> tuple[Operation, AgentRuntime]:
        op, rt = self._require_agent(operation_id, agent_id)
        if not is_logged_in(rt.state):
            raise AgentNotLoggedIn()
        return op, rt


    def _runtime(self, agent: Agent) -> AgentRuntime:
        key = (agent.operation_id, agent.extension)
        rt = self._agents.get(key)
        if rt is None:
            now = self._now()
            rt = self._agents[key] = AgentRuntime(agent, state_since=now, idle_since=now)
        elif rt.agent is not agent:
            queues_changed = rt.agent.queues != agent.queues
            rt.agent = agent  # the directory may have changed (queues, name)
            if queues_changed:
                self._index_agent(rt)
        return rt

    def _find_agent(self, operation_id: str, extension: str) -> AgentRuntime | None:
        agent = self._directory.get_agent(operation_id, extension)
        return None if agent is None else self._runtime(agent)

    def _agents_of(self, operation_id: str) -> list[AgentRuntime]:
        return [self._runtime(a) for a in self._directory.list_agents(operation_id)]

    def _queues_of(self, rt: AgentRuntime, op: Operation) -> tuple[str, ...]:
        """The queues the agent serves: its own, else the operation's default queue."""
        return rt.agent.queues or ((op.default_queue,) if op.default_queue else ())

    def _index_agent(self, rt: AgentRuntime) -> None:
        """An agent that may have become available joins the idle index of its queues (routing.IdleAgents).

        Called wherever availability may begin: the state table's move to `ready`, a first registration, the end
        of its part in a call, a change of its queues. Entries of agents who stop being available are dropped
        lazily, when a dispatch meets them."""
        if not rt.available:
            return
        op = self._directory.get_operation(rt.operation_id)
        if op is None:
            return
        for queue in self._queues_of(rt, op):
            self._idle.add(op.id, queue, rt.extension, rt.idle_since)

    def reindex_agents(self) -> None:
        """Rebuild the idle index from the directory (after the directory was reloaded: queues may have moved)."""
        self._idle.clear()
        for op in self._directory.list_operations():
            for rt in self._agents_of(op.id):
                self._index_agent(rt)

    def _agent_input(self, rt: AgentRuntime, event: AgentInput, reason: str, *, aux_id: str | None = None,
                     dispatch: bool = True) -> None:
        action, nxt = agent_transition(rt.state, event, aux_id)
        prev = rt.state
        now = self._now()
        if action in (AgentAction.END_ACW, AgentAction.END_ACW_AVAILABLE):
            self._disarm(self._acw_key(rt))
        if nxt != prev:
            rt.state, rt.state_since, rt.reason = nxt, now, reason
            if nxt == READY:
                rt.idle_since = now
                self._index_agent(rt)
            self._states.record_agent_state(
                AgentStateChange(rt.operation_id, rt.extension, nxt, reason, now, prev, rt.conn_id))
            self._emit(AgentStateChanged(operation_id=rt.operation_id, agent=rt.extension, state=nxt,
                                         previous=prev, reason=reason))
        if action is AgentAction.START_ACW:
            acw = self._operation(rt.operation_id).acw_seconds
            if acw <= 0:
                self._agent_input(rt, AgentInput.ACW_TIMEOUT, "acw_end", dispatch=dispatch)
            else:
                self._arm(self._acw_key(rt), acw, lambda: self._agent_input(rt, AgentInput.ACW_TIMEOUT, "acw_end"))
        elif action in (AgentAction.AVAILABLE, AgentAction.END_ACW_AVAILABLE) and dispatch:
            self._agent_available(rt)

    @staticmethod
    def _acw_key(rt: AgentRuntime) -> str:
        return f"acw:{rt.operation_id}:{rt.extension}"

    def _agent_available(self, rt: AgentRuntime) -> None:
        """The agent may take a call: the longest-waiting call of its queues, else whatever else waits for it."""
        if not rt.available:
            return
        op = self._operation(rt.operation_id)
        conn_id = self._book.oldest(op.id, self._queues_of(rt, op), skip=self._offering)
        if conn_id is not None:
            self._offer(self._calls[conn_id], rt)
            return
        self._index_agent(rt)
        self._agent_idle(rt)

    def _agent_idle(self, rt: AgentRuntime) -> None:
        """Hook: an available agent with no queue call to take (the service dials due `auto` recalls)."""

    def _agent_answered(self, call: Call, leg: Leg) -> None:
        rt = self._agents.get((call.operation_id, leg.agent)) if leg.agent else None
        if rt is None or rt.leg_id != leg.leg_id or rt.state == ON_CALL:
            return
        self._agent_input(rt, AgentInput.ANSWER, "answered")
        rt.untyped_conn_id = call.conn_id
        if rt.extension not in call.agents:
            call.agents.append(rt.extension)

    def _agent_leg_over(self, call: Call, leg: Leg | None, reason: str, *, to_ready: bool = False,
                        dispatch: bool = True) -> AgentRuntime | None:
        """The agent this leg drives is done with the call; returns it."""
        if leg is None or leg.agent is None:
            return None
        rt = self._agents.get((call.operation_id, leg.agent))
        if rt is None or rt.leg_id != leg.leg_id:
            return None
        rt.conn_id = rt.leg_id = None
        if rt.state == ON_CALL:
            rt.last_conn_id, rt.last_call_ended_at = call.conn_id, self._now()
            event = AgentInput.RELEASE_TO_READY if (to_ready or rt.ready_after_call) else AgentInput.CALL_END
            rt.ready_after_call = False
        elif rt.state == RINGING:
            event = AgentInput.NO_ANSWER
        elif rt.state == LOGOUT:
            event = AgentInput.CALL_END
        else:
            self._index_agent(rt)  # e.g. ready while reserved for a transfer that did not happen
            return rt
        self._agent_input(rt, event, reason, dispatch=dispatch)
        return rt

    # --- calls and legs ---------------------------------------------------------------------------------------

    def _new_call(self, op: Operation, direction: CallDirection, customer_number: str, state: CallState) -> Call:
        call = Call(self._ids("c"), op.id, direction, customer_number, self._now(), node_id=self._node_id,
                    state=state)
        self._calls[call.conn_id] = call
        return call

    def _add_leg(self, call: Call, role: LegRole, party: str, *, agent: str | None = None,
                 leg_id: str | None = None) -> Leg:
        leg = Leg(leg_id or self._ids("l"), call.conn_id, role, party, agent=agent, created_at=self._now())
        call.legs[leg.leg_id] = leg
        self._leg_calls[leg.leg_id] = call.conn_id
        self._records.save_leg(leg.record())
        return leg

    def _lookup_leg(self, leg_id: str) -> tuple[Call, Leg] | None:
        conn_id = self._leg_calls.get(leg_id)
        call = self._calls.get(conn_id) if conn_id else None
        return None if call is None else (call, call.legs[leg_id])

    def _leg_input(self, call: Call, leg: Leg, event: LegInput, *, status: int | None = None,
                   by: HangupBy | None = None) -> LegAction:
        action, nxt = leg_transition(leg.state, event)
        now = self._now()
        leg.state = nxt
        if nxt == "up" and leg.answered_at is None:
            leg.answered_at = now
        if nxt == "ended":
            leg.ended_at = now
            leg.sip_status = status
            leg.ended_by = by
            self._disarm(f"ring:{leg.leg_id}")
        self._records.save_leg(leg.record())
        return action

    def _release_leg(self, call: Call, leg: Leg | None, cause: int | None = None, *, by: HangupBy = "system",
                     action_id: str | None = None) -> None:
        if leg is None or leg.state == "ended":
            return
        self._leg_input(call, leg, LegInput.RELEASE, status=cause, by=by)
        self._signalling.release(leg.leg_id, cause, action_id)

    def _call_input(self, call: Call, event: CallInput) -> None:
        _, call.state = call_transition(call.state, event)

    def _history(self, call: Call, what: str, detail: str = "") -> None:
        call.history.append(CallHistoryEntry(self._now(), what, detail))

    def _originate(self, request: OriginateRequest, ring_timeout: float | None) -> None:
        if ring_timeout is not None:
            leg_id = request.leg_id  # the timer keeps the id only: a cancelled timer lingers in the loop until due
            self._arm(f"ring:{leg_id}", ring_timeout, lambda: self._ring_timeout(leg_id))
        self._signalling.originate(request)

    def _ring_timeout(self, leg_id: str) -> None:
        found = self._lookup_leg(leg_id)
        if found is None or found[1].state not in ("calling", "ringing"):
            return
        call, leg = found
        self._release_leg(call, leg, 408)
        self._after_leg_failure(call, leg, 408)

    def _after_leg_failure(self, call: Call, leg: Leg, status: int | None) -> None:
        """A leg this side originated ended without an answer (a final error, or its ring timer)."""
        if call.state == "offering" and leg.leg_id == call.agent_leg_id:
            self._offer_failed(call, leg)
        elif call.state == "dialing":
            self._end_call(call, "agent" if leg.role == "agent" else "customer", status)

    def _end_call(self, call: Call, by: HangupBy, cause: int | None) -> None:
        """Finish the call: release what is still up, write the CDR, then free its agents."""
        if call.state == "ended":
            return
        self._call_input(call, CallInput.END)
        self._book.remove(call.conn_id)
        self._disarm(f"queue:{call.conn_id}")
        call.ended_at, call.hangup_by, call.sip_cause = self._now(), by, cause
        for leg in call.legs.values():
            self._release_leg(call, leg, by=by)
        self._history(call, "ended", by)
        self._records.save_call(call.record())
        assert call.ended_at is not None
        self._records.save_cdr(Cdr(
            call.conn_id, call.operation_id, call.node_id, call.direction, call.customer_number, call.queue,
            tuple(call.agents), call.created_at, call.answered_at, call.ended_at, by, cause, call.transfer_count,
            tuple(leg.record() for leg in call.legs.values()), call.related_conn_id))
        del self._calls[call.conn_id]
        for leg_id in call.legs:
            self._leg_calls.pop(leg_id, None)
        self._keep(self._ended_calls, call.conn_id, call)
        self._emit(CallEnded(operation_id=call.operation_id, conn_id=call.conn_id, hangup_by=by, sip_cause=cause))
        for leg in call.legs.values():
            self._agent_leg_over(call, leg, "call_end")

    # --- queues and ACD ---------------------------------------------------------------------------------------

    def _enqueue(self, call: Call, queue_name: str) -> None:
        queue = self._queue(call.operation_id, queue_name)
        call.queue = queue_name
        call.queue_deadline = self._now() + queue.max_wait_seconds
        self._book.add(call.operation_id, queue_name, call.conn_id)
        self._history(call, "queued", queue_name)
        self._records.save_call(call.record())
        self._emit(CallQueued(operation_id=call.operation_id, conn_id=call.conn_id, queue=queue_name,
                              customer_number=call.customer_number))
        conn_id = call.conn_id
        self._arm(f"queue:{conn_id}", queue.max_wait_seconds, lambda: self._queue_timeout(conn_id))
        self._dispatch_call(call)

    def _queue_timeout(self, conn_id: str) -> None:
        call = self._calls.get(conn_id)
        if call is not None and call.state == "queued":
            self._reject_waiting(call)

    def _reject_waiting(self, call: Call) -> None:
        """Nobody took the call within the queue's limit: 480 with Retry-After (BYE if it was answered before)."""
        queue = self._queue(call.operation_id, call.queue or "")
        customer = call.leg(call.customer_leg_id)
        if customer is not None and customer.state in ("calling", "ringing"):
            self._leg_input(call, customer, LegInput.RELEASE, status=480, by="system")
            self._signalling.reject(customer.leg_id, 480, queue.retry_after)
        else:
            self._release_leg(call, customer, 480)
        self._history(call, "queue_timeout", call.queue or "")
        self._end_call(call, "system", 480)

    def _dispatch_call(self, call: Call) -> None:
        if call.state != "queued" or call.queue is None:
            return
        op = self._operation(call.operation_id)
        queue = call.queue

        def takes_calls(extension: str, idle_since: float) -> bool:
            rt = self._find_agent(op.id, extension)  # as the directory has it now: still an agent of the queue?
            return (rt is not None and rt.available and rt.idle_since == idle_since
                    and serves(rt.agent.queues, op.default_queue, queue))

        best = self._idle.take(op.id, queue, takes_calls)
        if best is not None:
            self._offer(call, self._agents[(op.id, best)])

    def _offer(self, call: Call, rt: AgentRuntime) -> None:
        op = self._operation(call.operation_id)
        queue = self._queue(op.id, call.queue or "")
        customer = call.leg(call.customer_leg_id)
        assert customer is not None
        leg = self._add_leg(call, "agent", rt.extension, agent=rt.extension)
        self._call_input(call, CallInput.OFFER)
        call.agent_leg_id = leg.leg_id
        rt.conn_id, rt.leg_id = call.conn_id, leg.leg_id
        self._history(call, "offered", rt.extension)
        self._agent_input(rt, AgentInput.OFFER, "offered")
        offerless = customer.state == "up"  # an answered customer (requeued) has no offer pending: RFC 3725 flow I
        ring = queue.ring_timeout if queue.ring_timeout is not None else op.ring_timeout
        self._emit(CallOffered(operation_id=op.id, conn_id=call.conn_id, agent=rt.extension, leg_id=leg.leg_id,
                               customer_number=call.customer_number))
        self._originate(OriginateRequest(
            call.conn_id, leg.leg_id, op.id, "agent", rt.extension, caller_id=call.customer_number,
            offerless=offerless, offer_from_leg=None if offerless else customer.leg_id, timeout=ring), ring)

    def _offer_failed(self, call: Call, leg: Leg) -> None:
        self._call_input(call, CallInput.OFFER_FAILED)
        call.agent_leg_id = None
        self._history(call, "offer_failed", leg.party)
        rt = self._agent_leg_over(call, leg, "no_answer", dispatch=False)
        if call.queue_deadline is not None and self._now() >= call.queue_deadline:
            self._reject_waiting(call)
        else:
            self._dispatch_call(call)
        if rt is not None:
            self._agent_available(rt)

    # --- actions (hang, hold, mute, dtmf) ---------------------------------------------------------------------

    def _start_action(self, call: Call, verb: ActionVerb, send: Callable[[str], None],
                      on_success: Callable[[], None] | None = None, turning_on: bool | None = None) -> ActionTicket:
        action_id = self._ids("a")
        self._actions[action_id] = PendingAction(action_id, verb, call.conn_id, call.operation_id, on_success)
        timeout = self._operation(call.operation_id).action_timeout
        self._arm(f"action:{action_id}", timeout, lambda: self.on_action_result(action_id, False, None))
        send(action_id)
        return ActionTicket(action_id, verb, call.conn_id, turning_on)

    def _pending_verbs(self, conn_id: str) -> set[str]:
        return {a.verb for a in self._actions.values() if a.conn_id == conn_id}

    def on_action_result(self, action_id: str, ok: bool, sip_status: int | None = None) -> None:
        """The adapter's report of the final response to a request sent with `action_id` (None: no response)."""
        pending = self._actions.pop(action_id, None)
        if pending is None:
            return  # an internal request (transfer hold/unhold), or a late answer after the timeout
        self._disarm(f"action:{action_id}")
        outcome: ActionCompleted | ActionFailed
        if ok:
            if pending.on_success is not None:
                pending.on_success()
            outcome = ActionCompleted(operation_id=pending.operation_id, action_id=action_id, verb=pending.verb,
                                      conn_id=pending.conn_id, sip_status=sip_status)
        else:
            outcome = ActionFailed(operation_id=pending.operation_id, action_id=action_id, verb=pending.verb,
                                   conn_id=pending.conn_id, sip_status=sip_status)
        self._keep(self._outcomes, action_id, self._emit(outcome))

    def action_outcome(self, action_id: str) -> ActionCompleted | ActionFailed | None:
        """The outcome of an action, once known (kept for the last 1000 actions)."""
        return self._outcomes.get(action_id)

    # --- numbers ----------------------------------------------------------------------------------------------

    def _resolve_number(self, operation_id: str, number: str) -> tuple[Trunk, str]:
        """The first outbound trunk whose dial plan accepts `number`, and the number to send it."""
        for trunk in self._directory.list_trunks(operation_id):
            dialled = trunk.dial_plan.apply(number)
            if dialled is not None:
                return trunk, dialled
        raise NumberNotAllowed()

    def _trunk(self, operation_id: str, name: str | None) -> Trunk | None:
        return next((t for t in self._directory.list_trunks(operation_id) if t.name == name), None)

    def _live_calls(self, operation_id: str) -> Iterable[Call]:
        return (c for c in self._calls.values() if c.operation_id == operation_id)

