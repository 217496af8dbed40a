"""callbridge.sip: the sans-I/O SIP core (no sockets, no clock reads, no asyncio). See docs/internals.md."""

from callbridge.sip.addr import Contact, CSeq, NameAddr, Via
from callbridge.sip.errors import ParseError, SipError
from callbridge.sip.headers import Headers
from callbridge.sip.message import Message, Request, Response, make_response
from callbridge.sip.parser import StreamParser, parse
from callbridge.sip.uri import URI, parse_uri

__all__ = [
    "URI",
    "CSeq",
    "Contact",
    "Headers",
    "Message",
    "NameAddr",
    "ParseError",
    "Request",
    "Response",
    "SipError",
    "StreamParser",
    "Via",
    "make_response",
    "parse",
    "parse_uri",
]
