"""Calls this side places: `dial`/`aux_call`/`recall` (the agent's phone first, then the customer through the trunk),
an agent's own outgoing call (`on_agent_call`), and the recalls' timers.

A dial (and an aux_call, and an `auto` recall) is two steps, third party call control as RFC 3725 §4.3 (flow III)
does it toward the agent's phone:
1. an offer-less INVITE with an auto-answer hint (`Call-Info: <sip:callbridge>;answer-after=0`) rings the agent,
   whose phone answers at once with its offer in the 200;
2. that 200 is ACKed at once with an answer that sends no media (RFC 3264 §6: the same m-lines, one codec of the
   offer, `a=inactive`, RFC 3725's black-hole address), and the customer is called through the trunk with the
   agent's offer (a carrier may refuse an INVITE without one, so not flow III's offer-less INVITE to B); when the
   customer answers, its 200 is ACKed and the agent's phone is re-INVITEd with the customer's answer as the next
   version of the session it already has (same `o=` session id, version + 1, RFC 3264 §8), and ACKed in turn.
Why not flow I (ACK the agent's 200 only with the customer's answer): the customer may ring for the whole dial
timeout (the operation's `dial_timeout`, 45 s by default), but the phone retransmits an un-ACKed 200 for 64*T1
(32 s) only and then hangs up (RFC 3261 §13.3.1.4); RFC 3725 §4.1 keeps flow I for a party that answers at once, and §5
recommends flow IV (or III) otherwise. Flow IV would send the agent's phone an offer without media first, which an
auto-answering phone may refuse; flow III's first step is the offer-less INVITE phones already take. The SIP side of
this is `b2bua.bridge.park` and `connect`. Customer failures (busy, no answer, trunk refusal) end the call and
release the agent's leg with a BYE; the agent hanging up while the customer rings CANCELs the customer.
The agent's leg starts the call (`OriginateRequest.new_call`): the adapter decides there whether its media is
anchored on a relay, as for a customer's call; an operation that refuses calls while no relay is up answers the
verb CALL_CONTROL_UNAVAILABLE (`accepts_new_calls(operation_id)`), and a due `auto` recall then stays due.

A due `auto` recall dials as soon as its agent is available (after the calls waiting in the agent's queues); a
`manual` one is announced with a RecallDue event.
"""

from __future__ import annotations

from dataclasses import replace

from callbridge.callcontrol.acd import Acd
from callbridge.callcontrol.agents import AgentDesk
from callbridge.callcontrol.calls import Call, Leg
from callbridge.callcontrol.commands import check_number
from callbridge.callcontrol.directory import Operation, Trunk
from callbridge.callcontrol.errors import (
    AlreadyOnCall,
    NumberNotAllowed,
    TargetNotAvailable,
)
from callbridge.callcontrol.events import CallDialing, RecallDue
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.lifecycle import CallLifecycle
from callbridge.callcontrol.live import AgentRuntime, LiveState
from callbridge.callcontrol.ports import OriginateRequest, Ports
from callbridge.callcontrol.records import Recall
from callbridge.callcontrol.states import AgentInput, is_busy


