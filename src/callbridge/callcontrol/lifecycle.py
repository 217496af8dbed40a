"""The life of calls and legs: created, moved through their tables (`states`), released, and ended with a CDR.

Ordering rule that the tests pin down: a call's legs are released before the agents on them are freed, so an agent
freed by the end of a call is never offered the call that is ending.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from callbridge.callcontrol.agents import AgentDesk
from callbridge.callcontrol.calls import Call, Leg
from callbridge.callcontrol.directory import Operation
from callbridge.callcontrol.events import CallEnded
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.live import LiveState, keep
from callbridge.callcontrol.ports import OriginateRequest, Ports
from callbridge.callcontrol.records import CallDirection, CallState, Cdr, EndReason, HangupBy, LegRole
from callbridge.callcontrol.states import CallInput, LegAction, LegInput, call_transition, leg_transition

if TYPE_CHECKING:
    from callbridge.callcontrol.acd import Acd


def _nothing(call: Call) -> None:
    """The default `call_ended`."""


class CallLifecycle:
    acd: Acd  # wired by the service: an offer that fails goes back to the ACD

    def __init__(self, state: LiveState, ports: Ports, kernel: Kernel, agents: AgentDesk) -> None:
        self._state = state
        self._ports = ports
        self._k = kernel
        self._agents = agents
        self._calls = state.calls
        self._leg_calls = state.leg_calls
        self.call_ended: Callable[[Call], None] = _nothing
        """The call ended (its CDR written): the service hangs up a supervisor listening to it (monitor.py)."""

    def new_call(self, op: Operation, direction: CallDirection, customer_number: str, state: CallState) -> Call:
        call = Call(self._state.ids("c"), op.id, direction, customer_number, self._k.now(),
                    node_id=self._state.node_id, state=state)
        self._calls[call.conn_id] = call
        return call

    def add_leg(self, call: Call, role: LegRole, party: str, *, agent: str | None = None,
                leg_id: str | None = None) -> Leg:
        leg = Leg(leg_id or self._state.ids("l"), call.conn_id, role, party, agent=agent, created_at=self._k.now())
        call.legs[leg.leg_id] = leg
        self._leg_calls[leg.leg_id] = call.conn_id
        self._ports.records.save_leg(leg.record())
        return leg

    def lookup_leg(self, leg_id: str) -> tuple[Call, Leg] | None:
        conn_id = self._leg_calls.get(leg_id)
        call = self._calls.get(conn_id) if conn_id else None
        return None if call is None else (call, call.legs[leg_id])

    def leg_input(self, call: Call, leg: Leg, event: LegInput, *, status: int | None = None,
                  by: HangupBy | None = None) -> LegAction:
        action, nxt = leg_transition(leg.state, event)
        now = self._k.now()
        leg.state = nxt
        if nxt == "up" and leg.answered_at is None:
            leg.answered_at = now
        if nxt == "ended":
            leg.ended_at = now
            leg.sip_status = status
            leg.ended_by = by
            self._k.disarm(f"ring:{leg.leg_id}")
        self._ports.records.save_leg(leg.record())
        return action

    def release_leg(self, call: Call, leg: Leg | None, cause: int | None = None, *, by: HangupBy = "system",
                    action_id: str | None = None) -> None:
        if leg is None or leg.state == "ended":
            return
        self.leg_input(call, leg, LegInput.RELEASE, status=cause, by=by)
        self._ports.signalling.release(leg.leg_id, cause, action_id)

    @staticmethod
    def call_input(call: Call, event: CallInput) -> None:
        _, call.state = call_transition(call.state, event)

    def originate(self, request: OriginateRequest, ring_timeout: float | None) -> None:
        if ring_timeout is not None:
            leg_id = request.leg_id  # the timer keeps the id only: a cancelled timer lingers in the loop until due
            self._k.arm(f"ring:{leg_id}", ring_timeout, lambda: self._ring_timeout(leg_id))
        self._ports.signalling.originate(request)

    def _ring_timeout(self, leg_id: str) -> None:
        found = self.lookup_leg(leg_id)
        if found is None or found[1].state not in ("calling", "ringing"):
            return
        call, leg = found
        self.release_leg(call, leg, 408)
        self.after_leg_failure(call, leg, 408)

    def after_leg_failure(self, call: Call, leg: Leg, status: int | None) -> None:
        """A leg this side originated ended without an answer (a final error, or its ring timer)."""
        if call.state == "offering" and leg.leg_id == call.agent_leg_id:
            self.acd.offer_failed(call, leg)
        elif call.state == "dialing":
            self.end_call(call, "agent" if leg.role == "agent" else "customer", status)

    def end_call(self, call: Call, by: HangupBy, cause: int | None, reason: EndReason | None = None) -> None:
        """Finish the call: release what is still up, write the CDR (with `reason`, why callbridge ended it, if
        it did for a known reason), then free its agents."""
        if call.state == "ended":
            return
        self.call_input(call, CallInput.END)
        self._state.book.remove(call.conn_id)
        self._k.disarm(f"queue:{call.conn_id}")
        call.ended_at, call.hangup_by, call.sip_cause = self._k.now(), by, cause
        for leg in call.legs.values():
            self.release_leg(call, leg, by=by)
        self._k.history(call, "ended", by)
        records = self._ports.records
        records.save_call(call.record())
        assert call.ended_at is not None
        records.save_cdr(Cdr(
            call.conn_id, call.operation_id, call.node_id, call.direction, call.customer_number, call.queue,
            tuple(call.agents), call.created_at, call.answered_at, call.ended_at, by, cause, call.transfer_count,
            tuple(leg.record() for leg in call.legs.values()), call.related_conn_id, reason))
        del self._calls[call.conn_id]
        for leg_id in call.legs:
            self._leg_calls.pop(leg_id, None)
        keep(self._state.ended_calls, call.conn_id, call)
        self._k.emit(CallEnded(operation_id=call.operation_id, conn_id=call.conn_id, hangup_by=by, sip_cause=cause,
                               end_reason=reason))
        self.call_ended(call)
        for leg in call.legs.values():
            self._agents.leg_over(call, leg, "call_end")
