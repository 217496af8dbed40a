"""callbridge.client: typed Python clients of the agentbox endpoint (callbridge or the Wolkvox cloud) and of
callbridge's native API. Depends on httpx and the standard library only.

    from callbridge.client import AgentboxClient, NoActiveCall

    with AgentboxClient("http://127.0.0.1:8080", token="...", server="0042") as box:
        try:
            print(box.transfer("1001", "1002").conn_id)
        except NoActiveCall:
            ...

``AgentboxClient.for_wolkvox(server="0042", token=...)`` talks to ``https://wv0042.wolkvox.com`` instead. The
errors' tree is drawn in :mod:`callbridge.client.errors`; the limits (two requests in flight per token, retrying
the concurrency refusal, 60 s) in :mod:`callbridge.client.limits`.
"""

from callbridge.client.agentbox import AgentboxClient, AsyncAgentboxClient, wolkvox_url
from callbridge.client.errors import (
    AgentAlreadyOnCall,
    AgentboxError,
    AgentNotFound,
    AgentNotLoggedIn,
    BadRequest,
    CallControlUnavailable,
    CallEnded,
    CallNotAnchored,
    CallNotAnswered,
    CallNotFound,
    CallNotUpdated,
    ConcurrencyLimit,
    Conflict,
    EventsExpired,
    ExtensionNotFound,
    Forbidden,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidParameter,
    InvalidToken,
    MethodNotAllowed,
    MissingParameters,
    MonitorInProgress,
    MonitorNotStarted,
    NoActiveCall,
    NoCallToType,
    NoRecentCall,
    NotAttended,
    NotFound,
    PhoneNotRegistered,
    RangeNotSatisfiable,
    RecordingNotAllowed,
    RecordingNotFound,
    RecordingNotStarted,
    RecordingUnavailable,
    ServerError,
    TokenLimitExceeded,
    TokenMissing,
    TransferFinished,
    TransferInProgress,
    TransferLimit,
    TransferNotAnswered,
    TransferNotFound,
    TransferTargetUnavailable,
    UnexpectedResponse,
    UnknownApi,
)
from callbridge.client.limits import RetryPolicy
from callbridge.client.models import Agent, Call, Cdr, Event, Leg, Page, Transfer
from callbridge.client.native import AsyncNativeClient, NativeClient
from callbridge.client.results import (
    AgentboxResult,
    AuxCallResult,
    DialResult,
    DtmfResult,
    ToggleResult,
    TransferResult,
)

__all__ = [
    "Agent", "AgentAlreadyOnCall", "AgentNotFound", "AgentNotLoggedIn", "AgentboxClient", "AgentboxError",
    "AgentboxResult", "AsyncAgentboxClient", "AsyncNativeClient", "AuxCallResult", "BadRequest", "Call",
    "CallControlUnavailable", "CallEnded", "CallNotAnchored", "CallNotAnswered", "CallNotFound", "CallNotUpdated",
    "Cdr", "ConcurrencyLimit", "Conflict", "DialResult", "DtmfResult", "Event", "EventsExpired",
    "ExtensionNotFound", "Forbidden", "IdempotencyKeyInUse", "IdempotencyKeyReused", "InvalidParameter",
    "InvalidToken", "Leg", "MethodNotAllowed", "MissingParameters", "MonitorInProgress", "MonitorNotStarted",
    "NativeClient", "NoActiveCall", "NoCallToType", "NoRecentCall", "NotAttended", "NotFound", "Page",
    "PhoneNotRegistered", "RangeNotSatisfiable", "RecordingNotAllowed", "RecordingNotFound", "RecordingNotStarted",
    "RecordingUnavailable", "RetryPolicy", "ServerError", "ToggleResult", "TokenLimitExceeded", "TokenMissing",
    "Transfer", "TransferFinished", "TransferInProgress", "TransferLimit", "TransferNotAnswered",
    "TransferNotFound", "TransferResult", "TransferTargetUnavailable", "UnexpectedResponse", "UnknownApi",
    "wolkvox_url",
]
