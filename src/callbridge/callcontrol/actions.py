"""Actions: the verbs that wait for a SIP final response (hang, hold/unhold, mute/unmute, dtmf), and their outcomes.

An action is registered (and its `action_timeout` armed) before its request goes to the signalling port, so a
report that comes back at once is not lost. Its outcome is published as ActionCompleted/ActionFailed and kept for
the last 1000 actions. Hold and mute are one toggle (`Toggle`), told apart by the flag of the call they turn: the
change is applied only when the request succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from callbridge.callcontrol.calls import Call
from callbridge.callcontrol.commands import ActionTicket, ActionVerb
from callbridge.callcontrol.events import ActionCompleted, ActionFailed, CallHeld, CallMuted
from callbridge.callcontrol.kernel import Kernel
from callbridge.callcontrol.live import LiveState, PendingAction, keep
from callbridge.callcontrol.ports import Ports


@dataclass(frozen=True, slots=True)
class Toggle:
    """A flag of the call that a verb turns on and off: its two verbs and their history entries."""

    flag: Literal["held", "muted"]
    on: ActionVerb
    off: ActionVerb
    on_history: str
    off_history: str


HOLD = Toggle("held", "hold", "unhold", "held", "unheld")
"""api=hold: the customer's leg, re-INVITE sendonly / sendrecv."""
MUTE = Toggle("muted", "mute", "unmute", "muted", "unmuted")
"""api=mute: the agent's microphone toward the customer, on the agent's leg."""


class Actions:
    def __init__(self, state: LiveState, ports: Ports, kernel: Kernel) -> None:
        self._ids = state.ids
        self._ports = ports
        self._k = kernel
        self._actions = state.actions
        self._outcomes = state.outcomes

    def start(self, call: Call, verb: ActionVerb, send: Callable[[str], None],
              on_success: Callable[[], None] | None = None, turning_on: bool | None = None) -> ActionTicket:
        action_id = self._ids("a")
        self._actions[action_id] = PendingAction(action_id, verb, call.conn_id, call.operation_id, on_success)
        timeout = self._k.operation(call.operation_id).action_timeout
        self._k.arm(f"action:{action_id}", timeout, lambda: self.on_action_result(action_id, False, None))
        send(action_id)
        return ActionTicket(action_id, verb, call.conn_id, turning_on)

    def pending_verbs(self, conn_id: str) -> set[str]:
        return {a.verb for a in self._actions.values() if a.conn_id == conn_id}

    def toggle(self, call: Call, which: Toggle, leg_id: str) -> ActionTicket:
        """Turn `which` flag of the call the other way, by a request on `leg_id`; applied when it succeeds."""
        turning_on = not (call.held if which.flag == "held" else call.muted)
        k = self._k

        def applied() -> None:
            if which.flag == "held":
                call.held = turning_on
                event: CallHeld | CallMuted = CallHeld(operation_id=call.operation_id, conn_id=call.conn_id,
                                                       held=turning_on)
            else:
                call.muted = turning_on
                event = CallMuted(operation_id=call.operation_id, conn_id=call.conn_id, muted=turning_on)
            k.history(call, which.on_history if turning_on else which.off_history)
            k.emit(event)

        signalling = self._ports.signalling
        send = {"hold": signalling.hold, "unhold": signalling.unhold, "mute": signalling.mute,
                "unmute": signalling.unmute}
        verb = which.on if turning_on else which.off
        request = send[verb]
        return self.start(call, verb, lambda aid: request(leg_id, aid), applied, turning_on)

    def on_action_result(self, action_id: str, ok: bool, sip_status: int | None = None) -> None:
        """The adapter's report of the final response to a request sent with `action_id` (None: no response)."""
        pending = self._actions.pop(action_id, None)
        if pending is None:
            return  # an internal request (transfer hold/unhold), or a late answer after the timeout
        self._k.disarm(f"action:{action_id}")
        outcome: ActionCompleted | ActionFailed
        if ok:
            if pending.on_success is not None:
                pending.on_success()
            outcome = ActionCompleted(operation_id=pending.operation_id, action_id=action_id, verb=pending.verb,
                                      conn_id=pending.conn_id, sip_status=sip_status)
        else:
            outcome = ActionFailed(operation_id=pending.operation_id, action_id=action_id, verb=pending.verb,
                                   conn_id=pending.conn_id, sip_status=sip_status)
        keep(self._outcomes, action_id, self._k.emit(outcome))

    def action_outcome(self, action_id: str) -> ActionCompleted | ActionFailed | None:
        """The outcome of an action, once known (kept for the last 1000 actions)."""
        return self._outcomes.get(action_id)

