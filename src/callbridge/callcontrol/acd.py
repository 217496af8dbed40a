"""The ACD at work: calls wait in queues, are offered to agents, and are rejected when nobody takes them in time.

`routing` decides the order (longest-idle agent, longest-waiting call); this module does the moves: enqueue,
dispatch, offer (ring the agent, RFC 3725 flow I for an answered customer), and what follows a failed offer or a
queue's `max_wait_seconds` running out (480 with Retry-After). An agent that becomes available takes the
longest-waiting call of its queues, else whatever else waits for it (`agent_idle`: the due `auto` recalls).
"""

from __future__ import annotations

from collections.abc import Callable

from callbridge.callcontrol.agents import AgentDesk
from callbridge.callcontrol.calls import Call, Leg
from callbridge.callcontrol.events import CallOffered, CallQueued
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.lifecycle import CallLifecycle
from callbridge.callcontrol.live import AgentRuntime, LiveState
from callbridge.callcontrol.ports import OriginateRequest, Ports
from callbridge.callcontrol.routing import serves
from callbridge.callcontrol.states import AgentInput, CallInput, LegInput


def _nothing_to_do(rt: AgentRuntime) -> None:
    """The default `agent_idle`."""


class Acd:
    def __init__(self, state: LiveState, ports: Ports, kernel: Kernel, agents: AgentDesk,
                 lifecycle: CallLifecycle) -> None:
        self._state = state
        self._ports = ports
        self._k = kernel
        self._agents = agents
        self._life = lifecycle
        self._calls = state.calls
        self._book = state.book
        self.agent_idle: Callable[[AgentRuntime], None] = _nothing_to_do
        """An available agent with no queue call to take (the service wires the outbound calls' recall dialer)."""

    def enqueue(self, call: Call, queue_name: str) -> None:
        k = self._k
        queue = k.queue(call.operation_id, queue_name)
        call.queue = queue_name
        call.queue_deadline = k.now() + queue.max_wait_seconds
        self._book.add(call.operation_id, queue_name, call.conn_id)
        k.history(call, "queued", queue_name)
        self._ports.records.save_call(call.record())
        k.emit(CallQueued(operation_id=call.operation_id, conn_id=call.conn_id, queue=queue_name,
                          customer_number=call.customer_number))
        conn_id = call.conn_id
        k.arm(f"queue:{conn_id}", queue.max_wait_seconds, lambda: self._queue_timeout(conn_id))
        self.dispatch(call)
        self._waits(call)

    def _waits(self, call: Call) -> None:
        """The call waits: an unanswered customer with no agent rung hears the queue's audio (b2bua/waiting.py), an
        answered one (requeued after a failed transfer) music while agents are rung (b2bua/hearing.py)."""
        customer = call.leg(call.customer_leg_id)
        if call.queue is not None and customer is not None and (
                (call.state == "queued" and customer.state in ("calling", "ringing")) or customer.state == "up"):
            self._ports.signalling.waiting(call.conn_id, customer.leg_id,
                                           self._k.queue(call.operation_id, call.queue))

    def _queue_timeout(self, conn_id: str) -> None:
        call = self._calls.get(conn_id)
        if call is not None and call.state == "queued":
            self.reject_waiting(call)

    def reject_waiting(self, call: Call) -> None:
        """Nobody took the call within the queue's limit: 480 with Retry-After (BYE if it was answered before)."""
        queue = self._k.queue(call.operation_id, call.queue or "")
        customer = call.leg(call.customer_leg_id)
        if customer is not None and customer.state in ("calling", "ringing"):
            self._life.leg_input(call, customer, LegInput.RELEASE, status=480, by="system")
            self._ports.signalling.reject(customer.leg_id, 480, queue.retry_after)
        else:
            self._life.release_leg(call, customer, 480)
        self._k.history(call, "queue_timeout", call.queue or "")
        self._life.end_call(call, "system", 480)

    def dispatch(self, call: Call) -> None:
        """Offer a waiting call to the longest-idle available agent of its queue, if there is one."""
        if call.state != "queued" or call.queue is None:
            return
        op = self._k.operation(call.operation_id)
        queue = call.queue
        find = self._agents.find

        def takes_calls(extension: str, idle_since: float) -> bool:
            rt = find(op.id, extension)  # as the directory has it now: still an agent of the queue?
            return (rt is not None and rt.available and rt.idle_since == idle_since
                    and serves(rt.agent.queues, op.default_queue, queue))

        best = self._state.idle.take(op.id, queue, takes_calls)
        if best is not None:
            self.offer(call, self._state.agents[(op.id, best)])

    def offer(self, call: Call, rt: AgentRuntime) -> None:
        k = self._k
        op = k.operation(call.operation_id)
        queue = k.queue(op.id, call.queue or "")
        customer = call.leg(call.customer_leg_id)
        assert customer is not None
        leg = self._life.add_leg(call, "agent", rt.extension, agent=rt.extension)
        self._life.call_input(call, CallInput.OFFER)
        call.agent_leg_id = leg.leg_id
        rt.conn_id, rt.leg_id = call.conn_id, leg.leg_id
        k.history(call, "offered", rt.extension)
        self._agents.input(rt, AgentInput.OFFER, "offered")
        offerless = customer.state == "up"  # an answered customer (requeued) has no offer pending: RFC 3725 flow I
        ring = queue.ring_timeout if queue.ring_timeout is not None else op.ring_timeout
        k.emit(CallOffered(operation_id=op.id, conn_id=call.conn_id, agent=rt.extension, leg_id=leg.leg_id,
                           customer_number=call.customer_number))
        self._life.originate(OriginateRequest(
            call.conn_id, leg.leg_id, op.id, "agent", rt.extension, caller_id=call.customer_number,
            offerless=offerless, offer_from_leg=None if offerless else customer.leg_id, timeout=ring), ring)

    def offer_failed(self, call: Call, leg: Leg) -> None:
        self._life.call_input(call, CallInput.OFFER_FAILED)
        call.agent_leg_id = None
        self._k.history(call, "offer_failed", leg.party)
        rt = self._agents.leg_over(call, leg, "no_answer", dispatch=False)
        if call.queue_deadline is not None and self._k.now() >= call.queue_deadline:
            self.reject_waiting(call)
        else:
            self.dispatch(call)
            self._waits(call)
        if rt is not None:
            self.agent_available(rt)

    def agent_available(self, rt: AgentRuntime) -> None:
        """The agent may take a call: the longest-waiting call of its queues, else whatever else waits for it."""
        if not rt.available:
            return
        op = self._k.operation(rt.operation_id)
        conn_id = self._book.oldest(op.id, self._agents.queues_of(rt, op), skip=self._state.offering)
        if conn_id is not None:
            self.offer(self._calls[conn_id], rt)
            return
        self._agents.index(rt)
        self.agent_idle(rt)
