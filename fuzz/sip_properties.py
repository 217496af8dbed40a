"""The properties every parsed SIP message must have, whoever draws the bytes: the atheris target
(`fuzz/sip_parser.py`) and the hypothesis tests (`tests/sip/test_fuzz.py`) check the same ones.

- `parse` refuses with `ParseError` only, with a status the parser may answer (400, 501, 505) or None (drop);
- a message serialises to bytes that parse to an equal message, and `StreamParser` frames those bytes as the same
  message (round trip);
- every typed accessor, and a request's URI, raises `SipError` or nothing.
"""

from __future__ import annotations

from callbridge.sip import Message, ParseError, Request, SipError, StreamParser, parse

ANSWERABLE = (None, 400, 501, 505)
ACCESSORS = (
    "via", "vias", "call_id", "cseq", "from_", "to", "contacts", "routes", "record_routes", "diversions",
    "history_info", "refer_to", "referred_by", "max_forwards", "expires", "content_type", "replaces", "event",
    "subscription_state", "session_expires", "min_se", "authorization", "proxy_authorization", "www_authenticate",
    "proxy_authenticate",
)


def round_trip(message: Message) -> None:
    """Serialise, re-parse, re-frame as a stream, and read every accessor."""
    wire = bytes(message)
    again = parse(wire)
    if again != message:
        raise AssertionError(f"round trip changed the message:\n{wire!r}\n->\n{bytes(again)!r}")
    framed = StreamParser()
    framed.feed(wire)
    streamed = framed.next_message()
    if streamed != message:
        raise AssertionError(f"the stream framed the serialised message differently: {streamed!r}")
    for name in ACCESSORS:
        try:
            getattr(message, name)
        except SipError:
            pass
    if isinstance(message, Request):
        try:
            str(message.uri)
        except SipError:
            pass


def check_status(error: ParseError) -> None:
    """A refusal's status is one the parser may answer, or None (drop)."""
    if error.status not in ANSWERABLE:
        raise AssertionError(f"parse error with status {error.status}: {error}") from error
