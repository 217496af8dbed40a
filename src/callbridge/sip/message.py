"""SIP requests and responses (RFC 3261 §7) with lazy, cached typed header accessors.

Theory of operation: a message holds its start line, a ``Headers`` multi-map of raw strings and the body bytes.
Typed accessors (``msg.via``, ``msg.cseq``, ``msg.from_`` ...) parse the raw value the first time they are read and
keep the result in ``headers.cache``, which every header mutation clears; so a message costs little for what is
never read. An accessor raises ``ParseError(400)`` when its header is malformed or, for a mandatory header, missing.

Equality: same kind, same start line, same ``(header key, value)`` sequence (compact and long names are the same
key; Content-Length is left out, as serialisation recomputes it) and the same body. A parsed message serialises to
bytes that parse to an equal message.
"""

from __future__ import annotations

import importlib
from typing import Any, cast

from callbridge.sip.addr import (
    Contact,
    CSeq,
    NameAddr,
    Via,
    parse_contact,
    parse_cseq,
    parse_delta_seconds,
    parse_name_addr,
    parse_uint,
    parse_via,
    split_commas,
)
from callbridge.sip.errors import ParseError
from callbridge.sip.headers import Headers
from callbridge.sip.serializer import serialize
from callbridge.sip.uri import URI, parse_uri
from callbridge.sip.values import (
    Event,
    Replaces,
    SessionExpires,
    SubscriptionState,
    parse_event,
    parse_replaces,
    parse_session_expires,
    parse_subscription_state,
)

__all__ = ["REASON_PHRASES", "Message", "Request", "Response", "make_response"]

SIP_VERSION = "SIP/2.0"


