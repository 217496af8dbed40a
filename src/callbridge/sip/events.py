"""Events the endpoint reports to its transaction user (TU): the phone, the B2BUA.

Every event is a frozen dataclass read with `Endpoint.next_event()` in the order it happened. Each `Dialog` the
endpoint creates is reported terminated exactly once (`DialogTerminated`), whatever ended it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from callbridge.sip.message import Request, Response

if TYPE_CHECKING:
    from callbridge.sip.dialog import Dialog
    from callbridge.sip.transaction import ClientTransaction, ServerTransaction, Transaction

__all__ = [
    "AckReceived",
    "ConnectionClosed",
    "DialogEstablished",
    "DialogTerminated",
    "Event",
    "InviteCancelled",
    "RequestReceived",
    "ResponseReceived",
    "SessionExpired",
    "TransactionTimedOut",
    "TransportError",
]


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU to answer with `Endpoint.respond(transaction, ...)`."""

    request: Request
    transaction: ServerTransaction
    dialog: Dialog | None


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The ACK for a 2xx we sent to an INVITE (it may carry the SDP answer)."""

    request: Request
    dialog: Dialog


@dataclass(frozen=True, slots=True)
class InviteCancelled:
    """A CANCEL arrived for an unanswered INVITE; the endpoint answered 200 (CANCEL) and 487 (INVITE)."""

    transaction: ServerTransaction
    request: Request


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response to one of our requests (retransmissions of a 2xx are absorbed, not reported)."""

    response: Response
    transaction: ClientTransaction
    dialog: Dialog | None


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B, F or H fired: no response (client) or no ACK (server)."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class TransportError:
    """The request or response could not be sent (e.g. a destination that is not an IP literal)."""

    transaction: Transaction
    reason: str


@dataclass(frozen=True, slots=True)
class DialogEstablished:
    """The dialog is confirmed (2xx sent or received for the INVITE that created it)."""

    dialog: Dialog


@dataclass(frozen=True, slots=True)
class DialogTerminated:
    """The dialog ended: "bye" (received), "bye-sent", "rejected", "cancelled", "session-expired",
    "ack-timeout", "timeout" (a request in it timed out, or got 408/481), "transport-error"."""

    dialog: Dialog
    reason: str


@dataclass(frozen=True, slots=True)
class SessionExpired:
    """RFC 4028: no session refresh arrived in time; a BYE was sent and `DialogTerminated` follows."""

    dialog: Dialog


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """A connection-bound flow closed (a SIP WebSocket, RFC 7118 §5): whatever was reached through `addr` over
    `transport` cannot be reached any more (the browser's Contact names a `.invalid` host)."""

    addr: tuple[str, int]
    transport: str


Event = (
    RequestReceived
    | AckReceived
    | InviteCancelled
    | ResponseReceived
    | TransactionTimedOut
    | TransportError
    | DialogEstablished
    | DialogTerminated
    | SessionExpired
    | ConnectionClosed
)
