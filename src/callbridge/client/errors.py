"""The errors the clients raise, one class per thing that went wrong, each carrying ``code``, ``error`` and ``msg``.

The agentbox endpoint answers errors in the envelope ``{"code": "403", "error": "FORBIDDEN", "msg": "..."}``; the
native API answers RFC 9457 problems with an ``error`` key. Both map onto the same classes: the agentbox ``msg``
(upper-case, documented) or the problem's ``error`` key picks the class. A message this client does not know (the
Wolkvox cloud words some things its own way) falls back to the class of its HTTP status, so ``except Conflict``
still catches it::

    AgentboxError                      root of everything the clients raise; .code .error .msg .status .key
     +-- UnexpectedResponse            not an envelope or a problem (an HTML error page, broken JSON...)
     +-- BadRequest                    400
     |    +-- UnknownApi               THE API YOU WANT TO CONSULT DOES NOT EXIST
     |    +-- MissingParameters        SOME PARAMETERS ARE REQUIRED
     |    +-- InvalidParameter         INVALID PARAMETER: <name>   (.name; includes a number the dial plan refuses)
     +-- TokenMissing                  401 PLEASE ENTER THE WOLKVOX-TOKEN
     +-- Forbidden                     403
     |    +-- InvalidToken             PLEASE VALIDATE TOKEN
     |    +-- ConcurrencyLimit         EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (n)   (.limit)
     |    +-- TokenLimitExceeded       TOKEN LIMIT EXCEEDED
     +-- NotFound                      404
     |    +-- AgentNotFound            AGENT DOES NOT EXIST
     |    +-- TransferNotFound         (native) TRANSFER DOES NOT EXIST
     |    +-- CallNotFound             (native) CALL DOES NOT EXIST
     |    +-- RecordingNotFound        (native) the call has no stored recording
     |    +-- ExtensionNotFound        (native) a monitor's extension no agent has
     +-- MethodNotAllowed              405 USE POST
     +-- Conflict                      409
     |    +-- AgentNotLoggedIn         AGENT IS NOT LOGGED IN
     |    +-- NoActiveCall             AGENT HAS NO ACTIVE CALL
     |    +-- AgentAlreadyOnCall       AGENT ALREADY HAS AN ACTIVE CALL
     |    +-- TransferInProgress       A TRANSFER IS ALREADY IN PROGRESS
     |    +-- TransferTargetUnavailable TRANSFER TARGET IS NOT AVAILABLE
     |    +-- PhoneNotRegistered       AGENT PHONE IS NOT REGISTERED
     |    +-- NoRecentCall             NO RECENT CALL
     |    +-- NoCallToType             NO CALL TO TYPE
     |    +-- CallNotUpdated           CALL COULD NOT BE UPDATED
     |    +-- TransferLimit            (native) the call was transferred too many times
     |    +-- NotAttended              (native) complete/cancel of a blind transfer
     |    +-- TransferNotAnswered      (native) complete before the target answered
     |    +-- TransferFinished         (native) complete/cancel of a finished transfer
     |    +-- IdempotencyKeyInUse      (native) the first request with this key is still running
     |    +-- CallEnded                (native) a recording verb on a call that is no longer live
     |    +-- RecordingNotAllowed      (native) the call's recording policy does not allow it
     |    +-- RecordingUnavailable     (native) not answered yet, or its media is not on a relay
     |    +-- RecordingNotStarted      (native) pause or stop of a call that is not recorded
     |    +-- CallNotAnswered          (native) listen to a call nobody answered yet
     |    +-- CallNotAnchored          (native) listen to a call whose media is not on a relay
     |    +-- MonitorInProgress        (native) someone listens to the call already
     |    +-- MonitorNotStarted        (native) stop listening to a call nobody listens to
     +-- IdempotencyKeyReused          (native) 422: the key was used with another body
     +-- RangeNotSatisfiable           (native) 416: the Range of a recording cannot be served
     +-- EventsExpired                 (native) 410: resuming from a seq the server no longer keeps (.oldest_seq)
     +-- ServerError                   5xx
          +-- CallControlUnavailable   503 CALL CONTROL IS NOT AVAILABLE

Transport failures (connection refused, timeouts) are httpx's own exceptions and are not wrapped: they do not say
whether the server acted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


class AgentboxError(Exception):
    """Root of the clients' errors. ``code`` is the envelope's code (or the problem's status) as an int, ``error``
    the upper-case reason (None when the server sent none), ``msg`` the message, ``status`` the HTTP status,
    ``key`` the contract's stable error key when known, ``problem`` the native API's problem object."""

    key: str | None = None

    def __init__(self, code: int, error: str | None, msg: str, *, status: int | None = None,
                 key: str | None = None, problem: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code} {error or ''}: {msg}".replace(" :", ":"))
        self.code = code
        self.error = error
        self.msg = msg
        self.status = code if status is None else status
        if key is not None:
            self.key = key
        self.problem = dict(problem) if problem is not None else None


class UnexpectedResponse(AgentboxError):
    """The server answered something that is neither an envelope nor a problem; ``body`` holds its text."""

    def __init__(self, status: int, body: str, reason: str) -> None:
        super().__init__(status, None, reason, status=status)
        self.body = body


class BadRequest(AgentboxError):
    """Any 400; raised as itself when the message is not one this client knows."""


class UnknownApi(BadRequest):
    key = "UNKNOWN_API"


class MissingParameters(BadRequest):
    key = "MISSING_PARAMETERS"


class InvalidParameter(BadRequest):
    """``name`` is the parameter the server named (``customer_phone`` for a number the dial plan refuses)."""

    key = "INVALID_PARAMETER"

    def __init__(self, code: int, error: str | None, msg: str, *, name: str | None = None, **kw: Any) -> None:
        super().__init__(code, error, msg, **kw)
        if name is None:
            match = re.fullmatch(r"INVALID PARAMETER:\s*(\S+)", msg.strip(), re.IGNORECASE)
            name = match.group(1) if match else None
        self.name = name


class TokenMissing(AgentboxError):
    key = "TOKEN_MISSING"


class Forbidden(AgentboxError):
    """Any 403; raised as itself when the message is not one this client knows."""


class InvalidToken(Forbidden):
    key = "INVALID_TOKEN"


class ConcurrencyLimit(Forbidden):
    """``limit`` is the number of requests in flight the server allows per token, when it said."""

    key = "CONCURRENCY_LIMIT"

    def __init__(self, code: int, error: str | None, msg: str, **kw: Any) -> None:
        super().__init__(code, error, msg, **kw)
        match = re.search(r"\((\d+)\)", msg)
        self.limit = int(match.group(1)) if match else None


class TokenLimitExceeded(Forbidden):
    key = "TOKEN_LIMIT_EXCEEDED"


class NotFound(AgentboxError):
    """Any 404; raised as itself when the message is not one this client knows."""


class AgentNotFound(NotFound):
    key = "AGENT_NOT_FOUND"


class TransferNotFound(NotFound):
    key = "TRANSFER_NOT_FOUND"


class CallNotFound(NotFound):
    key = "CALL_NOT_FOUND"


class MethodNotAllowed(AgentboxError):
    key = "METHOD_NOT_ALLOWED"


class Conflict(AgentboxError):
    """Any 409; raised as itself when the message is not one this client knows."""


class AgentNotLoggedIn(Conflict):
    key = "AGENT_NOT_LOGGED_IN"


class NoActiveCall(Conflict):
    key = "NO_ACTIVE_CALL"


class AgentAlreadyOnCall(Conflict):
    key = "ALREADY_ON_CALL"


class TransferInProgress(Conflict):
    key = "TRANSFER_IN_PROGRESS"


class TransferTargetUnavailable(Conflict):
    key = "TARGET_NOT_AVAILABLE"


class PhoneNotRegistered(Conflict):
    key = "PHONE_NOT_REGISTERED"


class NoRecentCall(Conflict):
    key = "NO_RECENT_CALL"


class NoCallToType(Conflict):
    key = "NO_CALL_TO_TYPE"


class CallNotUpdated(Conflict):
    key = "CALL_NOT_UPDATED"


class TransferLimit(Conflict):
    key = "TRANSFER_LIMIT"


class NotAttended(Conflict):
    key = "NOT_ATTENDED"


class TransferNotAnswered(Conflict):
    key = "TRANSFER_NOT_ANSWERED"


class TransferFinished(Conflict):
    key = "TRANSFER_FINISHED"


class IdempotencyKeyInUse(Conflict):
    key = "IDEMPOTENCY_KEY_IN_USE"


class CallEnded(Conflict):
    key = "CALL_ENDED"


class RecordingNotAllowed(Conflict):
    key = "RECORDING_NOT_ALLOWED"


class RecordingUnavailable(Conflict):
    key = "RECORDING_UNAVAILABLE"


class RecordingNotStarted(Conflict):
    key = "RECORDING_NOT_STARTED"


class RecordingNotFound(NotFound):
    key = "RECORDING_NOT_FOUND"


class ExtensionNotFound(NotFound):
    key = "EXTENSION_NOT_FOUND"


class CallNotAnswered(Conflict):
    key = "CALL_NOT_ANSWERED"


class CallNotAnchored(Conflict):
    key = "CALL_NOT_ANCHORED"


class MonitorInProgress(Conflict):
    key = "MONITOR_IN_PROGRESS"


class MonitorNotStarted(Conflict):
    key = "MONITOR_NOT_STARTED"


class RangeNotSatisfiable(AgentboxError):
    key = "RANGE_NOT_SATISFIABLE"


class IdempotencyKeyReused(AgentboxError):
    key = "IDEMPOTENCY_KEY_REUSED"


class EventsExpired(AgentboxError):
    """``oldest_seq`` is the oldest event the server still keeps (resume from ``oldest_seq - 1`` to take them)."""

    key = "EVENTS_EXPIRED"

    def __init__(self, code: int, error: str | None, msg: str, **kw: Any) -> None:
        super().__init__(code, error, msg, **kw)
        oldest = (self.problem or {}).get("oldest_seq")
        self.oldest_seq = oldest if isinstance(oldest, int) else None


class ServerError(AgentboxError):
    """Any 5xx; raised as itself when the message is not one this client knows."""


class CallControlUnavailable(ServerError):
    key = "CALL_CONTROL_UNAVAILABLE"


# The agentbox contract's fixed messages -> class (the contract's rows, docs/agentbox-contract.md).
AGENTBOX_MESSAGES: Mapping[str, type[AgentboxError]] = {
    "THE API YOU WANT TO CONSULT DOES NOT EXIST": UnknownApi,
    "SOME PARAMETERS ARE REQUIRED": MissingParameters,
    "PLEASE ENTER THE WOLKVOX-TOKEN": TokenMissing,
    "PLEASE VALIDATE TOKEN": InvalidToken,
    "TOKEN LIMIT EXCEEDED": TokenLimitExceeded,
    "AGENT DOES NOT EXIST": AgentNotFound,
    "AGENT IS NOT LOGGED IN": AgentNotLoggedIn,
    "AGENT HAS NO ACTIVE CALL": NoActiveCall,
    "AGENT ALREADY HAS AN ACTIVE CALL": AgentAlreadyOnCall,
    "A TRANSFER IS ALREADY IN PROGRESS": TransferInProgress,
    "TRANSFER TARGET IS NOT AVAILABLE": TransferTargetUnavailable,
    "USE POST": MethodNotAllowed,
    "CALL CONTROL IS NOT AVAILABLE": CallControlUnavailable,
    "AGENT PHONE IS NOT REGISTERED": PhoneNotRegistered,
    "NO RECENT CALL": NoRecentCall,
    "NO CALL TO TYPE": NoCallToType,
    "CALL COULD NOT BE UPDATED": CallNotUpdated,
}
_PREFIXES: tuple[tuple[str, type[AgentboxError]], ...] = (
    ("INVALID PARAMETER", InvalidParameter),
    ("EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN", ConcurrencyLimit),
)


def _all_classes(root: type[AgentboxError]) -> list[type[AgentboxError]]:
    out = [root]
    for sub in root.__subclasses__():
        out.extend(_all_classes(sub))
    return out


# Problem key -> class. NUMBER_NOT_ALLOWED (the dial plan refused the number) reads on agentbox as the invalid
# parameter it is worded as, and is raised as one on the native API too, with its own key.
BY_KEY: Mapping[str, type[AgentboxError]] = {
    **{cls.key: cls for cls in _all_classes(AgentboxError) if cls.key},
    "NUMBER_NOT_ALLOWED": InvalidParameter,
}
_BY_STATUS: Mapping[int, type[AgentboxError]] = {
    400: BadRequest, 401: TokenMissing, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed, 409: Conflict,
}


def class_for_status(status: int) -> type[AgentboxError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else AgentboxError


def from_envelope(code: int, error: str | None, msg: str, *, status: int) -> AgentboxError:
    """The exception an agentbox error envelope stands for: by its message, else by its code."""
    normalised = " ".join(msg.split()).upper()
    cls = AGENTBOX_MESSAGES.get(normalised)
    if cls is None:
        cls = next((c for prefix, c in _PREFIXES if normalised.startswith(prefix)), None)
    if cls is None:
        cls = class_for_status(code)
    return cls(code, error, msg, status=status)


def from_problem(problem: Mapping[str, Any], *, status: int) -> AgentboxError:
    """The exception a native problem object stands for: by its ``error`` key, else by its status."""
    key = problem.get("error")
    raw_status = problem.get("status")
    code = raw_status if isinstance(raw_status, int) else status
    title = str(problem.get("title") or "")
    msg = str(problem.get("detail") or title)
    cls = BY_KEY.get(key) if isinstance(key, str) else None
    if cls is None:
        cls = class_for_status(code)
    kwargs: dict[str, Any] = {"status": status, "problem": problem}
    if isinstance(key, str):
        kwargs["key"] = key
    if cls is InvalidParameter and isinstance(problem.get("parameter"), str):
        kwargs["name"] = problem["parameter"]
    return cls(code, title or None, msg, **kwargs)
