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

The service is a facade over one live state (`live.LiveState`) and the collaborators it builds around it, each
handed the state, the ports and the kernel (constructor injection): the agent desk (`agents`), the calls' life
(`lifecycle`), the ACD (`acd`), actions (`actions`), the transfer engine (`transfer_engine`), outbound calls
(`outbound`), dispositions (`dispositions`), the reads (`reads`) and the adapter's reports (`reports`). It
validates and delegates; it holds no state of its own.
"""

from __future__ import annotations

from callbridge.callcontrol.acd import Acd
from callbridge.callcontrol.actions import HOLD, MUTE, Actions, Toggle
from callbridge.callcontrol.adoption import Adoption
from callbridge.callcontrol.agents import AgentDesk
from callbridge.callcontrol.calls import Call
from callbridge.callcontrol.commands import (
    ActionTicket,
    check_agent_id,
    check_display,
    check_number,
    check_tones,
    check_type_recall,
    parse_recall_date,
)
from callbridge.callcontrol.directory import Trunk
from callbridge.callcontrol.dispositions import Dispositions
from callbridge.callcontrol.errors import (
    AlreadyOnCall,
    CallControlUnavailable,
    CallNotUpdated,
    InvalidParameter,
    NoActiveCall,
    NoRecentCall,
    PhoneNotRegistered,
    TargetNotAvailable,
    TransferFinished,
    TransferInProgress,
    TransferLimit,
    TransferNotAnswered,
)
from callbridge.callcontrol.events import DisplayChanged, RecallScheduled
from callbridge.callcontrol.handover import Handover
from callbridge.callcontrol.ids import IdFactory, random_ids
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.lifecycle import CallLifecycle
from callbridge.callcontrol.live import AgentRuntime, LiveState
from callbridge.callcontrol.monitor import CallMonitors
from callbridge.callcontrol.occupancy import Occupancy
from callbridge.callcontrol.outbound import OutboundCalls
from callbridge.callcontrol.ports import (
    CallRecordRepository,
    Clock,
    DirectoryRepository,
    EventSink,
    Ports,
    RecallRepository,
    Scheduler,
    Signalling,
    StateRepository,
)
from callbridge.callcontrol.reads import Reads
from callbridge.callcontrol.recordings import CallRecordings
from callbridge.callcontrol.records import (
    LOGOUT,
    READY,
    DisplayChange,
    Recall,
    TransferKind,
    TransferRecord,
)
from callbridge.callcontrol.reports import AdapterReports
from callbridge.callcontrol.states import AgentInput, is_busy
from callbridge.callcontrol.transfer_engine import TransferEngine
from callbridge.callcontrol.transfer_table import TransferInput


class CallControlService:
    """Build it with the ports: `CallControlService(directory=..., states=..., records=..., recalls=...,
    signalling=..., events=..., clock=..., scheduler=..., node_id="local", ids=random_ids)`."""

    def __init__(self, *, directory: DirectoryRepository, states: StateRepository, records: CallRecordRepository,
                 recalls: RecallRepository, signalling: Signalling, events: EventSink, clock: Clock,
                 scheduler: Scheduler, node_id: str = "local", ids: IdFactory = random_ids) -> None:
        self._state = state = LiveState(node_id, ids)
        self._ports = ports = Ports(directory, states, records, recalls, signalling, events, clock, scheduler)
        self._k = kernel = Kernel(state, ports)
        self._agents = agents = AgentDesk(state, ports, kernel)
        self._life = life = CallLifecycle(state, ports, kernel, agents)
        acd = life.acd = agents.acd = Acd(state, ports, kernel, agents, life)
        self._acts = actions = Actions(state, ports, kernel)
        self._actions = state.actions  # the pending actions (tests wait on their number)
        self._transfers = transfers = TransferEngine(state, ports, kernel, agents, life, acd)
        self._outbound = outbound = OutboundCalls(state, ports, kernel, agents, life, acd)
        self._calls = state.calls
        self._dispositions = dispositions = Dispositions(ports, kernel, agents)
        self.type = dispositions.type  # api=type
        # the reads and the adapter's reports are the collaborators' own methods, bound here: no further call
        reads = Reads(state, kernel, agents)
        self.get_transfer = reads.get_transfer
        self.list_agents = reads.list_agents
        self.get_agent, self.agent_registered = reads.get_agent, reads.agent_registered  # the latter: wire data
        self.list_calls = reads.list_calls
        self.get_call, self.call_facts = reads.get_call, reads.call_facts  # the latter: the event log's wire data
        occupancy = Occupancy(state, ports, kernel, agents)
        self.agent_states = occupancy.agent_states
        self.live_calls = occupancy.live_calls
        self.queue_waits = occupancy.queue_waits
        recordings = CallRecordings(state, ports)  # the native API's recording verbs
        self.recording_state = recordings.recording_state
        self.start_recording = recordings.start_recording
        self.stop_recording = recordings.stop_recording
        self.pause_recording = recordings.pause_recording
        reports = AdapterReports(state, ports, kernel, agents, life, acd, transfers, outbound, recordings)
        monitors = CallMonitors(state, ports, kernel, agents)  # a supervisor listening (monitor.py)
        self.start_monitor = monitors.start_monitor
        self.start_page_monitor = monitors.start_page_monitor
        self.stop_monitor = monitors.stop_monitor
        self.monitor_state = monitors.monitor_state
        self.adopt_monitor = monitors.adopt  # a listener of a call adopted from a dead cluster node (cluster.adopt)
        life.call_ended = monitors.call_ended
        self.on_inbound_call = reports.on_inbound_call
        self.on_leg_ringing = reports.on_leg_ringing
        self.on_leg_answered, self.on_leg_failed, self.on_leg_ended = monitors.reports(
            reports.on_leg_answered, reports.on_leg_failed, reports.on_leg_ended)
        self.on_media_direct = reports.on_media_direct
        self.on_dtmf = reports.on_dtmf
        self.on_media_timeout = reports.on_media_timeout
        self.on_relay_lost = reports.on_relay_lost
        self.on_registration_changed = reports.on_registration_changed
        self.on_agent_call = outbound.on_agent_call
        self.on_refer_replaces = transfers.on_refer_replaces
        self.on_action_result = actions.on_action_result
        self.action_outcome = actions.action_outcome
        self.restore = outbound.restore
        self.restore_agents = agents.restore
        self.adopt_call = Adoption(state, agents).adopt_call  # a dead cluster node's call (cluster.adopt)
        self.handover = Handover(state, agents, kernel)  # an operation given to another node (cluster.handover)
        self.reindex_agents = agents.reindex

    @property
    def last_seq(self) -> int:
        """The sequence number of the last event published (0 before the first)."""
        return self._state.seq

    @property
    def _directory(self) -> DirectoryRepository:
        return self._ports.directory

    @_directory.setter
    def _directory(self, directory: DirectoryRepository) -> None:
        self._ports.directory = directory

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
        if not self._ports.signalling.is_available():
            raise CallControlUnavailable()

    def _require_new_calls(self, operation_id: str) -> None:
        if not self._ports.signalling.accepts_new_calls(operation_id):
            raise CallControlUnavailable()

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
        op, rt = self._agents.require_logged_in(operation_id, agent_id)
        call = self._active_call(rt)
        if call.transfer_id is not None:
            raise TransferInProgress()
        if call.transfer_count >= op.max_transfers:
            raise TransferLimit()
        target_rt = self._agents.find(op.id, target)
        trunk: Trunk | None = None
        if target_rt is not None:
            if not target_rt.available:
                raise TargetNotAvailable()
            dialled = target
        else:
            trunk, dialled = self._k.resolve_number(op.id, target)
        self._require_signalling()
        return self._transfers.begin(op, call, rt, kind, target, "agent" if target_rt else "number", dialled,
                                    trunk, timeout if timeout is not None else op.transfer_timeout)

    def dial(self, operation_id: str, agent_id: str, customer_phone: str, customer_id: str = "",
             customer_name: str = "") -> str:
        """api=dial: ring the agent's phone (auto-answer hint), then the customer; returns the conn_id."""
        check_agent_id(agent_id)
        check_number(customer_phone)
        op, rt = self._agents.require_logged_in(operation_id, agent_id)
        self._require_free(rt)
        trunk, dialled = self._k.resolve_number(op.id, customer_phone)
        self._require_new_calls(op.id)
        call = self._outbound.start_dial(op, rt, customer_phone, dialled, trunk)
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
        _, rt = self._agents.require_logged_in(operation_id, agent_id)
        call = self._active_call(rt, dialing=True)
        self._require_signalling()
        return self._hang(call, rt)

    def _hang(self, call: Call, rt: AgentRuntime) -> ActionTicket:
        agent_leg = call.leg(rt.leg_id)
        assert agent_leg is not None
        run = self._transfers.of(call)
        if run is not None:
            ticket = self._acts.start(call, "hang", lambda aid: self._life.release_leg(
                call, agent_leg, by="agent", action_id=aid))
            self._agents.leg_over(call, agent_leg, "hangup")
            self._transfers.input(run, TransferInput.AGENT_HANGUP)
            return ticket
        customer = call.leg(call.customer_leg_id)
        far = customer if customer is not None and customer.state != "ended" else agent_leg
        ticket = self._acts.start(call, "hang",
                                  lambda aid: self._life.release_leg(call, far, by="agent", action_id=aid))
        self._life.end_call(call, "agent", None)
        return ticket

    def hold(self, operation_id: str, agent_id: str) -> ActionTicket:
        """api=hold: toggles hold on the customer's leg (re-INVITE sendonly / sendrecv)."""
        return self._toggle(operation_id, agent_id, HOLD)

    def mute(self, operation_id: str, agent_id: str) -> ActionTicket:
        """api=mute: toggles the agent's microphone toward the customer (on the agent's leg)."""
        return self._toggle(operation_id, agent_id, MUTE)

    def _toggle(self, operation_id: str, agent_id: str, which: Toggle) -> ActionTicket:
        check_agent_id(agent_id)
        _, rt = self._agents.require_logged_in(operation_id, agent_id)
        call = self._active_call(rt)
        if call.transfer_id is not None:
            raise TransferInProgress()
        if self._acts.pending_verbs(call.conn_id) & {which.on, which.off}:
            raise CallNotUpdated()
        self._require_signalling()
        leg_id = call.customer_leg_id if which is HOLD else rt.leg_id
        assert leg_id is not None
        return self._acts.toggle(call, which, leg_id)

    def dtmf(self, operation_id: str, agent_id: str, tones: str) -> ActionTicket:
        """api=dtmf: digits 0-9, *, #, A-D on the customer's leg (SIP INFO)."""
        check_agent_id(agent_id)
        check_tones(tones)
        _, rt = self._agents.require_logged_in(operation_id, agent_id)
        call = self._active_call(rt)
        if call.transfer_id is not None:
            raise TransferInProgress()
        self._require_signalling()
        customer = call.customer_leg_id
        assert customer is not None
        return self._acts.start(call, "dtmf", lambda aid: self._ports.signalling.send_dtmf(customer, tones, aid))

    def change_status(self, operation_id: str, agent_id: str, status: str) -> str:
        """api=change_status: `ready`, `logout` or an aux state id; returns the new state name. While the node
        drains (SIGTERM) a logged-out agent cannot log in (503); a logged-in one still moves, and logs out."""
        check_agent_id(agent_id)
        aux_ids = {a.id for a in self._ports.directory.list_aux_states(operation_id)}
        if status not in (READY, LOGOUT) and status not in aux_ids:
            raise InvalidParameter("status")
        _, rt = self._agents.require_agent(operation_id, agent_id)
        if status != LOGOUT and not rt.registered:
            raise PhoneNotRegistered()
        if rt.conn_id is not None or is_busy(rt.state):
            raise AlreadyOnCall()
        if status != LOGOUT and rt.state == LOGOUT and not self._ports.signalling.accepts_new_logins():
            raise CallControlUnavailable()  # a login while the node drains: it takes no new agents
        if status == READY:
            self._agents.input(rt, AgentInput.LOGIN_READY, "api")
        elif status == LOGOUT:
            self._agents.input(rt, AgentInput.LOGOUT, "api")
        else:
            self._agents.input(rt, AgentInput.SET_AUX, "api", aux_id=status)
        return rt.state

    def hang_type_ready(self, operation_id: str, agent_id: str, cod_act: str, cod_act_2: str = "",
                        comments: str = "") -> ActionTicket:
        """api=hang_type_ready: hang up, type the call, and make the agent ready (no ACW)."""
        check_agent_id(agent_id)
        self._dispositions.check_codes(operation_id, cod_act, cod_act_2 or None)
        _, rt = self._agents.require_logged_in(operation_id, agent_id)
        call = self._active_call(rt, dialing=True)
        self._require_signalling()
        self._dispositions.record(rt, call.conn_id, cod_act, cod_act_2, comments)
        rt.ready_after_call = True
        return self._hang(call, rt)

    def aux_call(self, operation_id: str, agent_id: str, customer_phone: str) -> str:
        """api=aux_call: call the customer again after the agent's last call (ended < 10 minutes ago)."""
        check_agent_id(agent_id)
        check_number(customer_phone)
        op, rt = self._agents.require_logged_in(operation_id, agent_id)
        self._require_free(rt)
        ended = rt.last_call_ended_at
        if ended is None or self._k.now() - ended > op.recent_call_window:
            raise NoRecentCall()
        trunk, dialled = self._k.resolve_number(op.id, customer_phone)
        self._require_new_calls(op.id)
        call = self._outbound.start_dial(op, rt, customer_phone, dialled, trunk)
        call.related_conn_id = rt.last_conn_id
        self._ports.records.save_call(call.record())
        return call.conn_id

    def agent_display(self, operation_id: str, agent_id: str, display: str, button: str) -> DisplayChange:
        """api=agent_display: show or hide a console button; kept per agent and published."""
        check_agent_id(agent_id)
        name, visible = check_display(display, button)
        _, rt = self._agents.require_agent(operation_id, agent_id)
        rt.display[name] = visible
        change = DisplayChange(operation_id, rt.extension, name, visible, self._k.now())
        self._ports.states.record_display(change)
        self._k.emit(DisplayChanged(operation_id=operation_id, agent=rt.extension, button=name, visible=visible))
        return change

    def recall(self, operation_id: str, agent_id: str, customer_phone: str, date: str,
               type_recall: str) -> Recall:
        """api=recall: `date` is YYYYmmddHHiiss in the operation's time zone."""
        check_agent_id(agent_id)
        check_number(customer_phone)
        kind = check_type_recall(type_recall)
        op = self._ports.directory.get_operation(operation_id)
        due_at = parse_recall_date(date, op.time_zone if op else "UTC")
        op, rt = self._agents.require_agent(operation_id, agent_id)
        self._k.resolve_number(op.id, customer_phone)
        recall = Recall(self._state.ids("r"), op.id, rt.extension, customer_phone, due_at, kind, self._k.now())
        self._ports.recalls.save_recall(recall)
        self._k.emit(RecallScheduled(operation_id=op.id, recall_id=recall.id, agent=rt.extension,
                                   customer_phone=customer_phone, due_at=due_at, type_recall=kind))
        self._outbound.schedule_recall(recall)
        return recall

    # --- native API (its reads are bound from `reads.Reads` in __init__) --------------------------------------

    def complete_transfer(self, operation_id: str, transfer_id: str) -> TransferRecord:
        """Attended: bridge the customer with the target and release the agent."""
        record = self.get_transfer(operation_id, transfer_id)
        run = self._state.transfers.get(transfer_id)
        if run is None:
            raise TransferFinished()
        if record.state != "consulting":
            raise TransferNotAnswered()
        self._require_signalling()
        self._transfers.input(run, TransferInput.COMPLETE)
        return run.record

    def fail_left_transfer(self, conn_id: str, node_id: str) -> TransferRecord | None:
        """A call adopted in a transfer (`adopt_call`): the INVITE ringing its target died with node `node_id`, so
        the transfer fails now, through the table as for a target unreachable: the customer back with its agent."""
        call = self._state.calls.get(conn_id)
        run = self._transfers.of(call) if call is not None else None
        if call is None or run is None:
            return None
        self._k.history(call, "transfer_lost_with_node", node_id)
        # consulting: the adopting node hung the target's dialog up, as if the target had (the agent back with the
        # customer); still rung: the target unreachable (the customer back with the agent, or in its queue)
        lost = TransferInput.TARGET_HANGUP if run.record.state == "consulting" else TransferInput.TARGET_FAILED
        self._transfers.input(run, lost)
        return run.record

    def cancel_transfer(self, operation_id: str, transfer_id: str) -> TransferRecord:
        """Release the target; the customer goes back to the agent."""
        self.get_transfer(operation_id, transfer_id)
        run = self._state.transfers.get(transfer_id)
        if run is None:
            raise TransferFinished()
        self._require_signalling()
        self._transfers.input(run, TransferInput.CANCEL)
        return run.record

    # --- adapter reports (the others are bound from `reports.AdapterReports` in __init__) ---------------------

    def on_refer(self, leg_id: str, target: str) -> TransferRecord:
        """A REFER on an agent's leg (the phone's transfer button): the same engine as `api=transfer`.

        Raises what `transfer` raises; the adapter answers the REFER with an error and sends nothing else. Its
        NOTIFY sipfrag progress follows the transfer's events.
        """
        found = self._life.lookup_leg(leg_id)
        if found is None or found[1].agent is None or found[0].agent_leg_id != leg_id:
            raise NoActiveCall()
        call, leg = found
        assert leg.agent is not None
        rt = self._agents.find(call.operation_id, leg.agent)
        if rt is None or rt.leg_id != leg_id:
            raise NoActiveCall()  # e.g. a blind REFER on a consultation call: the agent's call is another one
        return self.start_transfer(call.operation_id, leg.agent, target)
