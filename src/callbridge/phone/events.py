"""What a phone reports: one frozen dataclass per thing that happened, read with ``Phone.events()`` or
``Phone.wait_for()``.

Every call the phone knows ends with exactly one `CallEnded` (whatever ended it: a BYE either way, a CANCEL, a
rejection, a failure, a replacement); a call that fails before it is answered reports `CallFailed` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from callbridge.sip import Request, Response

if TYPE_CHECKING:
    from callbridge.phone.call import Call

__all__ = [
    "Answered",
    "CallEnded",
    "CallFailed",
    "DtmfReceived",
    "Established",
    "Held",
    "IncomingCall",
    "InfoReceived",
    "PhoneEvent",
    "ReInviteReceived",
    "ReferReceived",
    "Registered",
    "RegistrationFailed",
    "Resumed",
    "Ringing",
    "TransferDone",
    "TransferProgress",
    "Unregistered",
]

EndedBy = Literal["local", "remote"]


@dataclass(frozen=True, slots=True)
class Registered:
    """The registrar accepted our binding (2xx to REGISTER); ``expires`` is what it granted."""

    registrar: tuple[str, int]
    expires: int


@dataclass(frozen=True, slots=True)
class Unregistered:
    """The binding was removed (2xx to REGISTER with Expires: 0)."""

    registrar: tuple[str, int]


@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    """REGISTER failed: a final status (``0`` when no response came at all) and why."""

    registrar: tuple[str, int]
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """An INVITE for a new call arrived; ``replaces`` is the call it replaces (RFC 3891), if any."""

    call: Call
    request: Request
    replaces: Call | None = None


@dataclass(frozen=True, slots=True)
class Ringing:
    """Our INVITE got a provisional 180/183 (``status``)."""

    call: Call
    status: int


@dataclass(frozen=True, slots=True)
class Answered:
    """Our INVITE got a 2xx (the ACK is on its way)."""

    call: Call
    response: Response


@dataclass(frozen=True, slots=True)
class Established:
    """The dialog is confirmed (2xx sent and ACKed, or 2xx received)."""

    call: Call


@dataclass(frozen=True, slots=True)
class ReInviteReceived:
    """The far end re-INVITEd; the phone has answered it (``request.body`` is its offer, or empty)."""

    call: Call
    request: Request


@dataclass(frozen=True, slots=True)
class Held:
    """The far end put us on hold: its media direction went from sending to not sending (RFC 3264 §8.4)."""

    call: Call
    direction: str


@dataclass(frozen=True, slots=True)
class Resumed:
    """The far end took us off hold."""

    call: Call
    direction: str


@dataclass(frozen=True, slots=True)
class ReferReceived:
    """A REFER arrived in a call (answered 202); ``refer_to`` is its target as written."""

    call: Call
    request: Request
    refer_to: str


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """A NOTIFY (Event: refer) carried the status line of the transfer's new call (RFC 3515 §2.4.5)."""

    call: Call
    status: int


@dataclass(frozen=True, slots=True)
class TransferDone:
    """The transfer reached a final status: ``succeeded`` when it was a 2xx."""

    call: Call
    status: int

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """An INFO carrying one DTMF digit (application/dtmf-relay or application/dtmf)."""

    call: Call
    digit: str


@dataclass(frozen=True, slots=True)
class InfoReceived:
    """An INFO that is not DTMF (answered 200)."""

    call: Call
    request: Request


@dataclass(frozen=True, slots=True)
class CallFailed:
    """Our INVITE ended without an answer: a final non-2xx ``status`` (408 for a time-out, 503 for transport)."""

    call: Call
    status: int


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over. ``reason``: "bye", "cancelled", "rejected", "failed", "replaced", "timeout",
    "session-expired", "closed"; ``status`` the final SIP status when one ended it (486, 487, ...), else None."""

    call: Call
    reason: str
    status: int | None
    by: EndedBy


PhoneEvent = (
    Registered
    | Unregistered
    | RegistrationFailed
    | IncomingCall
    | Ringing
    | Answered
    | Established
    | ReInviteReceived
    | Held
    | Resumed
    | ReferReceived
    | TransferProgress
    | TransferDone
    | DtmfReceived
    | InfoReceived
    | CallFailed
    | CallEnded
)
