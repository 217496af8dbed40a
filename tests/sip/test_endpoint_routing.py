"""Response routing (RFC 3261 §18.2.2, RFC 3581), request destinations without DNS, malformed input,
unknown dialogs and out-of-order requests, and dialog identity across a restart."""

from __future__ import annotations

import random

from test_endpoint import call, pair

from callbridge.sip.dialog import DialogState
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.events import DialogTerminated, RequestReceived, ResponseReceived, TransportError
from callbridge.sip.message import Response
from callbridge.sip.parser import parse
from callbridge.sip.timers import TimerConfig


def endpoint() -> Endpoint:
    return Endpoint("127.0.0.2", 5060, TimerConfig(), random.Random(7))


def options(via: str) -> bytes:
    return (
        f"OPTIONS sip:bob@127.0.0.2 SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
        "From: <sip:a@127.0.0.9>;tag=1\r\nTo: <sip:bob@127.0.0.2>\r\nCall-ID: r1\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def answer(ep: Endpoint, data: bytes, source: tuple[str, int]) -> tuple[Response, tuple[str, int]]:
    ep.receive_datagram(data, source, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    ep.respond(event.transaction, 200, 0.0)
    [(out, dest, transport)] = ep.datagrams_to_send()
    response = parse(out)
    assert isinstance(response, Response) and transport == "udp"
    return response, dest


def test_rport_sends_the_response_to_the_source_port_and_records_both() -> None:
    response, dest = answer(endpoint(), options("SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bK1;rport"),
                            ("127.0.0.9", 40000))
    assert dest == ("127.0.0.9", 40000)
    assert response.via.received == "127.0.0.9" and response.via.rport == "40000"


def test_without_rport_the_response_goes_to_the_sent_by_port_of_the_source_ip() -> None:
    response, dest = answer(endpoint(), options("SIP/2.0/UDP 127.0.0.9:5070;branch=z9hG4bK1"), ("127.0.0.9", 40000))
    assert dest == ("127.0.0.9", 5070)
    assert response.via.received is None and response.via.rport is None  # sent-by matched the source


def test_a_sent_by_name_is_never_resolved() -> None:
    response, dest = answer(endpoint(), options("SIP/2.0/UDP phone.example.com;branch=z9hG4bK1"), ("127.0.0.9", 5999))
    assert dest == ("127.0.0.9", 5060)
    assert response.via.received == "127.0.0.9"


def test_tcp_responses_go_back_to_the_source() -> None:
    ep = endpoint()
    ep.receive_datagram(options("SIP/2.0/TCP 127.0.0.9:5070;branch=z9hG4bK1"), ("127.0.0.9", 40001), 0.0, "tcp")
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    ep.respond(event.transaction, 200, 0.0)
    [(_, dest, transport)] = ep.datagrams_to_send()
    assert (dest, transport) == (("127.0.0.9", 40001), "tcp")
    assert ep.transaction_count == 0  # Timer J is zero over TCP


def test_parse_error_answered_when_via_parses_else_dropped() -> None:
    ep = endpoint()
    bad_cseq = options("SIP/2.0/UDP 127.0.0.9:5070;branch=z9hG4bK1;rport").replace(b"CSeq: 1 OPTIONS", b"CSeq: x")
    ep.receive_datagram(bad_cseq, ("127.0.0.9", 40000), 0.0)
    [(out, dest, _)] = ep.datagrams_to_send()
    assert out.startswith(b"SIP/2.0 400 ") and dest == ("127.0.0.9", 40000)
    ep.receive_datagram(b"\x00garbage\r\n\r\n", ("127.0.0.9", 40000), 0.0)
    bad_via = options("nonsense").replace(b"CSeq: 1 OPTIONS", b"CSeq: x")
    ep.receive_datagram(bad_via, ("127.0.0.9", 40000), 0.0)
    assert ep.datagrams_to_send() == []
    assert ep.stats["parse_errors"] == 3 and ep.stats["responses_sent_stateless"] == 1
    assert ep.next_event() is None


def test_a_host_name_destination_is_a_transport_error() -> None:
    ep = endpoint()
    tx = ep.invite("sip:bob@pbx.example.com", 0.0, from_uri="sip:alice@127.0.0.2")
    event = ep.next_event()
    assert isinstance(event, TransportError) and event.transaction is tx
    assert ep.datagrams_to_send() == [] and ep.transaction_count == 0


def test_requests_go_to_the_first_loose_route() -> None:
    ep = endpoint()
    request = ep.create_request("OPTIONS", "sip:bob@127.0.0.50", from_uri="sip:alice@127.0.0.2",
                                headers=[("Route", "<sip:127.0.0.60:5080;lr;transport=tcp>")])
    ep.send_request(request, 0.0)
    [(_, dest, transport)] = ep.datagrams_to_send()
    assert (dest, transport) == (("127.0.0.60", 5080), "tcp")
    assert request.via.transport == "TCP"


def test_unknown_dialog_gets_481_and_restore_rebuilds_a_dialog_to_bye() -> None:
    wire, alice, bob = pair()
    da, _db = call(wire, alice, bob)
    wire.take(alice)
    state = alice.dialog_state(da)
    assert DialogState.from_dict(state.to_dict()) == state
    # A restart: a fresh endpoint rebuilds the dialog from storage and ends it with BYE.
    restarted = wire.add("127.0.0.1", 5060, seed=9)
    restored = restarted.restore_dialog(DialogState.from_dict(state.to_dict()))
    restarted.bye(restored, wire.now)
    wire.flush()
    assert [e.reason for e in wire.take(bob, DialogTerminated)] == ["bye"]
    assert [e.response.status for e in wire.take(restarted, ResponseReceived)] == [200]
    # The same BYE again: the dialog is gone, so 481 (§12.2.2).
    again = restarted.restore_dialog(state)
    restarted.bye(again, wire.now)
    wire.flush()
    assert [e.response.status for e in wire.take(restarted, ResponseReceived)] == [481]


def test_lower_cseq_in_dialog_gets_500() -> None:
    wire, alice, bob = pair()
    da, _ = call(wire, alice, bob)
    wire.take(alice)
    da.local_seq = -1  # the next request carries CSeq 0, below the INVITE's 1
    alice.send_in_dialog(da, "INFO", wire.now)
    wire.flush()
    assert [e.response.status for e in wire.take(alice, ResponseReceived)] == [500]
    assert wire.take(bob, RequestReceived) == []


def invite_through_a_proxy() -> bytes:
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    return (
        "INVITE sip:6015550100@127.0.0.2 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bKproxy1\r\n"
        "Via: SIP/2.0/UDP 127.0.0.9:5070;branch=z9hG4bKcust1;rport\r\n"
        "Record-Route: <sip:127.0.0.10:5060;lr;ftag=c1>\r\nMax-Forwards: 69\r\n"
        "From: <sip:3105550000@127.0.0.9>;tag=c1\r\nTo: <sip:6015550100@127.0.0.2>\r\nCall-ID: rr1\r\n"
        "CSeq: 1 INVITE\r\nContact: <sip:3105550000@127.0.0.9:5070>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def test_the_2xx_after_an_early_dialogs_18x_carries_the_record_route_too() -> None:
    """§12.1.1: every dialog-forming response of the initial INVITE copies its Record-Route, the 2xx included once a
    180 made an early dialog: the caller's confirmed dialog takes its route set from the 2xx (§13.2.2.4), and a
    2xx without it sent the caller's ACK and BYE past the proxy (a carrier's BYE then reached no node after a
    failover behind Kamailio)."""
    ep = endpoint()
    ep.receive_datagram(invite_through_a_proxy(), ("127.0.0.10", 5060), 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    for status in (180, 200):
        ep.respond(event.transaction, status, 0.0)
    sent = [(parse(out), dest) for out, dest, _ in ep.datagrams_to_send()]
    assert all(isinstance(r, Response) and dest == ("127.0.0.10", 5060) for r, dest in sent)
    sent = [(r, dest) for r, dest in sent if isinstance(r, Response) and r.status in (180, 200)]
    assert [(r.status, r.headers.get_all("Record-Route")) for r, _ in sent] == [
        (180, ["<sip:127.0.0.10:5060;lr;ftag=c1>"]), (200, ["<sip:127.0.0.10:5060;lr;ftag=c1>"])]
    assert sent[0][0].to.tag == sent[1][0].to.tag is not None
