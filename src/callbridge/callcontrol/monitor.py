"""A supervisor listening to a call (the native API's `POST`/`DELETE /v2/calls/{conn_id}/monitor`).

Rules (docs/operations.md, "A supervisor listens"; the endpoints in docs/api.md)
- The supervisor listens on a phone registered as one of the operation's extensions: that extension is rung
  (`Signalling.monitor`, a leg of its own that is not one of the call's parties: not in the call's legs, its CDR or
  the agents' states), and once it answers it hears the customer and the party the customer talks to, who do not
  hear it. One listener per call at a time.
- Order of the checks (a verb that raises has changed nothing): the call (CALL_NOT_FOUND, also another operation's;
  CALL_ENDED), the extension (EXTENSION_NOT_FOUND; PHONE_NOT_REGISTERED when it has no phone now), the call's
  state (CALL_NOT_ANSWERED: nobody talks yet), MONITOR_IN_PROGRESS, then the adapter (CALL_NOT_ANCHORED: its media
  does not go through a relay).
- The record: the call's history gets ``monitor_requested``, ``monitor_started`` and ``monitor_ended`` with the
  extension; events ``call.monitor_started`` (who, when) and ``call.monitor_ended`` (who, when it started, when it
  ended, why: stopped, supervisor_hangup, no_answer, call_ended).
- The listener's leg is reported by the adapter like any leg (answered, failed, ended): `reports` routes the reports
  of a listener's leg here, before the call's own handling looks for it.
- Or the supervisor listens in the board's page (`start_page_monitor`, docs/operations.md "The supervisor's board"):
  no extension is rung, the adapter asks the relay for a WebRTC subscription (`Signalling.listen_in_page`) whose
  offer the page answers; the page's answer reaching the relay is the leg's answer, and `supervisor` is the account's
  username. The same checks, minus the extension's; the same record, events and ring timeout (a page that never
  answers is given up as `no_answer`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from callbridge.callcontrol.agents import AgentDesk
from callbridge.callcontrol.calls import Call
from callbridge.callcontrol.errors import (
    CallNotAnchored,
    CallNotAnswered,
    ExtensionNotFound,
    MonitorInProgress,
    MonitorNotStarted,
    PhoneNotRegistered,
)
from callbridge.callcontrol.events import CallMonitorEnded, CallMonitorStarted
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.live import LiveState
from callbridge.callcontrol.model import HangupBy
from callbridge.callcontrol.ports import OriginateRequest, Ports

MonitorState = Literal["ringing", "listening", "ended"]
ListensOn = Literal["phone", "page"]
# how long the supervisor's phone rings before the listening is given up
MONITOR_RING_SECONDS = 30.0


class LegEnded(Protocol):
    """`on_leg_ended`'s signature (`by` is optional, as in the adapter's `Domain` port)."""

    def __call__(self, leg_id: str, by: HangupBy | None = None) -> None: ...


@dataclass(slots=True)
class Monitor:
    monitor_id: str  # the listener's leg id
    conn_id: str
    operation_id: str
    supervisor: str  # the extension rung, or the username whose board page listens
    requested_at: float
    started_at: float | None = None
    ended_at: float | None = None
    reason: str | None = None
    on: ListensOn = "phone"


@dataclass(frozen=True, slots=True)
class MonitorView:
    conn_id: str
    monitor_id: str
    supervisor: str
    state: MonitorState
    requested_at: float
    started_at: float | None
    ended_at: float | None
    reason: str | None
    on: ListensOn = "phone"


def view(m: Monitor) -> MonitorView:
    state: MonitorState = "ended" if m.ended_at is not None else "listening" if m.started_at is not None \
        else "ringing"
    return MonitorView(m.conn_id, m.monitor_id, m.supervisor, state, m.requested_at, m.started_at, m.ended_at,
                       m.reason, m.on)


class CallMonitors:
    def __init__(self, state: LiveState, ports: Ports, kernel: Kernel, agents: AgentDesk) -> None:
        self._state = state
        self._ports = ports
        self._k = kernel
        self._agents = agents
        self._by_leg: dict[str, Monitor] = {}
        self._by_call: dict[str, Monitor] = {}

    # --- the API's verbs ------------------------------------------------------------------------------------------
    def start_monitor(self, operation_id: str, conn_id: str, extension: str) -> MonitorView:
        call = self._state.live_call(operation_id, conn_id)
        rt = self._agents.find(operation_id, extension)
        if rt is None:
            raise ExtensionNotFound()
        if not rt.registered:
            raise PhoneNotRegistered()
        self._listenable(call)
        leg_id = self._state.ids("m")
        request = OriginateRequest(conn_id, leg_id, operation_id, "agent", extension, caller_id=call.customer_number,
                                   caller_name="listen", timeout=MONITOR_RING_SECONDS)
        if not self._ports.signalling.monitor(request):
            raise CallNotAnchored()
        return self._requested(Monitor(leg_id, conn_id, operation_id, extension, self._k.now()), call)

    def start_page_monitor(self, operation_id: str, conn_id: str, supervisor: str) -> MonitorView:
        """The supervisor `supervisor` (a username) listens in its board's page: the relay's WebRTC offer is the
        adapter's to hand to the page (`Signalling.listen_in_page`); the page's answer starts the listening."""
        call = self._state.live_call(operation_id, conn_id)
        self._listenable(call)
        leg_id = self._state.ids("m")
        if not self._ports.signalling.listen_in_page(conn_id, leg_id):
            raise CallNotAnchored()
        return self._requested(Monitor(leg_id, conn_id, operation_id, supervisor, self._k.now(), on="page"), call)

    def _listenable(self, call: Call) -> None:
        if call.answered_at is None or call.state not in ("connected", "transferring"):
            raise CallNotAnswered()
        if call.conn_id in self._by_call:
            raise MonitorInProgress()

    def _requested(self, m: Monitor, call: Call) -> MonitorView:
        k = self._k
        self._by_leg[m.monitor_id] = self._by_call[m.conn_id] = m
        k.history(call, "monitor_requested", m.supervisor)
        k.arm(f"monitor:{m.monitor_id}", MONITOR_RING_SECONDS, lambda: self._ring_timeout(m.monitor_id))
        return view(m)

    def stop_monitor(self, operation_id: str, conn_id: str) -> MonitorView:
        self._state.live_call(operation_id, conn_id)
        m = self._by_call.get(conn_id)
        if m is None:
            raise MonitorNotStarted()
        self._ports.signalling.release(m.monitor_id)
        self._end(m, "stopped")
        return view(m)

    def monitor_state(self, operation_id: str, conn_id: str) -> MonitorView:
        self._state.live_call(operation_id, conn_id)
        m = self._by_call.get(conn_id)
        if m is None:
            raise MonitorNotStarted()
        return view(m)

    def adopt(self, operation_id: str, conn_id: str, monitor_id: str, supervisor: str, started_at: float) -> bool:
        """A supervisor's phone listening to a call this node adopted (cluster.adopt): listening goes on here, as
        if this node had rung it (it is stopped, hung up and ended with the call as any other); False when the call
        is not one of this node's or has a listener already. Nothing is recorded or published: it started before."""
        call = self._state.calls.get(conn_id)
        if call is None or call.operation_id != operation_id or conn_id in self._by_call:
            return False
        m = Monitor(monitor_id, conn_id, operation_id, supervisor, started_at, started_at=started_at)
        self._by_leg[monitor_id] = self._by_call[conn_id] = m
        return True

    # --- the adapter's reports ------------------------------------------------------------------------------------
    def reports(self, answered: Callable[[str], None], failed: Callable[[str, int | None], None],
                ended: Callable[[str, HangupBy | None], None]) -> tuple[
            Callable[[str], None], Callable[[str, int | None], None], LegEnded]:
        """The service's `on_leg_answered`, `on_leg_failed` and `on_leg_ended`: a listener's leg is handled here,
        any other goes on to the call's own handling."""

        def on_answered(leg_id: str) -> None:
            m = self._by_leg.get(leg_id)
            if m is None:
                answered(leg_id)
            elif m.started_at is None:
                self._started(m)

        def on_failed(leg_id: str, sip_status: int | None) -> None:
            m = self._by_leg.get(leg_id)
            if m is None:
                failed(leg_id, sip_status)
            else:
                self._end(m, "no_answer")

        def on_ended(leg_id: str, by: HangupBy | None = None) -> None:
            m = self._by_leg.get(leg_id)
            if m is None:
                ended(leg_id, by)
            else:
                self._end(m, "supervisor_hangup")

        on_ended_report: LegEnded = on_ended
        return on_answered, on_failed, on_ended_report

    def call_ended(self, call: Call) -> None:
        """The call ended: its listener is hung up."""
        m = self._by_call.get(call.conn_id)
        if m is not None:
            self._ports.signalling.release(m.monitor_id)
            self._end(m, "call_ended", call)

    # --- inside ---------------------------------------------------------------------------------------------------
    def _ring_timeout(self, leg_id: str) -> None:
        m = self._by_leg.get(leg_id)
        if m is not None and m.started_at is None:
            self._ports.signalling.release(leg_id)
            self._end(m, "no_answer")

    def _started(self, m: Monitor) -> None:
        k = self._k
        k.disarm(f"monitor:{m.monitor_id}")
        m.started_at = k.now()
        call = self._state.calls.get(m.conn_id)
        if call is not None:
            k.history(call, "monitor_started", m.supervisor)
        k.emit(CallMonitorStarted(operation_id=m.operation_id, conn_id=m.conn_id, monitor_id=m.monitor_id,
                                  supervisor=m.supervisor, started_at=m.started_at))

    def _end(self, m: Monitor, reason: str, call: Call | None = None) -> None:
        k = self._k
        k.disarm(f"monitor:{m.monitor_id}")
        self._by_leg.pop(m.monitor_id, None)
        if self._by_call.get(m.conn_id) is m:
            del self._by_call[m.conn_id]
        m.ended_at, m.reason = k.now(), reason
        call = call or self._state.calls.get(m.conn_id)
        if call is not None:
            k.history(call, "monitor_ended", f"{m.supervisor} {reason}")
            self._ports.records.save_call(call.record())
        k.emit(CallMonitorEnded(operation_id=m.operation_id, conn_id=m.conn_id, monitor_id=m.monitor_id,
                                supervisor=m.supervisor, started_at=m.started_at, ended_at=m.ended_at,
                                reason=reason))
