"""Domain errors. Each knows its stable `error_id`, and nothing about HTTP: the HTTP layer maps the id to the
contract's code and message (`callbridge.http.contract.ERROR_IDS`) or to a problem+json type.

A verb that raises one of these has changed nothing: validation runs before any state moves, in the contract's
order of precedence (agent → logged in → call state → transfer in progress → target / dial plan → signalling).

```
CallControlError                     error_id
 +-- InvalidParameter                INVALID_PARAMETER (.parameter: the offending parameter's name)
 |    +-- NumberNotAllowed           NUMBER_NOT_ALLOWED (parameter "customer_phone": the dial plan refuses it)
 +-- NotFound
 |    +-- AgentNotFound              AGENT_NOT_FOUND (also another operation's agent: indistinguishable)
 |    +-- CallNotFound               CALL_NOT_FOUND (native API)
 |    +-- TransferNotFound           TRANSFER_NOT_FOUND (native API)
 |    +-- DidNotFound                DID_NOT_FOUND (an inbound call to a number no DID names)
 |    +-- ExtensionNotFound          EXTENSION_NOT_FOUND (native API: a monitor's extension no agent has)
 +-- Conflict
 |    +-- AgentNotLoggedIn           AGENT_NOT_LOGGED_IN
 |    +-- CallStateError             (the "call state" rank of the precedence)
 |    |    +-- NoActiveCall          NO_ACTIVE_CALL
 |    |    +-- AlreadyOnCall         ALREADY_ON_CALL
 |    |    +-- NoRecentCall          NO_RECENT_CALL
 |    |    +-- NoCallToType          NO_CALL_TO_TYPE
 |    |    +-- PhoneNotRegistered    PHONE_NOT_REGISTERED
 |    |    +-- CallNotAnswered       CALL_NOT_ANSWERED (native API: listen to a call nobody answered yet)
 |    +-- TransferInProgress         TRANSFER_IN_PROGRESS
 |    +-- TargetNotAvailable         TARGET_NOT_AVAILABLE
 |    +-- TransferLimit              TRANSFER_LIMIT (hop limit; the agentbox answers it as TARGET_NOT_AVAILABLE)
 |    +-- TransferNotAnswered        TRANSFER_NOT_ANSWERED (complete an attended transfer before the answer)
 |    +-- TransferFinished           TRANSFER_FINISHED (complete/cancel a transfer that has ended)
 |    +-- CallNotUpdated             CALL_NOT_UPDATED (the phone or carrier refused or did not answer)
 |    +-- CallEnded                  CALL_ENDED (native API: a verb on a call that is no longer live)
 |    +-- RecordingNotAllowed        RECORDING_NOT_ALLOWED (the call's recording policy does not allow it)
 |    +-- RecordingUnavailable       RECORDING_UNAVAILABLE (not answered yet, or its media is not on a relay)
 |    +-- RecordingNotStarted        RECORDING_NOT_STARTED (pause or stop of a call that is not recorded)
 |    +-- CallNotAnchored            CALL_NOT_ANCHORED (listen to a call whose media is not on a relay)
 |    +-- MonitorInProgress          MONITOR_IN_PROGRESS (someone listens to the call already)
 |    +-- MonitorNotStarted          MONITOR_NOT_STARTED (stop listening to a call nobody listens to)
 +-- CallControlUnavailable          CALL_CONTROL_UNAVAILABLE (the signalling side cannot act now)
 +-- InvalidTransition               INVALID_TRANSITION (a state table has no such entry: a bug, never a
                                     client's fault)
```
"""

from __future__ import annotations


class CallControlError(Exception):
    error_id = "CALL_CONTROL_ERROR"
    default_message = "call control error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self)


class InvalidParameter(CallControlError):
    error_id = "INVALID_PARAMETER"

    def __init__(self, parameter: str, message: str | None = None) -> None:
        self.parameter = parameter
        super().__init__(message or f"invalid parameter: {parameter}")


class NumberNotAllowed(InvalidParameter):
    error_id = "NUMBER_NOT_ALLOWED"

    def __init__(self, parameter: str = "customer_phone", message: str | None = None) -> None:
        super().__init__(parameter, message or "the dial plan does not allow this number")


