"""A UAS's header inspection of a new request before anything else is done with it (RFC 3261 §8.2.2).

Rules
- Request-URI scheme (§8.2.2.1): a scheme the UAS does not handle gets 416 (Unsupported URI Scheme), whatever the
  method (RFC 4475 §3.3.2, §3.3.3). The schemes are the endpoint's ``uri_schemes`` (sip and sips by default; the
  B2BUA adds tel, which a trunk may send and which it routes by the number).
- Require (§8.2.2.3): every request but ACK and CANCEL whose Require names an option tag the UAS does not
  support gets 420 (Bad Extension) with an Unsupported header listing exactly those tags (RFC 4475 §3.3.5). The
  tags are the endpoint's ``supported_options``; option tags compare case-insensitively (§19.2, as tokens of
  §25.1 do elsewhere), and are listed back as the request wrote them.
- Proxy-Require is not looked at: it is addressed to proxies (§20.29), and an element acting as a UAS, as a
  B2BUA does toward each side, answers a Require only (RFC 4475 §3.3.5: "depending on the role in which the
  element is responding").
- The method (§8.2.1: 405 for a known method not allowed here, 501 for an unknown one) is the transaction user's
  to judge: it knows which methods it allows.
"""

from __future__ import annotations

from callbridge.sip.message import Request

__all__ = ["DEFAULT_SUPPORTED_OPTIONS", "DEFAULT_URI_SCHEMES", "inspect_request", "required_options"]

DEFAULT_URI_SCHEMES: frozenset[str] = frozenset({"sip", "sips"})
DEFAULT_SUPPORTED_OPTIONS: frozenset[str] = frozenset({"timer"})  # RFC 4028, implemented by the endpoint

Rejection = tuple[int, list[tuple[str, str]]]


def required_options(request: Request) -> list[str]:
    """The option tags of every Require header of ``request``, in order, as written."""
    tags: list[str] = []
    for value in request.headers.get_all("Require"):
        tags.extend(tag for tag in (part.strip() for part in value.split(",")) if tag)
    return tags


def inspect_request(request: Request, uri_schemes: frozenset[str],
                    supported_options: frozenset[str]) -> Rejection | None:
    """The response (status, extra headers) a UAS must send instead of processing ``request``, or None."""
    if request.uri.scheme not in uri_schemes:
        return 416, []
    if request.method in ("ACK", "CANCEL"):
        return None
    if "require" not in request.headers:
        return None
    supported = {tag.lower() for tag in supported_options}
    unknown = [tag for tag in required_options(request) if tag.lower() not in supported]
    if unknown:
        return 420, [("Unsupported", ", ".join(unknown))]
    return None
