"""The UAS's header inspection (RFC 3261 §8.2.2): 416 for a Request-URI scheme it does not handle, 420 with
Unsupported for a Require it does not support (not for ACK and CANCEL; Proxy-Require is for proxies); and a
request that fails to parse only for extraneous Via separators still answered 400 (RFC 4475 §3.1.2.1)."""

from __future__ import annotations

import random

from callbridge.sip.endpoint import Endpoint
from callbridge.sip.events import RequestReceived
from callbridge.sip.message import Response
from callbridge.sip.parser import parse
from callbridge.sip.timers import TimerConfig

SOURCE = ("127.0.0.9", 40000)


def endpoint() -> Endpoint:
    return Endpoint("127.0.0.2", 5060, TimerConfig(), random.Random(7))


def request(method: str = "OPTIONS", uri: str = "sip:bob@127.0.0.2", extra: str = "", cseq_method: str = "") -> bytes:
    return (
        f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5070;branch=z9hG4bK-insp\r\nMax-Forwards: 70\r\n"
        f"From: <sip:a@127.0.0.9>;tag=1\r\nTo: <sip:bob@127.0.0.2>\r\nCall-ID: insp\r\n"
        f"CSeq: 1 {cseq_method or method}\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def answered(ep: Endpoint, data: bytes) -> Response:
    ep.receive_datagram(data, SOURCE, 0.0)
    assert ep.next_event() is None, "the request must not reach the transaction user"
    [(out, dest, transport)] = ep.datagrams_to_send()
    response = parse(out)
    assert isinstance(response, Response)
    assert (dest, transport) == (("127.0.0.9", 5070), "udp")
    return response


def reaches_the_tu(ep: Endpoint, data: bytes) -> None:
    ep.receive_datagram(data, SOURCE, 0.0)
    assert isinstance(ep.next_event(), RequestReceived)


def test_an_unknown_request_uri_scheme_is_416() -> None:  # RFC 4475 §3.3.2, §3.3.3
    for uri in ("nobodyKnowsThisScheme:totallyopaquecontent", "soap.beep://192.0.2.103:3002"):
        response = answered(endpoint(), request(uri=uri))
        assert response.status == 416, uri
        assert response.to.tag is not None


def test_sip_and_sips_are_handled_and_the_tu_may_add_tel() -> None:
    reaches_the_tu(endpoint(), request(uri="sips:bob@127.0.0.2"))
    assert answered(endpoint(), request(uri="tel:+15551234567")).status == 416
    ep = endpoint()
    ep.uri_schemes = frozenset({"sip", "sips", "tel"})
    reaches_the_tu(ep, request(uri="tel:+15551234567"))


def test_an_unsupported_require_is_420_listing_exactly_the_unknown_tags() -> None:  # RFC 4475 §3.3.5
    extra = ("Require: nothingSupportsThis, Timer\r\nRequire: nothingSupportsThisEither\r\n"
             "Proxy-Require: noProxiesSupportThis\r\n")
    response = answered(endpoint(), request(extra=extra))
    assert response.status == 420
    assert response.headers.get_all("Unsupported") == ["nothingSupportsThis", "nothingSupportsThisEither"]


def test_a_supported_require_and_a_proxy_require_pass() -> None:
    reaches_the_tu(endpoint(), request(extra="Require: timer\r\n"))
    reaches_the_tu(endpoint(), request(extra="Proxy-Require: noProxiesSupportThis\r\n"))
    ep = endpoint()
    ep.supported_options = frozenset({"timer", "norefersub"})
    reaches_the_tu(ep, request(extra="Require: norefersub\r\n"))


def test_cancel_and_ack_are_not_checked_for_require() -> None:
    ep = endpoint()
    ep.receive_datagram(request("CANCEL", extra="Require: nothingSupportsThis\r\n"), SOURCE, 0.0)
    [(out, _, _)] = ep.datagrams_to_send()
    cancel_answer = parse(out)
    assert isinstance(cancel_answer, Response) and cancel_answer.status == 481  # no INVITE to cancel, not 420
    ep.receive_datagram(request("ACK", extra="Require: nothingSupportsThis\r\n"), SOURCE, 0.0)
    assert ep.datagrams_to_send() == []


def test_badinv01_extraneous_via_separators_are_answered_400() -> None:  # RFC 4475 §3.1.2.1
    data = (
        b"INVITE sip:user@example.com SIP/2.0\r\nTo: sip:j.user@example.com\r\n"
        b"From: sip:caller@example.net;tag=134161461246\r\nMax-Forwards: 7\r\nCall-ID: badinv01\r\n"
        b"CSeq: 8 INVITE\r\nVia: SIP/2.0/UDP 127.0.0.9:5070;;,;,,\r\nContact: \"Joe\" <sip:joe@example.org>;;;;\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    ep = endpoint()
    ep.receive_datagram(data, SOURCE, 0.0)
    assert ep.next_event() is None
    [(out, dest, transport)] = ep.datagrams_to_send()
    assert (dest, transport) == (("127.0.0.9", 5070), "udp")  # the source IP, the sent-by port
    assert out.startswith(b"SIP/2.0 400 ")
    assert b"\r\nVia: SIP/2.0/UDP 127.0.0.9:5070;;,;,,\r\n" in out  # copied as it came (§8.2.6.2)
    assert b"\r\nCall-ID: badinv01\r\n" in out and b"\r\nCSeq: 8 INVITE\r\n" in out
    # with rport among the empty parameters: the source port
    ep.receive_datagram(data.replace(b"5070;;,", b"5070;;rport;,"), SOURCE, 0.0)
    [(_, dest, _)] = ep.datagrams_to_send()
    assert dest == SOURCE
    # a top Via that does not parse even without the empty elements: nowhere trustworthy to answer
    ep.receive_datagram(data.replace(b"SIP/2.0/UDP 127.0.0.9:5070;;,;,,", b"SIP/2.0 127.0.0.9;;"), SOURCE, 0.0)
    assert ep.datagrams_to_send() == []
