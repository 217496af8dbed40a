"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), and opaque absolute URIs of any other scheme.

Rules:
- ``parse_uri`` accepts ``sip:``/``sips:`` URIs with user, password, host (name, IPv4, IPv6 reference ``[...]``),
  port, ``;params`` and ``?headers``; ``tel:`` URIs (number and params); and any other scheme as an opaque URI
  (``scheme`` + ``opaque``) so that a request naming it can still be answered (416, RFC 3261 §8.2.2.1).
- Field values are stored unescaped (``%40`` becomes ``@``); ``str(uri)`` escapes what the grammar requires, so an
  escaped character and its plain form serialise the same way (§19.1.4: they are equivalent).
- The IPv6 host keeps its brackets (the grammar's ``IPv6reference``): ``host == "[::1]"``.
- ``==`` is the comparison of §19.1.4: userinfo case-sensitive, everything else case-insensitive; a port, or a
  ``transport``/``user``/``ttl``/``method``/``maddr`` parameter, present in one URI must be present and equal in the
  other; other parameters are compared only when both carry them; headers must be the same set.
- Malformed text raises ``ParseError(400)``.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from callbridge.sip.errors import ParseError

__all__ = ["URI", "is_simple_sip_uri", "parse_uri"]

# Characters a URI may never contain as written: whitespace, controls, and the delimiters that enclose it.
_FORBIDDEN = re.compile(r'[\x00-\x20<>"\x7f]')
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
# The everyday shape of a SIP URI, strictly within what parse_uri accepts: text that matches it is known to parse,
# so a Request-URI of this shape can be checked at parse time and structured when first read.
_PORT = r"(?::(?:[0-9]{1,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_SIMPLE_SIP_URI = re.compile(
    r"sips?:(?:[A-Za-z0-9\-_.!~*'()&=+$,%]+(?::[A-Za-z0-9\-_.!~*'()&=+$,%]*)?@)?[A-Za-z0-9\-.]+"
    + _PORT
    + r"(?:;[A-Za-z0-9\-_.!~*'()&+$%\[\]/:]+(?:=[A-Za-z0-9\-_.!~*'()&+$%\[\]/:]*)?)*\Z"
)
_COMMON_SCHEMES = frozenset({"sip", "sips", "tel"})
_HOST = re.compile(r"(?:[A-Za-z0-9\-.]+|\[[0-9A-Fa-f:.]+\])\Z")

# Characters left as they are when serialising each component (RFC 3261 §25.1); the rest is %-escaped.
_MARK = "-_.!~*'()"
_USER_SAFE = _MARK + "&=+$,;?/"
_PASSWORD_SAFE = _MARK + "&=+$,"
_PARAM_SAFE = _MARK + "[]/:&+$"
_HEADER_SAFE = _MARK + "[]/?:+$"

# uri-parameters that must match whenever either URI carries them (§19.1.4).
_SIGNIFICANT_PARAMS = ("transport", "user", "ttl", "method", "maddr")


def _unescape(text: str) -> str:
    if "%" not in text:
        return text
    return unquote(text, errors="surrogateescape")


def _escape(text: str, safe: str) -> str:
    return quote(text, safe=safe, errors="surrogateescape")


def _split_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not name:
            raise ParseError(f"empty URI parameter in {text!r}")
        key = _unescape(name).lower()
        if key not in params:
            params[key] = _unescape(value) if eq else None
    return params


