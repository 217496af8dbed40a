"""Where SIP messages go, without DNS: request targets (RFC 3261 §8.1.2, §16.12), Via stamping and response
destinations (§18.2.1, §18.2.2, RFC 3581).

Rules
- No name is ever resolved. A destination is an IP literal taken from the first Route (loose routing) or the
  Request-URI, its ``maddr`` parameter first; a name there is a transport error for the caller to report.
- Default ports: 5060 (``sip:``), 5061 (``sips:``); transport from the URI's ``transport`` parameter, UDP by
  default. Only UDP and TCP exist here.
- An incoming request's top Via gets ``received=<source IP>`` when its sent-by host differs from the source IP, and
  ``rport=<source port>`` when it carries ``rport`` (RFC 3581 §4). Responses go to the source IP always (a sent-by
  name is never looked up), to the source port when ``rport`` is present or the transport is reliable (same
  connection, §18.2.2), else to the sent-by port (5060 by default).
- A datagram that fails to parse is answered (``ParseError.status``) only when its Via, From, To, Call-ID and CSeq
  lines can be found and its top Via parses, empty parameters and list elements skipped (RFC 4475 §3.1.2.1):
  otherwise there is nowhere trustworthy to answer. The response copies the Via lines as they came (§8.2.6.2).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from callbridge.sip.addr import Via, parse_via
from callbridge.sip.errors import ParseError
from callbridge.sip.headers import header_key
from callbridge.sip.message import REASON_PHRASES, Request
from callbridge.sip.uri import URI

__all__ = [
    "Addr",
    "error_response_for_unparsable",
    "ip_literal",
    "request_destination",
    "stamp_via",
    "uri_destination",
]

Addr = tuple[str, int]
TRANSPORTS = ("udp", "tcp", "ws", "wss")


@lru_cache(maxsize=4096)
def ip_literal(host: str) -> str | None:
    """The IP address `host` names literally (IPv6 without brackets), or None for a name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def uri_destination(uri: URI) -> tuple[Addr, str] | None:
    """(address, transport) a request for `uri` is sent to, or None when it names a host we cannot use."""
    if not uri.is_sip:
        return None
    host = uri.params.get("maddr") or uri.host
    address = ip_literal(host)
    if address is None:
        return None
    transport = uri.transport or "udp"
    if transport not in TRANSPORTS:
        return None
    port = uri.port if uri.port is not None else (5061 if uri.scheme == "sips" else 5060)
    return (address, port), transport


def request_destination(request: Request) -> tuple[Addr, str] | None:
    """The first Route's URI when present (loose routing; a strict route is the Request-URI), else the Request-URI."""
    routes = request.routes
    return uri_destination(routes[0].uri if routes else request.uri)


def stamp_via(request: Request, source: Addr, transport: str) -> Addr:
    """Fill in received/rport on the top Via (RFC 3581 §4) and return where responses go (§18.2.2)."""
    via = request.via
    src_host, src_port = source
    host_ip = ip_literal(via.host)
    changed = False
    if host_ip != src_host:
        via.params["received"] = src_host
        changed = True
    has_rport = "rport" in via.params
    if has_rport:
        via.params["rport"] = str(src_port)
        changed = True
    if changed:
        headers = request.headers
        cache = dict(headers.cache)
        headers.remove_first("Via")
        headers.prepend("Via", str(via))
        # The Via object is still the top Via (now stamped): keep the parsed values instead of re-parsing.
        headers.cache.update(cache)
    if has_rport or transport != "udp":
        return source
    return (src_host, via.port or 5060)


def _top_via_leniently(value: str) -> Via | None:
    """The first Via element of a header value, or None. Empty elements and empty parameters (``;;``, ``,;,``)
    are skipped: RFC 4475 §3.1.2.1 asks for a 400 to a request whose only fault is such extraneous separators, and
    where that 400 goes (the source address; the sent-by port, or the source port with ``rport``) can still be
    read. Anything else that does not parse leaves nowhere trustworthy to answer."""
    for element in value.split(","):
        if not element.strip(" \t;"):
            continue
        try:
            return parse_via(element)
        except ParseError:
            pass
        kept = [part for part in element.split(";") if part.strip()]
        try:
            return parse_via(";".join(kept))
        except ParseError:
            return None
    return None


def error_response_for_unparsable(data: bytes, status: int, source: Addr, transport: str) -> tuple[bytes, Addr] | None:
    """A minimal response to a request that failed to parse and where it goes (§18.2.2 from the source address),
    or None when one cannot be formed."""
    if data[:4] == b"SIP/":
        return None  # a response: never answered
    head = data.split(b"\r\n\r\n", 1)[0]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    if len(lines) < 2 or lines[0].count(" ") < 2:
        return None
    found: dict[str, str] = {}
    vias: list[str] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = header_key(name.strip())
        if key == "via":
            vias.append(value.strip())
        elif key in ("from", "to", "call-id", "cseq") and key not in found:
            found[key] = value.strip()
    if not vias or len(found) < 4:
        return None
    top = _top_via_leniently(vias[0])
    if top is None:
        return None
    reason = REASON_PHRASES.get(status, "Error")
    out = [f"SIP/2.0 {status} {reason}"]
    out.extend(f"Via: {v}" for v in vias)
    out += [f"From: {found['from']}", f"To: {found['to']}", f"Call-ID: {found['call-id']}"]
    out += [f"CSeq: {found['cseq']}", "Content-Length: 0", "", ""]
    dest = source if ("rport" in top.params or transport != "udp") else (source[0], top.port or 5060)
    return "\r\n".join(out).encode("utf-8"), dest
