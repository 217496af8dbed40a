"""`CallControlService`: commands in, domain events out.

One method per agentbox verb (transfer, dial, hang, hold, mute, change_status, type, hang_type_ready, dtmf,
aux_call, agent_display, recall), the native API's (attended transfers, reads), and the adapter's reports (`on_*`).

Validation follows the contract's order of precedence, and a verb that raises has changed nothing:
  parameters (400) → agent exists in the operation (404; another operation's agent is indistinguishable from a
  missing one) → logged in (409) → call state (409) → transfer in progress (409) → hop limit / target available /
  dial plan (409 / 400) → signalling available (503).

`transfer`, `dial` and `aux_call` answer once started; `hang`, `hold`, `mute`, `dtmf` and `hang_type_ready` return
an `ActionTicket` whose outcome follows as an ActionCompleted/ActionFailed event (a toggle changes only on
success); state-only verbs return once the state is stored.
"""

from __future__ import annotations

from callbridge.callcontrol.commands import (
    ActionTicket,
    AgentView,
    CallView,
    check_agent_id,
    check_code,
    check_display,
    check_number,
    check_tones,
    check_type_recall,
    parse_recall_date,
)
from callbridge.callcontrol.core import AgentRuntime
from callbridge.callcontrol.errors import (
    AlreadyOnCall,
    CallControlUnavailable,
    CallNotFound,
    CallNotUpdated,
    DidNotFound,
    InvalidParameter,
    NoActiveCall,
    NoCallToType,
    NoRecentCall,
    PhoneNotRegistered,
    TargetNotAvailable,
    TransferFinished,
    TransferInProgress,
    TransferLimit,
    TransferNotAnswered,
    TransferNotFound,
)
from callbridge.callcontrol.events import (
    CallAnswered,
    CallHeld,
    CallMuted,
    DisplayChanged,
    Dispositioned,
    RecallScheduled,
)
from callbridge.callcontrol.model import (
    LOGOUT,
    READY,
    Call,
    DisplayChange,
    Disposition,
    HangupBy,
    Leg,
    Recall,
    TransferKind,
    TransferRecord,
    Trunk,
)
from callbridge.callcontrol.outbound import OutboundCalls
from callbridge.callcontrol.states import AgentInput, CallInput, LegInput, is_busy
from callbridge.callcontrol.transfer import TransferInput


