"""Parsing SIP messages from bytes: one datagram (``parse``) or a byte stream (``StreamParser``).

Theory of operation (RFC 3261 §7, §18.3): the head is split from the body at the first blank line with one
``find``, decoded once (UTF-8; octets that are not UTF-8 survive as ``surrogateescape`` characters and are written
back unchanged), split into lines once; folded lines (§7.3.1) are joined with one space. Each field becomes
``(key, name, value)`` with the value kept as a raw string; structures are parsed on first read (``message.py``).
Header names seen before are looked up in a bounded table instead of being checked again. Only what a B2BUA must
check before it can answer or route is parsed here:

- the head: CR and LF only as CRLF (a bare one -> 400: peers would disagree on where the line ends), header names
  are tokens, every line but a fold has a colon;
- start line: exactly ``Method SP Request-URI SP SIP-Version`` (trailing whitespace tolerated, RFC 4475 §3.1.2.10);
  version other than SIP/2.0 -> 505; response code three digits 100-699, else the response is dropped;
- Request-URI checked (``<...>``, spaces, and ``?headers`` in a SIP Request-URI -> 400, RFC 4475 §3.1.2.7/8/11):
  one regular expression recognises the everyday ``sip:user@host:port;params`` shape, which is certain to parse and
  is structured when ``request.uri`` is first read; any other text is parsed fully here;
- To, From, Call-ID, CSeq, Via present (Max-Forwards may be absent: RFC 2543 peers, RFC 4475 §3.4.1), at most one
  of each single-value header (RFC 4475 §3.3.8), and each of them well formed (Via, From, To, Contact, CSeq,
  Max-Forwards at most 255); their structures are kept, so reading them later costs nothing;
- CSeq number at most 2**32-1 (RFC 4475 §3.1.2.4) and CSeq method = request method: 400, or 501 when the method is
  unknown (RFC 4475 §3.1.2.17/18);
- Content-Length: digits only (negative -> 400, RFC 4475 §3.1.2.3); several values -> the framing cannot be trusted:
  drop (UDP) or close (TCP) (RFC 4475 §3.3.9). In a datagram: absent -> the body is the rest of the datagram;
  larger than what arrived -> 400 (RFC 4475 §3.1.2.2); octets after it are ignored (RFC 4475 §3.1.1.8).

A malformed response is never answered (§16.7, §18.1.2): every error on a response has ``status=None``. Any
exception other than ``ParseError`` raised while parsing is turned into ``ParseError`` by a last-resort guard, so
nothing else escapes ``parse`` or ``StreamParser``, whatever the bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

from callbridge.sip.addr import (
    Contact,
    Via,
    parse_contact,
    parse_cseq,
    parse_name_addr,
    parse_uint,
    parse_via,
    split_commas,
)
from callbridge.sip.errors import ParseError
from callbridge.sip.headers import COMPACT_FORMS, Headers
from callbridge.sip.message import Request, Response
from callbridge.sip.uri import is_simple_sip_uri, parse_uri

__all__ = ["KNOWN_METHODS", "StreamParser", "parse"]

KNOWN_METHODS: frozenset[str] = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)

_METHOD = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_HEADER_NAME = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_SINGLE_VALUED = ("from", "to", "call-id", "cseq", "max-forwards", "content-type")
_MANDATORY = frozenset({"via", "from", "to", "call-id", "cseq"})

Fields = list[tuple[str, str, str]]
T = TypeVar("T")


def parse(data: bytes) -> Request | Response:
    """Parse one datagram. Raises ``ParseError`` (``.status``: response to send, or ``None`` = drop) only."""
    try:
        start, fields, rest = _split_head(bytes(data))
        try:
            first = {key: value for key, _, value in reversed(fields)}
            length = _content_length(fields, first, stream=False)
            if length is None:
                body = rest
            elif length > len(rest):
                raise ParseError(f"Content-Length {length} exceeds the {len(rest)} octets received")
            else:
                body = rest[:length]
            return _build(start, fields, first, body)
        except ParseError as exc:
            if start.startswith("SIP/"):
                exc.status = None
            raise
    except ParseError:
        raise
    except Exception as exc:  # last-resort guard: whatever the bytes, only ParseError leaves the parser
        raise ParseError(f"unparseable message ({type(exc).__name__})", _fallback_status(data)) from None


def _fallback_status(data: object) -> int | None:
    try:
        return None if bytes(data).lstrip(b"\r\n").startswith(b"SIP/") else 400  # type: ignore[call-overload]
    except Exception:
        return None


def _split_head(data: bytes) -> tuple[str, Fields, bytes]:
    """Start line, fields and what follows the blank line (``b""`` when the datagram has no blank line)."""
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # CRLFs before the start line are ignored (§7.5)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        head, rest = data.rstrip(b"\r\n"), b""
    else:
        head, rest = data[:end], data[end + 4 :]
    if not head:
        raise ParseError("empty message", None)
    start, fields = _parse_head(head)
    return start, fields, rest


# Header names seen before -> (key, name as written without trailing whitespace); bounded so that random names
# cannot grow it without limit. A hit means the name was already checked to be a token.
_KNOWN_NAMES: dict[str, tuple[str, str]] = {}
_KNOWN_NAMES_LIMIT = 4096


def _learn_name(raw: str) -> tuple[str, str] | None:
    name = raw.rstrip(" \t")
    if _HEADER_NAME.match(name) is None:
        return None
    key = name.lower()
    known = (COMPACT_FORMS.get(key, key), name)
    if len(_KNOWN_NAMES) < _KNOWN_NAMES_LIMIT:
        _KNOWN_NAMES[raw] = known
    return known


def _parse_head(head: bytes) -> tuple[str, Fields]:
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
        # a CR or LF outside CRLF: peers disagree on where such a line ends, so it is never accepted or forwarded
        raise ParseError("bare CR or LF in the message head")
    fields: Fields = []
    append = fields.append
    known_names = _KNOWN_NAMES
    for line in lines[1:]:
        raw_name, colon, value = line.partition(":")
        known = known_names.get(raw_name)
        if known is None:
            known = _learn_name(raw_name) if colon else None
            if known is None:
                if line[:1] in (" ", "\t") and fields:  # §7.3.1: a fold is equivalent to one space
                    key, name, previous = fields[-1]
                    more = line.strip()
                    if more:  # a whitespace-only fold adds nothing but LWS, which the value never ends with
                        fields[-1] = (key, name, f"{previous} {more}" if previous else more)
                    continue
                raise ParseError(f"bad header line {line[:40]!r}")
        append((known[0], known[1], value.strip()))
    return lines[0], fields


def _content_length(fields: Fields, first: dict[str, str], *, stream: bool) -> int | None:
    value = first.get("content-length")
    if value is None:
        if stream:
            raise ParseError("Content-Length is mandatory on a stream (§18.3)")
        return None
    if "," in value or (len(first) != len(fields) and sum(key == "content-length" for key, _, _ in fields) > 1):
        # RFC 4475 §3.3.9: no way to know where the body ends; drop the datagram / close the stream.
        raise ParseError("several Content-Length values", None)
    return parse_uint(value, limit=2**31 - 1)


def _build(start: str, fields: Fields, first: dict[str, str], body: bytes) -> Request | Response:
    headers = Headers._from_parsed(fields, first)
    message = _response(start, headers, body) if start.startswith("SIP/") else _request(start, headers, body)
    _validate(message, fields, first)
    return message


def _response(start: str, headers: Headers, body: bytes) -> Response:
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != "SIP/2.0":
        raise ParseError(f"unsupported version {version!r}", None)
    if len(code) != 3 or not code.isascii() or not code.isdigit() or not 100 <= int(code) <= 699:
        raise ParseError(f"bad status code {code[:20]!r}", None)
    return Response._parsed(int(code), reason, headers, body)


def _request(start: str, headers: Headers, body: bytes) -> Request:
    parts = start.rstrip(" \t").split(" ")
    if len(parts) != 3:
        raise ParseError(f"request line is not 'Method SP Request-URI SP SIP-Version': {start[:80]!r}")
    method, uri_text, version = parts
    if version.upper() != "SIP/2.0":
        if version.upper().startswith("SIP/"):
            raise ParseError(f"version {version!r} not supported", 505)
        raise ParseError(f"bad SIP-Version {version[:20]!r}")
    if not method.isalpha() and _METHOD.match(method) is None:
        raise ParseError(f"bad method {method[:40]!r}")
    if is_simple_sip_uri(uri_text):
        return Request._parsed(method, None, uri_text, headers, body)  # certain to parse: structured when read
    uri = parse_uri(uri_text)
    if uri.headers:
        # RFC 4475 §3.1.2.11: headers in a Request-URI never become real headers; refuse the request.
        raise ParseError("escaped headers in the Request-URI")
    return Request._parsed(method, uri, uri_text, headers, body)


def _validate(message: Request | Response, fields: Fields, first: dict[str, str]) -> None:
    if not first.keys() >= _MANDATORY:
        missing = sorted(_MANDATORY - first.keys())
        raise ParseError(f"missing mandatory header(s) {', '.join(missing)}")
    cache = message.headers.cache
    vias: list[Via]
    contacts: list[Contact]
    if len(first) == len(fields):  # every header once: the lists are in ``first``, parse them from there
        via = first["via"]
        vias = _elements(via, parse_via) if "," in via else [parse_via(via)]
        contact = first.get("contact")
        if contact is None:
            contacts = []
        else:
            contacts = _elements(contact, parse_contact) if "," in contact else [parse_contact(contact)]
    else:  # some header repeats: only list headers may
        counts: dict[str, int] = {}
        for key, _, _ in fields:
            counts[key] = counts.get(key, 0) + 1
        for key in _SINGLE_VALUED:
            if counts.get(key, 0) > 1:
                raise ParseError(f"several {key} headers")
        vias = message.vias
        contacts = message.contacts
    cache["via"] = vias
    cache["contact"] = contacts
    if len(contacts) > 1 and any(contact.star for contact in contacts):
        raise ParseError("Contact '*' must stand alone (§10.2.2)")
    cseq = cache["cseq"] = parse_cseq(first["cseq"])
    if isinstance(message, Request) and cseq.method != message.method:
        method = message.method
        raise ParseError(
            f"CSeq method {cseq.method!r} differs from {method!r}", 400 if method in KNOWN_METHODS else 501
        )
    if not first["call-id"]:
        raise ParseError("empty Call-ID")
    cache["from"] = parse_name_addr(first["from"])
    cache["to"] = parse_name_addr(first["to"])
    max_forwards = first.get("max-forwards")
    if max_forwards is not None and not (len(max_forwards) <= 2 and max_forwards.isdigit() and max_forwards.isascii()):
        parse_uint(max_forwards, limit=255)  # the unusual shapes: checked in full


def _elements(line: str, parse_one: Callable[[str], T]) -> list[T]:
    if "," not in line:
        return [parse_one(line)]
    elements = split_commas(line)
    if not all(elements):
        raise ParseError("empty list element")
    return [parse_one(element) for element in elements]


class StreamParser:
    """Frames messages on a byte stream (TCP) by Content-Length (§18.3).

    ``feed`` bytes, then iterate ``messages()``. A ``ParseError`` with ``broken`` set means the framing is lost:
    close the connection (every later call raises it again). Without ``broken``, the message was framed but is
    invalid: it has been consumed (its octets are in ``invalid``); answer ``.status`` if not ``None`` and call
    ``messages()`` again to go on.
    """

    def __init__(self, max_head: int = 64 * 1024, max_body: int = 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._max_head = max_head
        self._max_body = max_body
        self._pending: tuple[int, int, str, Fields, dict[str, str]] | None = None
        self.broken: ParseError | None = None
        # The octets of the last message that was framed but invalid (its error raised), so that the caller can
        # hand them to the same error path as a datagram's (a 400/505 answered on the connection).
        self.invalid: bytes | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def messages(self) -> Iterator[Request | Response]:
        while True:
            message = self.next_message()
            if message is None:
                return
            yield message

    def next_message(self) -> Request | Response | None:
        """The next complete message, or ``None`` until more bytes arrive."""
        if self.broken is not None:
            raise self.broken
        try:
            return self._next()
        except ParseError:
            raise
        except Exception as exc:  # last-resort guard, as in parse()
            self.broken = ParseError(f"unparseable stream ({type(exc).__name__})", None)
            self._buffer.clear()
            raise self.broken from None

    def _next(self) -> Request | Response | None:
        buffer = self._buffer
        pending = self._pending
        if pending is None:
            skip = 0
            while skip < len(buffer) and buffer[skip] in (13, 10):
                skip += 1  # keep-alive CRLFs between messages (RFC 5626 §3.5.1)
            if skip:
                del buffer[:skip]
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self._max_head:
                    self._break(ParseError("message head too long", None))
                return None
            try:
                start, fields = _parse_head(bytes(buffer[:end]))
                first = {key: value for key, _, value in reversed(fields)}
                length = _content_length(fields, first, stream=True)
            except ParseError as exc:
                self._break(exc)
            assert length is not None
            if length > self._max_body:
                self._break(ParseError(f"body of {length} octets too large", None))
            # framed: remember it, so that a body arriving in many segments does not parse the head again
            pending = self._pending = (end + 4, end + 4 + length, start, fields, first)
        body_start, total, start, fields, first = pending
        if len(buffer) < total:
            return None  # RFC 4475 §3.1.2.2 on a stream: wait for the rest
        body = bytes(buffer[body_start:total])
        self._pending = None
        try:
            message = _build(start, fields, first, body)
        except ParseError as exc:
            self.invalid = bytes(buffer[:total])
            del buffer[:total]
            if start.startswith("SIP/"):
                exc.status = None
            raise
        del buffer[:total]
        return message

    def _break(self, error: ParseError) -> NoReturn:
        error.status = None
        self.broken = error
        self._buffer.clear()
        self._pending = None
        raise error
