"""The transfer engine: performs the actions of the transfer table (`transfer_table`) on calls, legs and agents.

Every input goes through the table, `(kind, state, input) -> (action, next state)`; the engine performs the action
and writes the table's next state into the record, the REFER with Replaces path included: no step of the engine
names a state of its own. Every step writes a new snapshot of the transfer record and publishes one event. The
engine never drops the customer on a failure: back to the agent when the agent's leg is up, else into the call's
queue (or the operation's default queue); only an operation with no queue at all leaves nowhere to go, and then
the customer gets 480.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from callbridge.callcontrol.acd import Acd
from callbridge.callcontrol.agents import AgentDesk
from callbridge.callcontrol.calls import Call
from callbridge.callcontrol.directory import Operation, Trunk
from callbridge.callcontrol.errors import (
    CallControlUnavailable,
    NoActiveCall,
    TargetNotAvailable,
    TransferInProgress,
    TransferLimit,
)
from callbridge.callcontrol.events import (
    TransferAnswered,
    TransferCancelled,
    TransferCompleted,
    TransferCreated,
    TransferFailed,
    TransferRinging,
)
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.lifecycle import CallLifecycle
from callbridge.callcontrol.live import AgentRuntime, LiveState, TransferRun, keep
from callbridge.callcontrol.ports import OriginateRequest, Ports
from callbridge.callcontrol.records import TargetKind, TransferKind, TransferRecord, TransferState
from callbridge.callcontrol.states import AgentInput, CallInput
from callbridge.callcontrol.transfer_table import (
    NO_ANSWER_CAUSE,
    TransferAction,
    TransferInput,
    outcome_for_status,
    transfer_transition,
)

_X = TransferAction


class TransferEngine:
    def __init__(self, state: LiveState, ports: Ports, kernel: Kernel, agents: AgentDesk, lifecycle: CallLifecycle,
                 acd: Acd) -> None:
        self._state = state
        self._ports = ports
        self._k = kernel
        self._agents = agents
        self._life = lifecycle
        self._acd = acd
        self._calls = state.calls
        self._transfers = state.transfers

    def begin(self, op: Operation, call: Call, rt: AgentRuntime, kind: TransferKind, target: str,
              target_kind: TargetKind, dialled: str, trunk: Trunk | None, timeout: float) -> TransferRecord:
        """Create the record of a validated transfer and START it."""
        now = self._k.now()
        record = TransferRecord(self._state.ids("t"), call.conn_id, op.id, kind, rt.extension, target, target_kind,
                                "created", now, now, dialled=dialled, timeout=timeout)
        run = self._create(record, trunk.name if trunk else None)
        self.input(run, TransferInput.START)
        return run.record

    def _create(self, record: TransferRecord, trunk: str | None) -> TransferRun:
        run = TransferRun(record, trunk)
        self._transfers[record.id] = run
        self._ports.records.save_transfer(record)
        self._k.emit(TransferCreated(operation_id=record.operation_id, transfer_id=record.id,
                                     conn_id=record.conn_id, kind=record.kind, agent=record.agent,
                                     target=record.target, target_kind=record.target_kind))
        return run

    def of(self, call: Call) -> TransferRun | None:
        """The call's running transfer."""
        return self._transfers.get(call.transfer_id) if call.transfer_id else None

    def _update(self, run: TransferRun, **changes: Any) -> None:
        run.record = replace(run.record, updated_at=self._k.now(), **changes)
        if run.record.finished:
            run.record = replace(run.record, ended_at=run.record.updated_at)
        self._ports.records.save_transfer(run.record)
        if run.record.finished:
            self._k.disarm(f"transfer:{run.record.id}")
            self._transfers.pop(run.record.id, None)
            keep(self._state.finished_transfers, run.record.id, run.record)

    def input(self, run: TransferRun, event: TransferInput, status: int | None = None) -> None:
        """Apply the table's move for `event`: its action, and the next state it gives."""
        rec = run.record
        action, nxt = transfer_transition(rec.kind, rec.state, event)
        call = self._calls[rec.conn_id]
        if action is _X.HOLD_AND_RING:
            self._hold_and_ring(run, call, nxt)
        elif action is _X.REPORT_RINGING:
            self._update(run, state=nxt)
            self._k.emit(TransferRinging(**self._ids_of(run)))
        elif action is _X.CONNECT_AGENT_TO_TARGET:
            self._connect_agent_to_target(run, call, nxt)
        elif action is _X.CONNECT_CUSTOMER_TO_TARGET:
            self._connect_customer_to_target(run, call, nxt)
        elif action is _X.RETURN_CUSTOMER:
            self._return_customer(run, call, event, status, nxt)
        elif action is _X.RECONNECT_AGENT:
            self._reconnect_agent(run, call, event, nxt)
        elif action is _X.RELEASE_ALL:
            self._release_target(run, call, None)
            call.transfer_id = None
            self._finish_failed(run, nxt, "customer_hangup", None)
        elif action is _X.ADOPT_CONSULTATION:
            self._adopt_consultation(run, call, nxt)
        elif action is _X.NONE and event is TransferInput.AGENT_HANGUP:
            self._k.history(call, "transfer_agent_left", rec.agent)

    @staticmethod
    def _ids_of(run: TransferRun) -> dict[str, Any]:
        rec = run.record
        return {"operation_id": rec.operation_id, "transfer_id": rec.id, "conn_id": rec.conn_id, "kind": rec.kind}

    # --- actions ----------------------------------------------------------------------------------------------

    def _hold_and_ring(self, run: TransferRun, call: Call, nxt: TransferState) -> None:
        rec = run.record
        k, life = self._k, self._life
        life.call_input(call, CallInput.TRANSFER_START)
        call.transfer_id = rec.id
        k.history(call, "transfer_started", f"{rec.kind} {rec.target}")
        if not call.held and call.customer_leg_id:
            self._ports.signalling.hold(call.customer_leg_id, self._state.ids("a"))
        is_agent = rec.target_kind == "agent"
        leg = life.add_leg(call, "target", rec.target if is_agent else rec.dialled,
                           agent=rec.target if is_agent else None)
        if is_agent:
            target_rt = self._state.agents[(call.operation_id, rec.target)]
            target_rt.conn_id, target_rt.leg_id = call.conn_id, leg.leg_id
            self._agents.input(target_rt, AgentInput.OFFER, "transfer_offered")
        self._update(run, state=nxt, target_leg_id=leg.leg_id)
        trunk = k.trunk(call.operation_id, run.trunk)
        caller_id = call.customer_number
        if trunk is not None and trunk.caller_id_policy == "agent":
            caller_id = rec.agent
        elif trunk is not None and trunk.caller_id_policy == "fixed" and trunk.caller_id_number:
            caller_id = trunk.caller_id_number
        tid = rec.id
        k.arm(f"transfer:{tid}", rec.timeout, lambda: self._timeout(tid))
        self._ports.signalling.originate(OriginateRequest(
            call.conn_id, leg.leg_id, call.operation_id, "agent" if is_agent else "trunk",
            rec.target if is_agent else rec.dialled, caller_id=caller_id, trunk=run.trunk, offerless=True,
            timeout=rec.timeout, diverted_from=rec.agent))

    def _timeout(self, transfer_id: str) -> None:
        run = self._transfers.get(transfer_id)
        if run is not None and run.record.state in ("trying", "ringing"):
            self.input(run, TransferInput.TIMEOUT)

    def _connect_agent_to_target(self, run: TransferRun, call: Call, nxt: TransferState) -> None:
        self._k.disarm(f"transfer:{run.record.id}")
        target = call.leg(run.record.target_leg_id)
        assert target is not None
        self._agents.answered(call, target)
        self._update(run, state=nxt)
        self._k.emit(TransferAnswered(**self._ids_of(run)))
        self._k.history(call, "transfer_consulting", run.record.target)
        agent_leg = call.leg(call.agent_leg_id)
        if agent_leg is not None and agent_leg.state == "up":
            self._ports.signalling.bridge(agent_leg.leg_id, target.leg_id)
        else:  # the agent left while the target rang: nothing to consult, complete at once
            self.input(run, TransferInput.AGENT_HANGUP)

    def _connect_customer_to_target(self, run: TransferRun, call: Call, nxt: TransferState) -> None:
        rec = run.record
        k = self._k
        k.disarm(f"transfer:{rec.id}")
        target = call.leg(rec.target_leg_id)
        customer = call.leg(call.customer_leg_id)
        assert target is not None and customer is not None
        if rec.kind == "blind":
            self._agents.answered(call, target)
            k.emit(TransferAnswered(**self._ids_of(run)))
        self._ports.signalling.bridge(customer.leg_id, target.leg_id)
        agent_leg = call.leg(call.agent_leg_id)
        call.agent_leg_id, call.agent = target.leg_id, target.agent
        if target.agent and target.agent not in call.agents:
            call.agents.append(target.agent)
        call.transfer_count += 1
        call.held = call.muted = False
        call.transfer_id = None
        self._life.call_input(call, CallInput.TRANSFER_END)
        k.history(call, "transfer_completed", rec.target)
        self._ports.records.save_call(call.record())
        self._life.release_leg(call, agent_leg)
        self._update(run, state=nxt, outcome="completed")
        k.emit(TransferCompleted(**self._ids_of(run)))
        to_ready = k.operation(call.operation_id).after_transfer_state == "ready"
        self._agents.leg_over(call, agent_leg, "transferred", to_ready=to_ready)

    def _release_target(self, run: TransferRun, call: Call, cause: int | None) -> None:
        target = call.leg(run.record.target_leg_id)
        self._life.release_leg(call, target, cause)
        self._agents.leg_over(call, target, "transfer_ended")

    def _return_customer(self, run: TransferRun, call: Call, event: TransferInput, status: int | None,
                         nxt: TransferState) -> None:
        k, life = self._k, self._life
        if event is TransferInput.TIMEOUT:
            cause: int | None = NO_ANSWER_CAUSE
            outcome = "no_answer"
        elif event is TransferInput.CANCEL:
            cause, outcome = 487, "cancelled"
        else:
            cause, outcome = status, outcome_for_status(status)
        self._release_target(run, call, cause)
        call.transfer_id = None
        agent_leg = call.leg(call.agent_leg_id)
        customer = call.leg(call.customer_leg_id)
        requeue_to: str | None = None
        if agent_leg is not None and agent_leg.state == "up":
            life.call_input(call, CallInput.TRANSFER_END)
            if customer is not None:
                self._ports.signalling.unhold(customer.leg_id, self._state.ids("a"))
            call.held = False
            k.history(call, "transfer_" + ("cancelled" if event is TransferInput.CANCEL else "failed"), outcome)
        else:  # the agent left mid-transfer: the customer goes to a queue, never to nothing
            life.call_input(call, CallInput.REQUEUE)
            call.agent_leg_id = call.agent = None
            requeue_to = call.queue or k.operation(call.operation_id).default_queue
            k.history(call, "transfer_failed", f"{outcome}, requeued to {requeue_to}")
        if event is TransferInput.CANCEL:
            self._update(run, state=nxt, outcome="cancelled", sip_cause=cause)
            k.emit(TransferCancelled(**self._ids_of(run)))
        else:
            self._finish_failed(run, nxt, outcome, cause, requeued=requeue_to is not None)
        if agent_leg is None or agent_leg.state != "up":
            if requeue_to is not None:
                self._acd.enqueue(call, requeue_to)
            else:
                life.release_leg(call, customer, 480)
                life.end_call(call, "system", 480)

    def _reconnect_agent(self, run: TransferRun, call: Call, event: TransferInput, nxt: TransferState) -> None:
        self._release_target(run, call, None)
        agent_leg = call.leg(call.agent_leg_id)
        if call.customer_leg_id and agent_leg is not None:
            self._ports.signalling.bridge(call.customer_leg_id, agent_leg.leg_id)
        call.held = False
        call.transfer_id = None
        self._life.call_input(call, CallInput.TRANSFER_END)
        if event is TransferInput.CANCEL:
            self._k.history(call, "transfer_cancelled", run.record.target)
            self._update(run, state=nxt, outcome="cancelled")
            self._k.emit(TransferCancelled(**self._ids_of(run)))
        else:
            self._k.history(call, "transfer_failed", "target_hangup")
            self._finish_failed(run, nxt, "target_hangup", None)

    def _finish_failed(self, run: TransferRun, nxt: TransferState, outcome: Any, cause: int | None, *,
                       requeued: bool = False) -> None:
        self._update(run, state=nxt, outcome=outcome, sip_cause=cause, customer_requeued=requeued)
        self._k.emit(TransferFailed(**self._ids_of(run), outcome=outcome, sip_cause=cause,
                                    customer_requeued=requeued))

    def _adopt_consultation(self, run: TransferRun, call: Call, nxt: TransferState) -> None:
        """REFER with Replaces: the consulted party's leg leaves the consultation call for the customer's call."""
        found = self._life.lookup_leg(run.record.target_leg_id or "")
        assert found is not None
        consult, far = found
        del consult.legs[far.leg_id]
        consult.customer_leg_id = None
        far.role, far.conn_id = "target", call.conn_id
        call.legs[far.leg_id] = far
        self._state.leg_calls[far.leg_id] = call.conn_id
        self._ports.records.save_leg(far.record())
        target_rt = self._state.agents.get((call.operation_id, far.agent)) if far.agent else None
        if target_rt is not None and target_rt.leg_id == far.leg_id:
            target_rt.conn_id = call.conn_id
        self._life.call_input(call, CallInput.TRANSFER_START)
        call.transfer_id = run.record.id
        self._k.history(call, "transfer_started", f"attended {far.party} (on the phone)")
        self._update(run, state=nxt)

    # --- transfers made on the agent's phone ------------------------------------------------------------------

    def on_refer_replaces(self, leg_id: str, replaced_leg_id: str) -> TransferRecord:
        """An attended transfer made on the agent's phone: a consultation call (see `on_agent_call`), then a REFER
        with Replaces naming the other of the agent's two dialogs (either may carry the REFER).

        The consulted party's leg moves into the customer's call, which is bridged to it; the agent's two legs are
        released and the consultation call ends. Raises NoActiveCall when the legs are not such a pair.
        """
        pair = self._consult_pair(leg_id, replaced_leg_id)
        if pair is None:
            raise NoActiveCall()
        main, consult = pair
        op = self._k.operation(main.operation_id)
        if main.transfer_id is not None:
            raise TransferInProgress()
        if main.transfer_count >= op.max_transfers:
            raise TransferLimit()
        far = consult.leg(consult.customer_leg_id)
        if far is None or far.state != "up" or consult.state != "connected":
            raise TargetNotAvailable()
        if not self._ports.signalling.is_available():
            raise CallControlUnavailable()
        now = self._k.now()
        record = TransferRecord(self._state.ids("t"), main.conn_id, op.id, "attended", main.agent or "", far.party,
                                "agent" if far.agent else "number", "created", now, now,
                                dialled=consult.dialled_number or far.party, target_leg_id=far.leg_id)
        run = self._create(record, consult.trunk)
        self.input(run, TransferInput.REPLACES)
        self.input(run, TransferInput.COMPLETE)
        self._life.end_call(consult, "agent", None)
        return run.record

    def _consult_pair(self, leg_a: str, leg_b: str) -> tuple[Call, Call] | None:
        """(the customer's call, the consultation call) when the two legs are the agent's legs on them."""
        a, b = self._life.lookup_leg(leg_a), self._life.lookup_leg(leg_b)
        if a is None or b is None:
            return None
        for (main, main_leg), (consult, consult_leg) in ((a, b), (b, a)):
            if (consult.related_conn_id == main.conn_id and main.agent_leg_id == main_leg.leg_id
                    and consult.agent_leg_id == consult_leg.leg_id and main.state == "connected"
                    and main_leg.state == "up"):
                return main, consult
        return None