class CallControlService(OutboundCalls):
    """Build it with the ports: `CallControlService(directory=..., states=..., records=..., recalls=...,
    signalling=..., events=..., clock=..., scheduler=..., node_id="local", ids=random_ids)`."""

    # --- validation helpers -----------------------------------------------------------------------------------

    def _active_call(self, rt: AgentRuntime, *, dialing: bool = False) -> Call:
        """The call the agent talks on (connected or transferring; `dialing` too when asked)."""
        call = self._calls.get(rt.conn_id) if rt.conn_id else None
        if call is None or call.agent_leg_id != rt.leg_id:
            raise NoActiveCall()
        if dialing and call.state == "dialing":
            return call
        leg = call.leg(rt.leg_id)
        if call.state not in ("connected", "transferring") or leg is None or leg.state != "up":
            raise NoActiveCall()
        return call

    def _require_signalling(self) -> None:
        if not self._signalling.is_available():
            raise CallControlUnavailable()

    def _check_codes(self, operation_id: str, cod_act: str, cod_act_2: str | None) -> None:
        check_code(cod_act, "cod_act")
        if cod_act_2 is not None:
            check_code(cod_act_2, "cod_act_2")
        codes = self._directory.list_activity_codes(operation_id)
        if not any(c.group == 1 and c.code == cod_act for c in codes):
            raise InvalidParameter("cod_act")
        if cod_act_2 is not None and not any(c.group == 2 and c.code == cod_act_2 for c in codes):
            raise InvalidParameter("cod_act_2")

    # --- agentbox verbs ---------------------------------------------------------------------------------------

    def transfer(self, operation_id: str, agent_id: str, customer_phone: str,
                 timeout: float | None = None) -> TransferRecord:
        """api=transfer: a blind transfer of the agent's call to an extension of the operation or a number."""
        return self.start_transfer(operation_id, agent_id, customer_phone, kind="blind", timeout=timeout)

    def start_transfer(self, operation_id: str, agent_id: str, target: str, *, kind: TransferKind = "blind",
                       timeout: float | None = None) -> TransferRecord:
        """A blind or attended transfer (native POST /v2/transfers); returns the record, with the call's conn_id."""
        check_agent_id(agent_id)
        check_number(target, "customer_phone")
        if timeout is not None and not 0 < timeout <= 300:
            raise InvalidParameter("timeout")
        op, rt = self._require_logged_in(operation_id, agent_id)
        call = self._active_call(rt)
        if call.transfer_id is not None:
            raise TransferInProgress()
        if call.transfer_count >= op.max_transfers:
            raise TransferLimit()
        target_rt = self._find_agent(op.id, target)
        trunk: Trunk | None = None
        if target_rt is not None:
            if not target_rt.available:
                raise TargetNotAvailable()
            dialled = target
        else:
            trunk, dialled = self._resolve_number(op.id, target)
        self._require_signalling()
        return self._begin_transfer(op, call, rt, kind, target, "agent" if target_rt else "number", dialled,
                                    trunk, timeout if timeout is not None else op.transfer_timeout)

    def dial(self, operation_id: str, agent_id: str, customer_phone: str, customer_id: str = "",
             customer_name: str = "") -> str:
        """api=dial: ring the agent's phone (auto-answer hint), then the customer; returns the conn_id."""
        check_agent_id(agent_id)
        check_number(customer_phone)
        op, rt = self._require_logged_in(operation_id, agent_id)
        self._require_free(rt)
        trunk, dialled = self._resolve_number(op.id, customer_phone)
        self._require_signalling()
        call = self._start_dial(op, rt, customer_phone, dialled, trunk)
        call.customer_id, call.customer_name = customer_id, customer_name
        return call.conn_id

    def _require_free(self, rt: AgentRuntime) -> None:
        if rt.conn_id is not None or is_busy(rt.state):
            raise AlreadyOnCall()
        if not rt.registered:
            raise PhoneNotRegistered()

    def hang(self, operation_id: str, agent_id: str) -> ActionTicket:
        """api=hang. During a transfer only the agent's own leg is released and the transfer goes on."""
        check_agent_id(agent_id)
        _, rt = self._require_logged_in(operation_id, agent_id)
        call = self._active_call(rt, dialing=True)
        self._require_signalling()
        return self._hang(call, rt)

    def _hang(self, call: Call, rt: AgentRuntime) -> ActionTicket:
        agent_leg = call.leg(rt.leg_id)
        assert agent_leg is not None
        run = self._transfer_of(call)
        if run is not None:
            ticket = self._start_action(call, "hang", lambda aid: self._release_leg(
                call, agent_leg, by="agent", action_id=aid))
            self._agent_leg_over(call, agent_leg, "hangup")
            self._transfer_input(run, TransferInput.AGENT_HANGUP)
            return ticket
        customer = call.leg(call.customer_leg_id)
        far = customer if customer is not None and customer.state != "ended" else agent_leg
        ticket = self._start_action(call, "hang", lambda aid: self._release_leg(call, far, by="agent", action_id=aid))
        self._end_call(call, "agent", None)
        return ticket

    def hold(self, operation_id: str, agent_id: str) -> ActionTicket:
        """api=hold: toggles hold on the customer's leg (re-INVITE sendonly / sendrecv)."""
        check_agent_id(agent_id)
        _, rt = self._require_logged_in(operation_id, agent_id)
        call = self._active_call(rt)
        if call.transfer_id is not None:
            raise TransferInProgress()
        if self._pending_verbs(call.conn_id) & {"hold", "unhold"}:
            raise CallNotUpdated()
        self._require_signalling()
        customer = call.customer_leg_id
        assert customer is not None
        turning_on = not call.held

        def applied() -> None:
            call.held = turning_on
            self._history(call, "held" if turning_on else "unheld")
            self._emit(CallHeld(operation_id=call.operation_id, conn_id=call.conn_id, held=turning_on))

        if turning_on:
            return self._start_action(call, "hold", lambda aid: self._signalling.hold(customer, aid), applied, True)
        return self._start_action(call, "unhold", lambda aid: self._signalling.unhold(customer, aid), applied, False)

    def mute(self, operation_id: str, agent_id: str) -> ActionTicket:
        """api=mute: toggles the agent's microphone toward the customer (on the agent's leg)."""
        check_agent_id(agent_id)
        _, rt = self._require_logged_in(operation_id, agent_id)
        call = self._active_call(rt)
        if call.transfer_id is not None:
            raise TransferInProgress()
        if self._pending_verbs(call.conn_id) & {"mute", "unmute"}:
            raise CallNotUpdated()
        self._require_signalling()
        leg_id = rt.leg_id
        assert leg_id is not None
        turning_on = not call.muted

        def applied() -> None:
            call.muted = turning_on
            self._history(call, "muted" if turning_on else "unmuted")
            self._emit(CallMuted(operation_id=call.operation_id, conn_id=call.conn_id, muted=turning_on))

        if turning_on:
            return self._start_action(call, "mute", lambda aid: self._signalling.mute(leg_id, aid), applied, True)
        return self._start_action(call, "unmute", lambda aid: self._signalling.unmute(leg_id, aid), applied, False)

    def dtmf(self, operation_id: str, agent_id: str, tones: str) -> ActionTicket:
        """api=dtmf: digits 0-9, *, #, A-D on the customer's leg (SIP INFO)."""
        check_agent_id(agent_id)
        check_tones(tones)
        _, rt = self._require_logged_in(operation_id, agent_id)
        call = self._active_call(rt)
        if call.transfer_id is not None:
            raise TransferInProgress()
        self._require_signalling()
        customer = call.customer_leg_id
        assert customer is not None
        return self._start_action(call, "dtmf", lambda aid: self._signalling.send_dtmf(customer, tones, aid))

    def change_status(self, operation_id: str, agent_id: str, status: str) -> str:
        """api=change_status: `ready`, `logout` or an aux state id; returns the new state name."""
        check_agent_id(agent_id)
        aux_ids = {a.id for a in self._directory.list_aux_states(operation_id)}
        if status not in (READY, LOGOUT) and status not in aux_ids:
            raise InvalidParameter("status")
        _, rt = self._require_agent(operation_id, agent_id)
        if status != LOGOUT and not rt.registered:
            raise PhoneNotRegistered()
        if rt.conn_id is not None or is_busy(rt.state):
            raise AlreadyOnCall()
        if status == READY:
            self._agent_input(rt, AgentInput.LOGIN_READY, "api")
        elif status == LOGOUT:
            self._agent_input(rt, AgentInput.LOGOUT, "api")
        else:
            self._agent_input(rt, AgentInput.SET_AUX, "api", aux_id=status)
        return rt.state

    def type(self, operation_id: str, agent_id: str, cod_act: str, cod_act_2: str,
             comments: str = "") -> Disposition:
        """api=type: the disposition of the agent's last call not yet typed."""
        check_agent_id(agent_id)
        self._check_codes(operation_id, cod_act, cod_act_2)
        _, rt = self._require_logged_in(operation_id, agent_id)
        if rt.untyped_conn_id is None:
            raise NoCallToType()
        return self._record_disposition(rt, rt.untyped_conn_id, cod_act, cod_act_2, comments)

    def _record_disposition(self, rt: AgentRuntime, conn_id: str, cod_act: str, cod_act_2: str,
                            comments: str) -> Disposition:
        disposition = Disposition(rt.operation_id, conn_id, rt.extension, cod_act, cod_act_2, comments, self._now())
        self._records.save_disposition(disposition)
        if rt.untyped_conn_id == conn_id:
            rt.untyped_conn_id = None
        self._emit(Dispositioned(operation_id=rt.operation_id, agent=rt.extension, conn_id=conn_id,
                                 cod_act=cod_act, cod_act_2=cod_act_2))
        return disposition

    def hang_type_ready(self, operation_id: str, agent_id: str, cod_act: str, cod_act_2: str = "",
                        comments: str = "") -> ActionTicket:
        """api=hang_type_ready: hang up, type the call, and make the agent ready (no ACW)."""
        check_agent_id(agent_id)
        self._check_codes(operation_id, cod_act, cod_act_2 or None)
        _, rt = self._require_logged_in(operation_id, agent_id)
        call = self._active_call(rt, dialing=True)
        self._require_signalling()
        self._record_disposition(rt, call.conn_id, cod_act, cod_act_2, comments)
        rt.ready_after_call = True
        return self._hang(call, rt)

    def aux_call(self, operation_id: str, agent_id: str, customer_phone: str) -> str:
        """api=aux_call: call the customer again after the agent's last call (ended < 10 minutes ago)."""
        check_agent_id(agent_id)
        check_number(customer_phone)
        op, rt = self._require_logged_in(operation_id, agent_id)
        self._require_free(rt)
        ended = rt.last_call_ended_at
        if ended is None or self._now() - ended > op.recent_call_window:
            raise NoRecentCall()
        trunk, dialled = self._resolve_number(op.id, customer_phone)
        self._require_signalling()
        call = self._start_dial(op, rt, customer_phone, dialled, trunk)
        call.related_conn_id = rt.last_conn_id
        self._records.save_call(call.record())
        return call.conn_id

    def agent_display(self, operation_id: str, agent_id: str, display: str, button: str) -> DisplayChange:
        """api=agent_display: show or hide a console button; kept per agent and published."""
        check_agent_id(agent_id)
        name, visible = check_display(display, button)
        _, rt = self._require_agent(operation_id, agent_id)
        rt.display[name] = visible
        change = DisplayChange(operation_id, rt.extension, name, visible, self._now())
        self._states.record_display(change)
        self._emit(DisplayChanged(operation_id=operation_id, agent=rt.extension, button=name, visible=visible))
        return change

    def recall(self, operation_id: str, agent_id: str, customer_phone: str, date: str,
               type_recall: str) -> Recall:
        """api=recall: `date` is YYYYmmddHHiiss in the operation's time zone."""
        check_agent_id(agent_id)
        check_number(customer_phone)
        kind = check_type_recall(type_recall)
        op = self._directory.get_operation(operation_id)
        due_at = parse_recall_date(date, op.time_zone if op else "UTC")
        op, rt = self._require_agent(operation_id, agent_id)
        self._resolve_number(op.id, customer_phone)
        recall = Recall(self._ids("r"), op.id, rt.extension, customer_phone, due_at, kind, self._now())
        self._recall_repo.save_recall(recall)
        self._emit(RecallScheduled(operation_id=op.id, recall_id=recall.id, agent=rt.extension,
                                   customer_phone=customer_phone, due_at=due_at, type_recall=kind))
        self._schedule_recall(recall)
        return recall

    # --- native API -------------------------------------------------------------------------------------------

    def get_transfer(self, operation_id: str, transfer_id: str) -> TransferRecord:
        run = self._transfers.get(transfer_id)
        record = run.record if run is not None else self._finished_transfers.get(transfer_id)
        if record is None or record.operation_id != operation_id:
            raise TransferNotFound()
        return record

    def complete_transfer(self, operation_id: str, transfer_id: str) -> TransferRecord:
        """Attended: bridge the customer with the target and release the agent."""
        record = self.get_transfer(operation_id, transfer_id)
        run = self._transfers.get(transfer_id)
        if run is None:
            raise TransferFinished()
        if record.state != "consulting":
            raise TransferNotAnswered()
        self._require_signalling()
        self._transfer_input(run, TransferInput.COMPLETE)
        return run.record

    def cancel_transfer(self, operation_id: str, transfer_id: str) -> TransferRecord:
        """Release the target; the customer goes back to the agent."""
        self.get_transfer(operation_id, transfer_id)
        run = self._transfers.get(transfer_id)
        if run is None:
            raise TransferFinished()
        self._require_signalling()
        self._transfer_input(run, TransferInput.CANCEL)
        return run.record

    def list_agents(self, operation_id: str) -> list[AgentView]:
        return [self._agent_view(rt) for rt in self._agents_of(operation_id)]

    def get_agent(self, operation_id: str, extension: str) -> AgentView:
        return self._agent_view(self._require_agent(operation_id, extension)[1])

    @staticmethod
    def _agent_view(rt: AgentRuntime) -> AgentView:
        return AgentView(rt.operation_id, rt.extension, rt.agent.name, rt.state, rt.state_since, rt.reason,
                         rt.registered, rt.available, rt.conn_id, rt.agent.queues, tuple(sorted(rt.display.items())))

    def list_calls(self, operation_id: str) -> list[CallView]:
        return [CallView.of(c) for c in self._live_calls(operation_id)]

    def get_call(self, operation_id: str, conn_id: str) -> CallView:
        call = self._calls.get(conn_id) or self._ended_calls.get(conn_id)
        if call is None or call.operation_id != operation_id:
            raise CallNotFound()
        return CallView.of(call)

    # --- adapter reports --------------------------------------------------------------------------------------

    def on_inbound_call(self, operation_id: str, did: str, leg_id: str, from_number: str) -> str:
        """A trunk's INVITE to a DID: the call waits in the DID's queue. Raises DidNotFound (answer 404)."""
        op = self._directory.get_operation(operation_id)
        route = self._directory.get_did(operation_id, did) if op is not None else None
        if op is None or route is None:
            raise DidNotFound()
        call = self._new_call(op, "inbound", from_number, "queued")
        leg = self._add_leg(call, "customer", from_number, leg_id=leg_id)
        call.customer_leg_id = leg.leg_id
        self._history(call, "inbound", did)
        self._enqueue(call, route.queue)
        return call.conn_id

    def on_refer(self, leg_id: str, target: str) -> TransferRecord:
        """A REFER on an agent's leg (the phone's transfer button): the same engine as `api=transfer`.

        Raises what `transfer` raises; the adapter answers the REFER with an error and sends nothing else. Its
        NOTIFY sipfrag progress follows the transfer's events.
        """
        found = self._lookup_leg(leg_id)
        if found is None or found[1].agent is None or found[0].agent_leg_id != leg_id:
            raise NoActiveCall()
        call, leg = found
        assert leg.agent is not None
        rt = self._find_agent(call.operation_id, leg.agent)
        if rt is None or rt.leg_id != leg_id:
            raise NoActiveCall()  # e.g. a blind REFER on a consultation call: the agent's call is another one
        return self.start_transfer(call.operation_id, leg.agent, target)

    def on_leg_ringing(self, leg_id: str) -> None:
        found = self._lookup_leg(leg_id)
        if found is None or found[1].state == "ended":
            return
        call, leg = found
        self._leg_input(call, leg, LegInput.RING)
        run = self._transfer_of(call)
        if run is not None and run.record.target_leg_id == leg_id:
            self._transfer_input(run, TransferInput.TARGET_RINGING)

    def on_leg_answered(self, leg_id: str) -> None:
        found = self._lookup_leg(leg_id)
        if found is None or found[1].state not in ("calling", "ringing"):
            return  # answered after release: the adapter hangs it up
        call, leg = found
        self._leg_input(call, leg, LegInput.ANSWER)
        run = self._transfer_of(call)
        if run is not None and run.record.target_leg_id == leg_id:
            self._transfer_input(run, TransferInput.TARGET_ANSWERED)
        elif call.state == "offering" and leg_id == call.agent_leg_id:
            self._connect(call, leg, leg)
        elif call.state == "dialing" and leg_id == call.agent_leg_id:
            self._agent_answered(call, leg)
            if call.customer_leg_id is None:
                self._call_customer(call, leg)
        elif call.state == "dialing" and leg_id == call.customer_leg_id:
            agent_leg = call.leg(call.agent_leg_id)
            assert agent_leg is not None
            self._connect(call, agent_leg, leg)

    def _connect(self, call: Call, agent_leg: Leg, answered: Leg) -> None:
        """Bridge the customer with the agent side; a leg still ringing in is answered by the bridge."""
        customer = call.leg(call.customer_leg_id)
        assert customer is not None
        self._signalling.bridge(customer.leg_id, agent_leg.leg_id)
        call.agent = agent_leg.agent
        for leg in (customer, agent_leg):
            if leg.state in ("calling", "ringing"):
                self._leg_input(call, leg, LegInput.ANSWER)
            self._agent_answered(call, leg)
        self._book.remove(call.conn_id)
        self._disarm(f"queue:{call.conn_id}")
        self._call_input(call, CallInput.CONNECT)
        if call.answered_at is None:
            call.answered_at = self._now()
        self._history(call, "answered", answered.party)
        self._records.save_call(call.record())
        self._emit(CallAnswered(operation_id=call.operation_id, conn_id=call.conn_id, agent=call.agent,
                                leg_id=answered.leg_id))

    def on_leg_failed(self, leg_id: str, sip_status: int | None) -> None:
        """A leg this side originated got a final error (or no response: `sip_status` None)."""
        found = self._lookup_leg(leg_id)
        if found is None or found[1].state not in ("calling", "ringing"):
            return
        call, leg = found
        self._leg_input(call, leg, LegInput.FAIL, status=sip_status, by=leg.role)
        run = self._transfer_of(call)
        if run is not None and run.record.target_leg_id == leg_id:
            self._transfer_input(run, TransferInput.TARGET_FAILED, sip_status)
        else:
            self._after_leg_failure(call, leg, sip_status)

    def on_leg_ended(self, leg_id: str, by: HangupBy | None = None) -> None:
        """The leg's party hung up (BYE, or CANCEL of an incoming INVITE); `by` overrides who, e.g. "system" for a
        session timer that expired."""
        found = self._lookup_leg(leg_id)
        if found is None or found[1].state == "ended":
            return
        call, leg = found
        who: HangupBy = by or leg.role
        self._leg_input(call, leg, LegInput.END, by=who)
        run = self._transfer_of(call)
        if run is not None:
            if leg_id == call.customer_leg_id:
                self._transfer_input(run, TransferInput.CUSTOMER_HANGUP)
                self._end_call(call, who, None)
            elif leg_id == run.record.target_leg_id:
                consulting = run.record.state == "consulting"
                self._transfer_input(run, TransferInput.TARGET_HANGUP if consulting else TransferInput.TARGET_FAILED)
            elif leg_id == call.agent_leg_id:
                self._agent_leg_over(call, leg, "hangup")
                self._transfer_input(run, TransferInput.AGENT_HANGUP)
            return
        if call.state == "offering" and leg_id == call.agent_leg_id:
            self._offer_failed(call, leg)
        elif leg_id in (call.customer_leg_id, call.agent_leg_id):
            self._end_call(call, who, None)

    def on_registration_changed(self, operation_id: str, extension: str, registered: bool) -> None:
        """Whether the agent has at least one live registration; losing the last one logs the agent out."""
        rt = self._find_agent(operation_id, extension)
        if rt is None:
            return
        rt.registered = registered
        if not registered and rt.state != LOGOUT:
            self._agent_input(rt, AgentInput.REGISTRATION_LOST, "registration_lost")
        elif registered:
            self._index_agent(rt)
