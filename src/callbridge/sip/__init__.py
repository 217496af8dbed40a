"""callbridge.sip: the sans-I/O SIP core (no sockets, no clock reads, no asyncio). See docs/internals.md."""

from callbridge.sip.addr import Contact, CSeq, NameAddr, Via
from callbridge.sip.auth import (
    AuthError,
    AuthReason,
    AuthResult,
    DigestChallenger,
    DigestResponder,
    format_auth_header,
    parse_auth_header,
)
from callbridge.sip.dialog import Dialog, DialogState
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.errors import ParseError, SipError
from callbridge.sip.headers import Headers
from callbridge.sip.message import Message, Request, Response, make_response
from callbridge.sip.parser import StreamParser, parse
from callbridge.sip.sdp import SdpError, SessionDescription
from callbridge.sip.timers import TimerConfig
from callbridge.sip.uri import URI, parse_uri

__all__ = [
    "URI",
    "AuthError",
    "AuthReason",
    "AuthResult",
    "CSeq",
    "Contact",
    "Dialog",
    "DialogState",
    "DigestChallenger",
    "DigestResponder",
    "Endpoint",
    "Headers",
    "Message",
    "NameAddr",
    "ParseError",
    "Request",
    "Response",
    "SdpError",
    "SessionDescription",
    "SipError",
    "StreamParser",
    "TimerConfig",
    "Via",
    "format_auth_header",
    "make_response",
    "parse",
    "parse_auth_header",
    "parse_uri",
]
