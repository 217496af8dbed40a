"""A call's recording, as the domain decides it: the recording policy and the native API's start, stop and pause.

Rules (docs/operations.md, "Recordings")
- The policy of a call is its queue's, else its operation's (`directory.recording_policy`), read when it is used.
- `always`: the call is recorded from its first answer on (`answered`), across every transfer, until it ends; it
  may be paused and resumed, not stopped. `on_demand`: nothing is recorded until asked; then start, stop, pause
  and resume. `never`: nothing, and every verb answers RECORDING_NOT_ALLOWED.
- The adapter only hears "on" or "off" (`Signalling.record`); a pause and a stop are both "off" there. It answers
  False when the call cannot be recorded (its media does not go through a relay): RECORDING_UNAVAILABLE.
- Order of the checks: the call (CALL_NOT_FOUND, also another operation's; CALL_ENDED), then the policy, then the
  call's state (answered, recorded). A verb that raises has changed nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.callcontrol.calls import Call, RecordingState
from callbridge.callcontrol.directory import RecordingPolicy, recording_policy
from callbridge.callcontrol.errors import (
    RecordingNotAllowed,
    RecordingNotStarted,
    RecordingUnavailable,
)
from callbridge.callcontrol.live import LiveState
from callbridge.callcontrol.ports import Ports


@dataclass(frozen=True, slots=True)
class RecordingView:
    conn_id: str
    policy: RecordingPolicy
    state: RecordingState


class CallRecordings:
    def __init__(self, state: LiveState, ports: Ports) -> None:
        self._state = state
        self._ports = ports

    def policy(self, call: Call) -> RecordingPolicy:
        directory = self._ports.directory
        operation = directory.get_operation(call.operation_id)
        if operation is None:
            return "never"
        queue = directory.get_queue(call.operation_id, call.queue) if call.queue is not None else None
        return recording_policy(operation, queue)

    def answered(self, call: Call) -> None:
        """The call's first answer: `always` starts recording it."""
        if call.recording == "off" and self.policy(call) == "always" and self._ports.signalling.record(
                call.conn_id, True):
            call.recording = "recording"

    def _view(self, call: Call) -> RecordingView:
        return RecordingView(call.conn_id, self.policy(call), call.recording)

    def recording_state(self, operation_id: str, conn_id: str) -> RecordingView:
        return self._view(self._state.live_call(operation_id, conn_id))

    def _set(self, call: Call, state: RecordingState) -> RecordingView:
        on = state == "recording"
        changes = (call.recording == "recording") != on
        if changes and (call.answered_at is None or not self._ports.signalling.record(call.conn_id, on)):
            raise RecordingUnavailable()
        call.recording = state
        return self._view(call)

    def start_recording(self, operation_id: str, conn_id: str) -> RecordingView:
        call = self._state.live_call(operation_id, conn_id)
        policy = self.policy(call)
        if policy != "on_demand":
            raise RecordingNotAllowed(_refusal(policy, "started"))
        return self._set(call, "recording")

    def stop_recording(self, operation_id: str, conn_id: str) -> RecordingView:
        call = self._state.live_call(operation_id, conn_id)
        policy = self.policy(call)
        if policy != "on_demand":
            raise RecordingNotAllowed(_refusal(policy, "stopped"))
        if call.recording not in ("recording", "paused"):
            raise RecordingNotStarted()
        return self._set(call, "stopped")

    def pause_recording(self, operation_id: str, conn_id: str, paused: bool) -> RecordingView:
        call = self._state.live_call(operation_id, conn_id)
        policy = self.policy(call)
        if policy == "never":
            raise RecordingNotAllowed(_refusal(policy, "paused" if paused else "resumed"))
        if call.recording not in ("recording", "paused"):
            raise RecordingNotStarted()
        return self._set(call, "paused" if paused else "recording")


def _refusal(policy: RecordingPolicy, what: str) -> str:
    if policy == "never":
        return f"recording is off for this call (policy never): it cannot be {what}"
    return f"this call is recorded from its answer to its end (policy always): it cannot be {what}; pause it instead"