class OutboundCalls:
    def __init__(self, state: LiveState, ports: Ports, kernel: Kernel, agents: AgentDesk,
                 lifecycle: CallLifecycle, acd: Acd) -> None:
        self._state = state
        self._ports = ports
        self._k = kernel
        self._agents = agents
        self._life = lifecycle
        self._calls = state.calls
        self._recalls = state.recalls
        acd.agent_idle = self.agent_idle

    # --- recalls ----------------------------------------------------------------------------------------------

    def restore(self) -> None:
        """At start-up: schedule the recalls stored and not yet done."""
        for recall in self._ports.recalls.pending_recalls():
            if recall.state in ("pending", "due"):
                self.schedule_recall(recall)

    def schedule_recall(self, recall: Recall) -> None:
        self._recalls[recall.id] = recall
        rid = recall.id
        self._k.arm(f"recall:{rid}", recall.due_at - self._k.now(), lambda: self._recall_due(rid))

    def _recall_due(self, recall_id: str) -> None:
        recall = self._recalls[recall_id]
        self._k.emit(RecallDue(operation_id=recall.operation_id, recall_id=recall.id, agent=recall.agent,
                             customer_phone=recall.customer_phone, type_recall=recall.type_recall))
        if recall.type_recall == "manual":
            self._set_recall(replace(recall, state="notified"))
            del self._recalls[recall_id]
            return
        self._set_recall(replace(recall, state="due"))
        rt = self._agents.find(recall.operation_id, recall.agent)
        if rt is not None and rt.available:
            self.agent_idle(rt)

    def _set_recall(self, recall: Recall) -> None:
        self._recalls[recall.id] = recall
        self._ports.recalls.save_recall(recall)

    def agent_idle(self, rt: AgentRuntime) -> None:
        if not self._ports.signalling.accepts_new_calls(rt.operation_id):
            return  # draining, or the operation refuses calls while its media relay is down: still due, later
        due = sorted((r for r in self._recalls.values() if r.state == "due" and r.operation_id == rt.operation_id
                      and r.agent == rt.extension), key=lambda r: r.due_at)
        for recall in due:
            try:
                trunk, dialled = self._k.resolve_number(recall.operation_id, recall.customer_phone)
            except NumberNotAllowed:
                continue
            call = self.start_dial(self._k.operation(rt.operation_id), rt, recall.customer_phone, dialled, trunk)
            del self._recalls[recall.id]
            self._ports.recalls.save_recall(replace(recall, state="dialled", conn_id=call.conn_id))
            return

    # --- dialling ---------------------------------------------------------------------------------------------

    def start_dial(self, op: Operation, rt: AgentRuntime, customer_phone: str, dialled: str,
                    trunk: Trunk) -> Call:
        call = self._life.new_call(op, "outbound", customer_phone, "dialing")
        call.dialled_number, call.trunk = dialled, trunk.name
        leg = self._life.add_leg(call, "agent", rt.extension, agent=rt.extension)
        call.agent_leg_id, call.agent = leg.leg_id, rt.extension
        rt.conn_id, rt.leg_id = call.conn_id, leg.leg_id
        self._k.history(call, "dialing", f"{rt.extension} -> {customer_phone}")
        self._ports.records.save_call(call.record())
        self._agents.input(rt, AgentInput.DIAL, "dial")
        self._k.emit(CallDialing(operation_id=op.id, conn_id=call.conn_id, agent=rt.extension,
                               customer_number=customer_phone))
        self._life.originate(OriginateRequest(call.conn_id, leg.leg_id, op.id, "agent", rt.extension,
                                         caller_id=customer_phone, offerless=True, auto_answer=True,
                                         timeout=op.ring_timeout, new_call=True), op.ring_timeout)
        return call

    def call_customer(self, call: Call, agent_leg: Leg) -> None:
        """dial: the agent's phone answered (or the agent's own INVITE came in): now ring the customer."""
        op = self._k.operation(call.operation_id)
        trunk = self._k.trunk(op.id, call.trunk)
        leg = self._life.add_leg(call, "customer", call.customer_number)
        call.customer_leg_id = leg.leg_id
        caller_id = (trunk.caller_id_number if trunk else "") or agent_leg.party
        self._life.originate(OriginateRequest(call.conn_id, leg.leg_id, op.id, "trunk", call.dialled_number,
                                         caller_id=caller_id, trunk=call.trunk, offer_from_leg=agent_leg.leg_id,
                                         timeout=op.dial_timeout), op.dial_timeout)

    def on_agent_call(self, operation_id: str, extension: str, leg_id: str, dialled: str) -> str:
        """An agent's phone calls out: another agent's extension, or a number through the trunk.

        An agent already talking to a customer may place one more call: a consultation (the phone holds the
        customer itself). It is a call of its own, linked to the first by `related_conn_id`, and does not move the
        agent's state; a REFER with Replaces then completes an attended transfer (`on_refer_replaces`).

        Raises AgentNotLoggedIn/AlreadyOnCall (answer 403/486), TargetNotAvailable (486), NumberNotAllowed (403).
        """
        check_number(dialled, "dialled")
        op, rt = self._agents.require_logged_in(operation_id, extension)
        consult_of: Call | None = None
        if rt.conn_id is not None or is_busy(rt.state):
            consult_of = self._consultable(rt)
        target_rt = self._agents.find(op.id, dialled)
        if target_rt is not None and not target_rt.available:
            raise TargetNotAvailable()
        trunk: Trunk | None = None
        number = dialled
        if target_rt is None:
            trunk, number = self._k.resolve_number(op.id, dialled)
        call = self._life.new_call(op, "internal" if target_rt else "outbound", dialled, "dialing")
        call.dialled_number, call.trunk = number, trunk.name if trunk else None
        agent_leg = self._life.add_leg(call, "agent", rt.extension, agent=rt.extension, leg_id=leg_id)
        call.agent_leg_id, call.agent = agent_leg.leg_id, rt.extension
        if consult_of is None:
            rt.conn_id, rt.leg_id = call.conn_id, agent_leg.leg_id
            self._k.history(call, "agent_call", f"{rt.extension} -> {dialled}")
        else:
            call.related_conn_id = consult_of.conn_id
            call.agents.append(rt.extension)
            self._k.history(call, "consult_call", f"{rt.extension} -> {dialled}, for {consult_of.conn_id}")
        self._ports.records.save_call(call.record())
        if consult_of is None:
            self._agents.input(rt, AgentInput.DIAL, "dial")
        self._k.emit(CallDialing(operation_id=op.id, conn_id=call.conn_id, agent=rt.extension, customer_number=dialled))
        if target_rt is None:
            self.call_customer(call, agent_leg)
        else:
            leg = self._life.add_leg(call, "customer", dialled, agent=dialled)
            call.customer_leg_id = leg.leg_id
            target_rt.conn_id, target_rt.leg_id = call.conn_id, leg.leg_id
            self._agents.input(target_rt, AgentInput.OFFER, "agent_call")
            self._life.originate(OriginateRequest(call.conn_id, leg.leg_id, op.id, "agent", dialled,
                                             caller_id=rt.extension, caller_name=rt.agent.name,
                                             offer_from_leg=agent_leg.leg_id, timeout=op.ring_timeout),
                            op.ring_timeout)
        return call.conn_id

    def _consultable(self, rt: AgentRuntime) -> Call:
        """The call an agent may consult from: connected, the agent's leg up, no transfer or consultation running."""
        call = self._calls.get(rt.conn_id) if rt.conn_id else None
        leg = call.leg(rt.leg_id) if call is not None else None
        if (call is None or leg is None or call.state != "connected" or call.agent_leg_id != leg.leg_id
                or leg.state != "up" or call.transfer_id is not None):
            raise AlreadyOnCall()
        if any(c.related_conn_id == call.conn_id and c.state != "ended" for c in self._calls.values()):
            raise AlreadyOnCall()  # one consultation at a time
        return call

