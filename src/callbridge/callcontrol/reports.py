"""The adapter's reports: what the B2BUA tells the domain happened on the wire (`on_*`), and what follows.

An inbound call waits in its DID's queue; a leg that rings, answers, fails or ends moves its call (and its
transfer, when it is the transfer's target, the customer or the agent of a running transfer). The service binds
these methods as its own `on_*` methods, so an adapter's report reaches them without a further call.
"""

from __future__ import annotations

from callbridge.callcontrol.acd import Acd
from callbridge.callcontrol.agents import AgentDesk
from callbridge.callcontrol.calls import Call, Leg
from callbridge.callcontrol.errors import DidNotFound
from callbridge.callcontrol.events import CallAnswered, CallDtmf, CallMediaDirect
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.lifecycle import CallLifecycle
from callbridge.callcontrol.live import LiveState
from callbridge.callcontrol.outbound import OutboundCalls
from callbridge.callcontrol.ports import Ports
from callbridge.callcontrol.recordings import CallRecordings
from callbridge.callcontrol.records import LOGOUT, HangupBy
from callbridge.callcontrol.states import AgentInput, CallInput, LegInput
from callbridge.callcontrol.transfer_engine import TransferEngine
from callbridge.callcontrol.transfer_table import TransferInput


class AdapterReports:
    def __init__(self, state: LiveState, ports: Ports, kernel: Kernel, agents: AgentDesk, lifecycle: CallLifecycle,
                 acd: Acd, transfers: TransferEngine, outbound: OutboundCalls,
                 recordings: CallRecordings | None = None) -> None:
        self._ports = ports
        self._recordings = recordings or CallRecordings(state, ports)
        self._k = kernel
        self._agents = agents
        self._life = lifecycle
        self._acd = acd
        self._transfers = transfers
        self._outbound = outbound
        self._book = state.book
        self._calls = state.calls

    def on_inbound_call(self, operation_id: str, did: str, leg_id: str, from_number: str) -> str:
        """A trunk's INVITE to a DID: the call waits in the DID's queue. Raises DidNotFound (answer 404)."""
        op = self._ports.directory.get_operation(operation_id)
        route = self._ports.directory.get_did(operation_id, did) if op is not None else None
        if op is None or route is None:
            raise DidNotFound()
        call = self._life.new_call(op, "inbound", from_number, "queued")
        leg = self._life.add_leg(call, "customer", from_number, leg_id=leg_id)
        call.customer_leg_id = leg.leg_id
        self._k.history(call, "inbound", did)
        self._acd.enqueue(call, route.queue)
        return call.conn_id


    def on_media_direct(self, conn_id: str, reason: str) -> None:
        """The adapter carries this call's media directly although its operation anchors media (no relay up)."""
        call = self._calls.get(conn_id)
        if call is not None:
            self._k.emit(CallMediaDirect(operation_id=call.operation_id, conn_id=conn_id, reason=reason))

    def on_dtmf(self, conn_id: str, leg_id: str, digit: str, duration_ms: int) -> None:
        """A DTMF digit in the media of one of the call's legs (the relay saw it)."""
        call = self._calls.get(conn_id)
        leg = call.leg(leg_id) if call is not None else None
        if call is not None and leg is not None and leg.state != "ended":
            self._k.emit(CallDtmf(operation_id=call.operation_id, conn_id=conn_id, leg_id=leg_id, leg=leg.role,
                                  digit=digit, duration_ms=duration_ms))

    def on_media_timeout(self, conn_id: str, leg_id: str) -> None:
        """The relay received no RTP from `leg_id` for the media timeout: the call is over (every leg released,
        the CDR's end_reason "media_timeout", the agents freed as after any hang-up)."""
        call = self._calls.get(conn_id)
        if call is None or call.state == "ended":
            return
        run = self._transfers.of(call)
        if run is not None:
            self._transfers.input(run, TransferInput.CUSTOMER_HANGUP)  # every leg goes: the transfer with them
        self._k.history(call, "media_timeout", leg_id)
        self._life.end_call(call, "system", None, "media_timeout")

    def on_relay_lost(self, conn_id: str) -> None:
        """The relay carrying the call's media went down and the call could not be moved to another one: the call
        is over (every leg released, the CDR's end_reason "relay_lost", the agents freed as after any hang-up)."""
        call = self._calls.get(conn_id)
        if call is None or call.state == "ended":
            return
        run = self._transfers.of(call)
        if run is not None:
            self._transfers.input(run, TransferInput.CUSTOMER_HANGUP)  # every leg goes: the transfer with them
        self._k.history(call, "relay_lost")
        self._life.end_call(call, "system", None, "relay_lost")

    def on_leg_ringing(self, leg_id: str) -> None:
        found = self._life.lookup_leg(leg_id)
        if found is None or found[1].state == "ended":
            return
        call, leg = found
        self._life.leg_input(call, leg, LegInput.RING)
        run = self._transfers.of(call)
        if run is not None and run.record.target_leg_id == leg_id:
            self._transfers.input(run, TransferInput.TARGET_RINGING)

    def on_leg_answered(self, leg_id: str) -> None:
        found = self._life.lookup_leg(leg_id)
        if found is None or found[1].state not in ("calling", "ringing"):
            return  # answered after release: the adapter hangs it up
        call, leg = found
        self._life.leg_input(call, leg, LegInput.ANSWER)
        run = self._transfers.of(call)
        if run is not None and run.record.target_leg_id == leg_id:
            self._transfers.input(run, TransferInput.TARGET_ANSWERED)
        elif call.state == "offering" and leg_id == call.agent_leg_id:
            self._connect(call, leg, leg)
        elif call.state == "dialing" and leg_id == call.agent_leg_id:
            self._agents.answered(call, leg)
            if call.customer_leg_id is None:
                self._outbound.call_customer(call, leg)
        elif call.state == "dialing" and leg_id == call.customer_leg_id:
            agent_leg = call.leg(call.agent_leg_id)
            assert agent_leg is not None
            self._connect(call, agent_leg, leg)

    def _connect(self, call: Call, agent_leg: Leg, answered: Leg) -> None:
        """Bridge the customer with the agent side; a leg still ringing in is answered by the bridge."""
        customer = call.leg(call.customer_leg_id)
        assert customer is not None
        self._ports.signalling.bridge(customer.leg_id, agent_leg.leg_id)
        call.agent = agent_leg.agent
        for leg in (customer, agent_leg):
            if leg.state in ("calling", "ringing"):
                self._life.leg_input(call, leg, LegInput.ANSWER)
            self._agents.answered(call, leg)
        self._book.remove(call.conn_id)
        self._k.disarm(f"queue:{call.conn_id}")
        self._life.call_input(call, CallInput.CONNECT)
        if call.answered_at is None:
            call.answered_at = self._k.now()
            self._recordings.answered(call)
        self._k.history(call, "answered", answered.party)
        self._ports.records.save_call(call.record())
        self._k.emit(CallAnswered(operation_id=call.operation_id, conn_id=call.conn_id, agent=call.agent,
                                leg_id=answered.leg_id))

    def on_leg_failed(self, leg_id: str, sip_status: int | None) -> None:
        """A leg this side originated got a final error (or no response: `sip_status` None)."""
        found = self._life.lookup_leg(leg_id)
        if found is None or found[1].state not in ("calling", "ringing"):
            return
        call, leg = found
        self._life.leg_input(call, leg, LegInput.FAIL, status=sip_status, by=leg.role)
        run = self._transfers.of(call)
        if run is not None and run.record.target_leg_id == leg_id:
            self._transfers.input(run, TransferInput.TARGET_FAILED, sip_status)
        else:
            self._life.after_leg_failure(call, leg, sip_status)

    def on_leg_ended(self, leg_id: str, by: HangupBy | None = None) -> None:
        """The leg's party hung up (BYE, or CANCEL of an incoming INVITE); `by` overrides who, e.g. "system" for a
        session timer that expired."""
        found = self._life.lookup_leg(leg_id)
        if found is None or found[1].state == "ended":
            return
        call, leg = found
        who: HangupBy = by or leg.role
        self._life.leg_input(call, leg, LegInput.END, by=who)
        run = self._transfers.of(call)
        if run is not None:
            if leg_id == call.customer_leg_id:
                self._transfers.input(run, TransferInput.CUSTOMER_HANGUP)
                self._life.end_call(call, who, None)
            elif leg_id == run.record.target_leg_id:
                consulting = run.record.state == "consulting"
                self._transfers.input(run, TransferInput.TARGET_HANGUP if consulting else TransferInput.TARGET_FAILED)
            elif leg_id == call.agent_leg_id:
                self._agents.leg_over(call, leg, "hangup")
                self._transfers.input(run, TransferInput.AGENT_HANGUP)
            return
        if call.state == "offering" and leg_id == call.agent_leg_id:
            self._acd.offer_failed(call, leg)
        elif leg_id in (call.customer_leg_id, call.agent_leg_id):
            self._life.end_call(call, who, None)

    def on_registration_changed(self, operation_id: str, extension: str, registered: bool) -> None:
        """Whether the agent has at least one live registration; losing the last one logs the agent out."""
        rt = self._agents.find(operation_id, extension)
        if rt is None:
            return
        rt.registered = registered
        if not registered and rt.state != LOGOUT:
            self._agents.input(rt, AgentInput.REGISTRATION_LOST, "registration_lost")
        elif registered:  # available now, maybe: a call waiting in its queues is offered at once (a takeover's
            self._acd.agent_available(rt)  # requeued customer, a ready agent whose phone registers again)