class URI:
    """A parsed URI; see the module rules. Construct directly or with ``parse_uri``."""

    __slots__ = ("headers", "host", "opaque", "params", "password", "port", "scheme", "user")

    def __init__(
        self,
        scheme: str = "sip",
        user: str | None = None,
        password: str | None = None,
        host: str = "",
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
        *,
        opaque: str | None = None,
    ) -> None:
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = {} if params is None else params
        self.headers: dict[str, str] = {} if headers is None else headers
        self.opaque = opaque

    @property
    def is_sip(self) -> bool:
        """True for ``sip:`` and ``sips:`` URIs."""
        return self.scheme in ("sip", "sips")

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> tuple[str, int | None]:
        return self.host, self.port

    def copy(self, **changes: object) -> URI:
        """A copy with some fields replaced (``uri.copy(port=5070, params={})``)."""
        fields: dict[str, object] = {name: getattr(self, name) for name in self.__slots__}
        fields["params"] = dict(self.params)
        fields["headers"] = dict(self.headers)
        fields.update(changes)
        opaque = fields.pop("opaque")
        return URI(**fields, opaque=opaque)  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(_escape(self.user or "", _USER_SAFE))
        else:
            if self.user is not None:
                parts.append(_escape(self.user, _USER_SAFE))
                if self.password is not None:
                    parts += (":", _escape(self.password, _PASSWORD_SAFE))
                parts.append("@")
            parts.append(self.host)
            if self.port is not None:
                parts += (":", str(self.port))
        for name, value in self.params.items():
            parts += (";", _escape(name, _PARAM_SAFE))
            if value is not None:
                parts += ("=", _escape(value, _PARAM_SAFE))
        if self.headers:
            parts.append("?")
            parts.append(
                "&".join(f"{_escape(k, _HEADER_SAFE)}={_escape(v, _HEADER_SAFE)}" for k, v in self.headers.items())
            )
        return "".join(parts)

    def __repr__(self) -> str:
        return f"URI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, URI):
            return NotImplemented
        if self.scheme != other.scheme:
            return False
        if self.opaque is not None or other.opaque is not None:
            return self.opaque == other.opaque
        if self.scheme == "tel":
            return _tel_digits(self.user) == _tel_digits(other.user) and _lower_items(self.params) == _lower_items(
                other.params
            )
        if self.user != other.user or self.password != other.password:
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        mine, theirs = _lower_items(self.params), _lower_items(other.params)
        for name in _SIGNIFICANT_PARAMS:
            if mine.get(name, "\0absent") != theirs.get(name, "\0absent"):
                return False
        for name, value in mine.items():
            if name in theirs and theirs[name] != value:
                return False
        return _lower_items(self.headers) == _lower_items(other.headers)

    def __hash__(self) -> int:
        if self.opaque is not None:
            return hash((self.scheme, self.opaque))
        if self.scheme == "tel":
            return hash((self.scheme, _tel_digits(self.user)))
        return hash((self.scheme, self.user, self.host.lower(), self.port))


def _new_uri() -> URI:
    return URI.__new__(URI)


def _lower_items(mapping: dict[str, str | None] | dict[str, str]) -> dict[str, str | None]:
    return {name.lower(): (value.lower() if value is not None else None) for name, value in mapping.items()}


def _tel_digits(number: str | None) -> str:
    # RFC 3966 §3: visual separators carry no meaning.
    return "".join(ch for ch in (number or "") if ch not in "-.()").lower()


def is_simple_sip_uri(text: str) -> bool:
    """True when ``text`` is a plain ``sip:``/``sips:`` URI that ``parse_uri`` is certain to accept."""
    return _SIMPLE_SIP_URI.match(text) is not None


def parse_uri(text: str) -> URI:
    """Parse a URI as written in a message (escaped); raise ``ParseError(400)`` if malformed."""
    scheme, colon, rest = text.partition(":")
    if not colon or not rest or (scheme not in _COMMON_SCHEMES and _SCHEME.match(scheme) is None):
        raise ParseError(f"not an absolute URI: {text[:80]!r}")
    if not rest.isprintable() or _FORBIDDEN.search(rest) is not None:
        raise ParseError(f"forbidden character in URI {text[:80]!r}")
    scheme = scheme.lower()
    if scheme == "sip" or scheme == "sips":
        return _parse_sip(scheme, rest)
    if scheme == "tel":
        number, semi, param_text = rest.partition(";")
        if not number:
            raise ParseError(f"empty tel number: {text!r}")
        return URI("tel", _unescape(number), params=_split_params(param_text) if semi else {})
    return URI(scheme, opaque=rest)


def _parse_sip(scheme: str, rest: str) -> URI:
    user: str | None = None
    password: str | None = None
    # '@' cannot occur unescaped in host, params or headers, so the last one ends the userinfo.
    at = rest.rfind("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        raw_user, colon, raw_password = userinfo.partition(":")
        if not raw_user:
            raise ParseError("empty user part in SIP URI")
        user = _unescape(raw_user)
        password = _unescape(raw_password) if colon else None
    hostport, question, header_text = rest.partition("?")
    hostport, semi, param_text = hostport.partition(";")
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ParseError(f"unterminated IPv6 reference in {rest!r}")
        host = hostport[: close + 1]
        after = hostport[close + 1 :]
        if after and not after.startswith(":"):
            raise ParseError(f"junk after IPv6 reference in {rest!r}")
        port_text = after[1:]
        has_port = bool(after)
    else:
        host, colon, port_text = hostport.partition(":")
        has_port = bool(colon)
    if not host or _HOST.match(host) is None:
        raise ParseError(f"bad host in SIP URI: {host!r}")
    port: int | None = None
    if has_port:
        if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5 or int(port_text) > 65535:
            raise ParseError(f"bad port in SIP URI: {port_text!r}")
        port = int(port_text)
    params = _split_params(param_text) if semi else {}
    headers: dict[str, str] = {}
    if question:
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise ParseError(f"bad URI header {item!r}")
            headers[_unescape(name)] = _unescape(value)
    uri = _new_uri()
    uri.scheme = scheme
    uri.user = user
    uri.password = password
    uri.host = host
    uri.port = port
    uri.params = params
    uri.headers = headers
    uri.opaque = None
    return uri