class Message:
    """What requests and responses share: headers, body and the typed accessors."""

    __slots__ = ("body", "headers", "version")

    def __init__(self, headers: Headers | None = None, body: bytes = b"", version: str = SIP_VERSION) -> None:
        self.headers = Headers() if headers is None else headers
        self.body = body
        self.version = version

    @property
    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        return serialize(self.start_line, self.headers.fields(), self.body)

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            type(self) is type(other)
            and self.start_line == other.start_line
            and self.body == other.body
            and _comparable(self.headers) == _comparable(other.headers)
        )

    __hash__ = None  # type: ignore[assignment]

    # -- mandatory headers -------------------------------------------------------------------------------------

    @property
    def vias(self) -> list[Via]:
        cache = self.headers.cache
        cached = cache.get("via")
        if cached is not None:
            return cast(list[Via], cached)
        vias: list[Via] = []
        for line in self.headers.get_lines("via"):
            for element in split_commas(line):
                if not element:
                    raise ParseError("empty Via element")
                vias.append(parse_via(element))
        cache["via"] = vias
        return vias

    @property
    def via(self) -> Via:
        vias = self.headers.cache.get("via")
        if not isinstance(vias, list):
            vias = self.vias
        if not vias:
            raise ParseError("missing Via")
        return vias[0]

    @property
    def call_id(self) -> str:
        value = self.headers.get("call-id")
        if not value:
            raise ParseError("missing Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        cseq = self.headers.cache.get("cseq")
        if isinstance(cseq, CSeq):
            return cseq
        value = self.headers.get("cseq")
        if value is None:
            raise ParseError("missing CSeq")
        cseq = self.headers.cache["cseq"] = parse_cseq(value)
        return cseq

    @property
    def from_(self) -> NameAddr:
        addr = self.headers.cache.get("from")
        return addr if isinstance(addr, NameAddr) else self._required_address("from")

    @property
    def to(self) -> NameAddr:
        addr = self.headers.cache.get("to")
        return addr if isinstance(addr, NameAddr) else self._required_address("to")

    def _required_address(self, key: str) -> NameAddr:
        addr = self._address(key)
        if addr is None:
            raise ParseError(f"missing {key}")
        return addr

    def _address(self, key: str) -> NameAddr | None:
        cache = self.headers.cache
        addr = cache.get(key)
        if addr is None:
            value = self.headers.get(key)
            if value is None:
                return None
            addr = cache[key] = parse_name_addr(value)
        return cast(NameAddr, addr)

    def _address_list(self, key: str) -> list[NameAddr]:
        cache = self.headers.cache
        cached = cache.get(key)
        if cached is not None:
            return cast(list[NameAddr], cached)
        addrs: list[NameAddr] = []
        for line in self.headers.get_lines(key):
            for element in split_commas(line):
                if not element:
                    raise ParseError(f"empty element in {key}")
                addrs.append(parse_name_addr(element))
        cache[key] = addrs
        return addrs

    # -- optional headers --------------------------------------------------------------------------------------

    @property
    def contacts(self) -> list[Contact]:
        cache = self.headers.cache
        cached = cache.get("contact")
        if cached is not None:
            return cast(list[Contact], cached)
        contacts: list[Contact] = []
        for line in self.headers.get_lines("contact"):
            for element in split_commas(line):
                if not element:
                    raise ParseError("empty Contact element")
                contacts.append(parse_contact(element))
        cache["contact"] = contacts
        return contacts

    @property
    def routes(self) -> list[NameAddr]:
        return self._address_list("route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._address_list("record-route")

    @property
    def diversions(self) -> list[NameAddr]:
        """Diversion entries (RFC 5806), most recent first; ``reason``, ``counter`` ... are in ``params``."""
        return self._address_list("diversion")

    @property
    def history_info(self) -> list[NameAddr]:
        """History-Info entries (RFC 7044) in order; each carries its ``index`` in ``params``."""
        return self._address_list("history-info")

    @property
    def refer_to(self) -> NameAddr | None:
        return self._address("refer-to")

    @property
    def referred_by(self) -> NameAddr | None:
        return self._address("referred-by")

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("max-forwards")
        return None if value is None else parse_uint(value, limit=255)

    @property
    def expires(self) -> int | None:
        value = self.headers.get("expires")
        return None if value is None else parse_delta_seconds(value)

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        if value is None:
            return None
        media = value.partition(";")[0].strip().lower()
        kind, slash, subtype = media.partition("/")
        if not slash:
            raise ParseError(f"bad Content-Type {value!r}")
        return f"{kind.strip()}/{subtype.strip()}"

    @property
    def replaces(self) -> Replaces | None:
        value = self.headers.get("replaces")
        return None if value is None else parse_replaces(value)

    @property
    def event(self) -> Event | None:
        value = self.headers.get("event")
        return None if value is None else parse_event(value)

    @property
    def subscription_state(self) -> SubscriptionState | None:
        value = self.headers.get("subscription-state")
        return None if value is None else parse_subscription_state(value)

    @property
    def session_expires(self) -> SessionExpires | None:
        value = self.headers.get("session-expires")
        return None if value is None else parse_session_expires(value)

    @property
    def min_se(self) -> int | None:
        value = self.headers.get("min-se")
        return None if value is None else parse_session_expires(value).delta

    # Authentication headers: the grammar is digest's (callbridge.sip.auth), one challenge/credential per line.
    def _auth(self, key: str) -> list[tuple[str, dict[str, str]]]:
        auth: Any = importlib.import_module("callbridge.sip.auth")
        return [cast(tuple[str, dict[str, str]], auth.parse_auth_header(line)) for line in self.headers.get_lines(key)]

    @property
    def authorization(self) -> list[tuple[str, dict[str, str]]]:
        return self._auth("authorization")

    @property
    def proxy_authorization(self) -> list[tuple[str, dict[str, str]]]:
        return self._auth("proxy-authorization")

    @property
    def www_authenticate(self) -> list[tuple[str, dict[str, str]]]:
        return self._auth("www-authenticate")

    @property
    def proxy_authenticate(self) -> list[tuple[str, dict[str, str]]]:
        return self._auth("proxy-authenticate")


def _comparable(headers: Headers) -> list[tuple[str, str]]:
    return [(key, value) for key, value in headers.keyed() if key != "content-length"]


class Request(Message):
    """``Request(method, uri, headers=Headers([...]), body=b"")``; ``uri`` is a ``URI`` or its text."""

    __slots__ = ("_uri", "_uri_text", "method")

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body, version)
        self.method = method
        if isinstance(uri, URI):
            self._uri: URI | None = uri
            self._uri_text: str | None = None
        else:
            self._uri = None
            self._uri_text = uri

    @classmethod
    def _parsed(cls, method: str, uri: URI | None, uri_text: str, headers: Headers, body: bytes) -> Request:
        request = cls.__new__(cls)
        request.method = method
        request._uri = uri
        request._uri_text = uri_text
        request.headers = headers
        request.body = body
        request.version = SIP_VERSION
        return request

    @property
    def uri(self) -> URI:
        if self._uri is None:
            self._uri = parse_uri(cast(str, self._uri_text))
        return self._uri

    @uri.setter
    def uri(self, value: URI) -> None:
        self._uri = value
        self._uri_text = None

    @property
    def uri_text(self) -> str:
        """The Request-URI as it will be written (as received, unless ``uri`` was assigned)."""
        return self._uri_text if self._uri_text is not None else str(self._uri)

    @property
    def start_line(self) -> str:
        return f"{self.method} {self.uri_text} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text}>"


class Response(Message):
    """``Response(status, reason=None, headers=..., body=b"")``; the reason defaults to the standard phrase."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body, version)
        self.status = status
        self.reason = reason if reason is not None else REASON_PHRASES.get(status, "")

    @classmethod
    def _parsed(cls, status: int, reason: str, headers: Headers, body: bytes) -> Response:
        response = cls.__new__(cls)
        response.status = status
        response.reason = reason
        response.headers = headers
        response.body = body
        response.version = SIP_VERSION
        return response

    @property
    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def make_response(request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6: Via (all, in order), From, To (with ``to_tag`` added when the
    To has no tag yet), Call-ID and CSeq copied; empty body (Content-Length: 0)."""
    # The request's fields were checked when they were parsed or added: copied as they are (only the To tag is new).
    fields: list[tuple[str, str, str]] = []
    to_done = False
    for field in request.headers.fields():
        key = field[0]
        if key == "to":
            if to_done:
                continue
            to_done = True
            if to_tag is not None and request.to.tag is None:
                field = Headers([(field[1], f"{field[2].strip()};tag={to_tag}")]).fields()[0]
            fields.append(field)
        elif key in _RESPONSE_COPIED:
            fields.append(field)
    return Response(status, reason, Headers._from_parsed(fields))


_RESPONSE_COPIED = frozenset({"via", "from", "call-id", "cseq"})


REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}