class NotFound(CallControlError):
    pass


class AgentNotFound(NotFound):
    error_id = "AGENT_NOT_FOUND"
    default_message = "agent does not exist"


class CallNotFound(NotFound):
    error_id = "CALL_NOT_FOUND"
    default_message = "call does not exist"


class TransferNotFound(NotFound):
    error_id = "TRANSFER_NOT_FOUND"
    default_message = "transfer does not exist"


class DidNotFound(NotFound):
    error_id = "DID_NOT_FOUND"
    default_message = "no such number"


class Conflict(CallControlError):
    pass


class AgentNotLoggedIn(Conflict):
    error_id = "AGENT_NOT_LOGGED_IN"
    default_message = "agent is not logged in"


class CallStateError(Conflict):
    pass


class NoActiveCall(CallStateError):
    error_id = "NO_ACTIVE_CALL"
    default_message = "agent has no active call"


class AlreadyOnCall(CallStateError):
    error_id = "ALREADY_ON_CALL"
    default_message = "agent already has an active call"


class NoRecentCall(CallStateError):
    error_id = "NO_RECENT_CALL"
    default_message = "no recent call"


class NoCallToType(CallStateError):
    error_id = "NO_CALL_TO_TYPE"
    default_message = "no call to type"


class PhoneNotRegistered(CallStateError):
    error_id = "PHONE_NOT_REGISTERED"
    default_message = "agent phone is not registered"


class TransferInProgress(Conflict):
    error_id = "TRANSFER_IN_PROGRESS"
    default_message = "a transfer is already in progress"


class TargetNotAvailable(Conflict):
    error_id = "TARGET_NOT_AVAILABLE"
    default_message = "transfer target is not available"


class TransferLimit(Conflict):
    error_id = "TRANSFER_LIMIT"
    default_message = "the call has been transferred too many times"


class TransferNotAnswered(Conflict):
    error_id = "TRANSFER_NOT_ANSWERED"
    default_message = "the transfer target has not answered"


class TransferFinished(Conflict):
    error_id = "TRANSFER_FINISHED"
    default_message = "the transfer has already ended"


class CallNotUpdated(Conflict):
    error_id = "CALL_NOT_UPDATED"
    default_message = "call could not be updated"


class CallEnded(Conflict):
    error_id = "CALL_ENDED"
    default_message = "the call has ended"


class RecordingNotAllowed(Conflict):
    error_id = "RECORDING_NOT_ALLOWED"
    default_message = "the call's recording policy does not allow it"


class RecordingUnavailable(Conflict):
    error_id = "RECORDING_UNAVAILABLE"
    default_message = "the call cannot be recorded: it is not answered yet, or its media does not go through a relay"


class RecordingNotStarted(Conflict):
    error_id = "RECORDING_NOT_STARTED"
    default_message = "the call is not being recorded"


class ExtensionNotFound(NotFound):
    error_id = "EXTENSION_NOT_FOUND"
    default_message = "no such extension in the operation"


class CallNotAnswered(CallStateError):
    error_id = "CALL_NOT_ANSWERED"
    default_message = "the call is not answered yet: nobody talks to listen to"


class CallNotAnchored(Conflict):
    error_id = "CALL_NOT_ANCHORED"
    default_message = "the call's media does not go through a relay: nobody can listen to it"


class MonitorInProgress(Conflict):
    error_id = "MONITOR_IN_PROGRESS"
    default_message = "someone listens to the call already"


class MonitorNotStarted(Conflict):
    error_id = "MONITOR_NOT_STARTED"
    default_message = "nobody listens to the call"


class CallControlUnavailable(CallControlError):
    error_id = "CALL_CONTROL_UNAVAILABLE"
    default_message = "call control is not available"


class InvalidTransition(CallControlError):
    """A state table has no entry for (state, input): the caller asked for something the machine cannot do."""

    error_id = "INVALID_TRANSITION"

    def __init__(self, machine: str, state: str, event: str) -> None:
        self.machine = machine
        self.state = state
        self.event = event
        super().__init__(f"{machine}: no transition from {state!r} on {event!r}")
