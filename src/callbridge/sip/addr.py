"""Structured header values: name-addr, Via, Contact, CSeq and the lexing they share (RFC 3261 §20, §25.1).

Theory of operation: a header value arrives as one unfolded string (the parser turned each fold into one space).
Each parser here works with ``str`` methods (``partition``, ``split``, ``find``) and takes the slow path of a
character scan only when a quoted string is present, so that reading the top Via or the From tag costs a few
microseconds. Linear whitespace is allowed around ``/ ; = ,`` (§25.1 ``SLASH``, ``SEMI``, ``EQUAL``, ``COMMA``).

Rules:
- Parameter names are case-insensitive and stored lower-cased; values are kept as written (tags and branches are
  compared case-sensitively, §19.3). A quoted parameter value keeps its quotes.
- An empty parameter (``;;``) or empty list element is malformed (RFC 4475 §3.1.2.1).
- name-addr: a quoted display name is unescaped (``\\"`` -> ``"``); an unquoted one must be tokens separated by
  whitespace (RFC 4475 §3.1.2.15); an addr-spec written without ``<>`` must not contain ``?`` or ``,`` (§20.10;
  RFC 4475 §3.1.2.13) and its ``;params`` are header parameters, not URI parameters (RFC 4475 §3.3.12).
- Every error is ``ParseError(400)``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from callbridge.sip.errors import ParseError
from callbridge.sip.uri import URI, parse_uri

__all__ = [
    "CSeq",
    "Contact",
    "NameAddr",
    "Params",
    "Via",
    "format_params",
    "parse_cseq",
    "parse_name_addr",
    "parse_params",
    "parse_via",
    "split_commas",
    "unquote_string",
]

Params = dict[str, str | None]

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_DISPLAY_TOKENS = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*\Z")


def is_token(text: str) -> bool:
    return _TOKEN.match(text) is not None


def split_commas(value: str) -> list[str]:
    """Split a header value at the commas that are outside quoted strings and ``<...>``; strip each element."""
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [item.strip() for item in value.split(",")]
    items: list[str] = []
    start = 0
    in_quotes = in_angle = False
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            items.append(value[start:i].strip())
            start = i + 1
        i += 1
    items.append(value[start:].strip())
    return items


def _end_of_quoted(text: str, start: int) -> int:
    """Index just past the quoted string opening at ``text[start]``; ``ParseError`` if unterminated."""
    i, n = start + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    raise ParseError("unterminated quoted string")


def unquote_string(quoted: str) -> str:
    """``"a \\"b\\""`` -> ``a "b"`` (quoted-pair unescaping, §25.1)."""
    inner = quoted[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    i, n = 0, len(inner)
    while i < n:
        ch = inner[i]
        if ch == "\\" and i + 1 < n:
            i += 1
            ch = inner[i]
        out.append(ch)
        i += 1
    return "".join(out)


def quote_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text: str) -> Params:
    """Parse ``;name=value;flag`` (``text`` starts at or before the first ``;``; leading whitespace allowed)."""
    text = text.strip()
    if not text:
        return {}
    if text[0] != ";":
        raise ParseError(f"expected ';' before parameters: {text[:40]!r}")
    return params_after_semicolon(text[1:])


def params_after_semicolon(text: str) -> Params:
    """Parse ``name=value;flag`` (what follows the first ``;``)."""
    params: Params = {}
    items = _split_semicolons_quoted(text) if '"' in text else text.split(";")
    spaced = " " in text or "\t" in text
    for item in items:
        name, eq, value = item.partition("=")
        if spaced:
            name = name.strip()
            value = value.strip()
        if not name.isalnum() and _TOKEN.match(name) is None:
            raise ParseError(f"bad parameter {item[:40]!r}")
        key = name.lower()
        if key in params:
            continue
        if eq:
            if not value:
                raise ParseError(f"empty parameter value in {item[:40]!r}")
            if value[0] == '"' and _end_of_quoted(value, 0) != len(value):
                raise ParseError(f"junk after quoted parameter value {item[:40]!r}")
            params[key] = value
        else:
            params[key] = None
    return params


def _split_semicolons_quoted(text: str) -> list[str]:
    items: list[str] = []
    start = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            i = _end_of_quoted(text, i)
            continue
        if ch == ";":
            items.append(text[start:i])
            start = i + 1
        i += 1
    items.append(text[start:])
    return items


def format_params(params: Params) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params.items())


class NameAddr:
    """``"Display" <uri>;params`` of From, To, Route, Refer-To, ...; the URI is parsed when first read."""

    __slots__ = ("_uri", "_uri_text", "display", "params")

    def __init__(self, uri: URI | str, display: str | None = None, params: Params | None = None) -> None:
        if isinstance(uri, URI):
            self._uri: URI | None = uri
            self._uri_text = ""
        else:
            self._uri = None
            self._uri_text = uri
        self.display = display
        self.params: Params = {} if params is None else params

    @property
    def uri(self) -> URI:
        if self._uri is None:
            self._uri = parse_uri(self._uri_text)
        return self._uri

    @uri.setter
    def uri(self, value: URI) -> None:
        self._uri = value

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        uri = self._uri if self._uri is not None else self._uri_text
        return NameAddr(uri, self.display, {**self.params, "tag": tag})

    def __str__(self) -> str:
        uri = str(self._uri) if self._uri is not None else self._uri_text
        display = f"{quote_string(self.display)} " if self.display is not None else ""
        return f"{display}<{uri}>{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return self.display == other.display and self.uri == other.uri and self.params == other.params

    __hash__ = None  # type: ignore[assignment]


def _name_addr(uri_text: str, display: str | None, params: Params) -> NameAddr:
    addr = NameAddr.__new__(NameAddr)
    addr._uri = None
    addr._uri_text = uri_text
    addr.display = display
    addr.params = params
    return addr


def parse_name_addr(value: str) -> NameAddr:
    """Parse ``name-addr`` or ``addr-spec`` followed by header parameters."""
    text = value.strip()
    if not text:
        raise ParseError("empty address")
    display: str | None = None
    if text[0] == '"':
        end = text.find('"', 1) + 1
        display = text[1 : end - 1]
        if end == 0 or "\\" in display:
            end = _end_of_quoted(text, 0)
            display = unquote_string(text[:end])
        rest = text[end:].lstrip()
        if not rest.startswith("<"):
            raise ParseError(f"expected '<' after display name in {value!r}")
        lt = 0
        text = rest
    else:
        lt = text.find("<")
        if lt > 0:
            words = text[:lt].strip()
            if words:
                if _DISPLAY_TOKENS.match(words) is None:
                    raise ParseError(f"unquoted display name is not tokens: {words!r}")
                display = words
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise ParseError(f"unterminated '<' in {value!r}")
        uri_text = text[lt + 1 : gt]
        param_text = text[gt + 1 :]
    else:
        uri_text, semi, param_text = text.partition(";")
        uri_text = uri_text.rstrip()
        if "?" in uri_text or "," in uri_text:
            raise ParseError(f"URI with '?' or ',' must be enclosed in <>: {uri_text[:80]!r}")
        if ":" not in uri_text or " " in uri_text or "\t" in uri_text:
            raise ParseError(f"bad URI in address {value[:80]!r}")
        return _name_addr(uri_text, display, params_after_semicolon(param_text) if semi else {})
    if ":" not in uri_text or " " in uri_text or "\t" in uri_text:
        raise ParseError(f"bad URI in address {value[:80]!r}")
    if not param_text:
        return _name_addr(uri_text, display, {})
    if param_text[0] == ";":
        return _name_addr(uri_text, display, params_after_semicolon(param_text[1:]))
    return _name_addr(uri_text, display, parse_params(param_text))


class Via:
    """One Via value: ``SIP/2.0/UDP host:port;params`` (§20.42)."""

    __slots__ = ("host", "params", "port", "protocol", "transport")

    def __init__(
        self,
        transport: str = "UDP",
        host: str = "",
        port: int | None = None,
        params: Params | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params: Params = {} if params is None else params
        self.protocol = protocol

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> str | None:
        """``None`` when absent, ``""`` when present without a value (RFC 3581), else the port as written."""
        if "rport" not in self.params:
            return None
        return self.params["rport"] or ""

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return str(self) == str(other)

    __hash__ = None  # type: ignore[assignment]


# The usual shape of a Via value (no optional whitespace, host name or IPv4 address): matched in one step.
_PLAIN_VIA = re.compile(r"SIP/2\.0/([A-Za-z0-9]+) ([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?(?:;(.*))?\Z", re.S)


def parse_via(value: str) -> Via:
    """Parse one Via element (already split at commas)."""
    plain = _PLAIN_VIA.match(value)
    if plain is not None:
        transport, host, port_text, param_text = plain.groups()
        port = int(port_text) if port_text else None
        if port is None or port <= 65535:
            via = Via.__new__(Via)
            via.transport = transport.upper()
            via.host = host
            via.port = port
            via.params = params_after_semicolon(param_text) if param_text is not None else {}
            via.protocol = "SIP/2.0"
            return via
    head, semi, param_text = value.partition(";")
    parts = head.split("/")
    if len(parts) != 3:
        raise ParseError(f"bad Via: {value[:80]!r}")
    name = parts[0].strip()
    version = parts[1].strip()
    transport, _, sent_by = parts[2].strip().partition(" ")
    sent_by = sent_by.strip()
    if not (name and version and sent_by) or not (transport.isalnum() or is_token(transport)):
        raise ParseError(f"bad Via: {value[:80]!r}")
    host, port = _parse_host_port(sent_by)
    params = params_after_semicolon(param_text) if semi else {}
    protocol = "SIP/2.0" if (name == "SIP" and version == "2.0") else f"{name}/{version}"
    return Via(transport.upper(), host, port, params, protocol)


def _parse_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ParseError(f"bad IPv6 reference {text!r}")
        host, rest = text[: close + 1], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ParseError(f"bad sent-by {text!r}")
        port_text = rest[1:].strip()
        has_port = bool(rest)
    else:
        host, colon, port_text = text.partition(":")
        has_port = bool(colon)
        if has_port:
            host = host.rstrip()
            port_text = port_text.lstrip()
    if not host or " " in host or "\t" in host:
        raise ParseError(f"bad host {text[:80]!r}")
    if not has_port:
        return host, None
    if not (port_text.isdigit() and port_text.isascii()) or len(port_text) > 5 or int(port_text) > 65535:
        raise ParseError(f"bad port {text[:80]!r}")
    return host, int(port_text)


_new_tuple = tuple.__new__  # NamedTuple construction without the keyword-argument machinery


class CSeq(NamedTuple):
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


# CSeq and other 32-bit scalars: RFC 4475 §3.1.2.4 rejects values above 2**32-1.
MAX_SCALAR = 2**32 - 1


def parse_uint(text: str, limit: int = MAX_SCALAR) -> int:
    """A decimal scalar (leading zeros allowed, §25.1 ``1*DIGIT``); ``ParseError`` if not digits or above limit."""
    if not (text.isdigit() and text.isascii()):
        text = text.strip()
        if not (text.isdigit() and text.isascii()):
            raise ParseError(f"bad number {text[:30]!r}")
    if len(text) > 20:
        raise ParseError(f"number too long {text[:30]!r}")
    number = int(text)
    if number > limit:
        raise ParseError(f"number out of range: {text!r}")
    return number


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not (parts[1].isalpha() or is_token(parts[1])):
        raise ParseError(f"bad CSeq: {value[:40]!r}")
    number = parts[0]
    if len(number) <= 9 and number.isdigit() and number.isascii():  # below 2**32-1: no range check needed
        return _new_tuple(CSeq, (int(number), parts[1]))
    return _new_tuple(CSeq, (parse_uint(number), parts[1]))


class Contact(NamedTuple):
    """One Contact value (§20.10): ``*`` (``star``) or an address with its ``q`` and ``expires`` parameters."""

    star: bool
    addr: NameAddr | None
    q: float | None
    expires: int | None

    def __str__(self) -> str:
        return "*" if self.star or self.addr is None else str(self.addr)


def parse_contact(value: str) -> Contact:
    if value.strip() == "*":
        return Contact(True, None, None, None)
    addr = parse_name_addr(value)
    if not addr.params:
        return _new_tuple(Contact, (False, addr, None, None))
    q: float | None = None
    raw_q = addr.params.get("q")
    if raw_q is not None:
        try:
            q = float(raw_q)
        except ValueError:
            raise ParseError(f"bad q value {raw_q!r}") from None
        if not 0.0 <= q <= 1.0:
            raise ParseError(f"q out of range {raw_q!r}")
    expires: int | None = None
    raw_expires = addr.params.get("expires")
    if raw_expires is not None:
        expires = parse_delta_seconds(raw_expires)
    return Contact(False, addr, q, expires)


def parse_delta_seconds(text: str) -> int:
    """delta-seconds; a value above 2**32-1 means 2**32-1 (§20.19, §20.10)."""
    text = text.strip()
    if not text or not text.isascii() or not text.isdigit():
        raise ParseError(f"bad delta-seconds {text[:30]!r}")
    if len(text) > 10:
        return MAX_SCALAR
    return min(int(text), MAX_SCALAR)
