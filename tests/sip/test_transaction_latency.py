"""Transaction latency (`Endpoint.on_transaction_completed`): measured with the `now`s the endpoint is driven with
(no clock), once per transaction, at its first final response, on both sides."""

from __future__ import annotations

from txhelpers import Recorder, request, response
from wire import Wire

from callbridge.sip.events import RequestReceived
from callbridge.sip.timers import TimerConfig
from callbridge.sip.transaction import ClientTransaction


def test_a_client_transaction_reports_its_first_final_response_once() -> None:
    rec = Recorder(now=10.0)
    req = request("OPTIONS")
    tx = ClientTransaction(req, rec, TimerConfig(), ("127.0.0.3", 5060), "udp")
    tx.start(10.0)
    tx.receive_response(response(req, 100), 10.1)
    assert rec.completed == []  # a provisional response completes nothing
    tx.receive_response(response(req, 200), 10.25)
    tx.receive_response(response(req, 200), 10.5)  # a retransmission: the transaction is past its open states
    assert [(t.method, round(s, 6)) for t, s in rec.completed] == [("OPTIONS", 0.25)]


def test_an_invite_answered_486_is_measured_to_the_486() -> None:
    rec = Recorder(now=0.0)
    req = request("INVITE")
    tx = ClientTransaction(req, rec, TimerConfig(), ("127.0.0.3", 5060), "udp")
    tx.start(3.0)
    tx.receive_response(response(req, 180), 3.5)
    tx.receive_response(response(req, 486), 7.0)
    assert [(t.method, s) for t, s in rec.completed] == [("INVITE", 4.0)]


def test_a_timed_out_transaction_reports_no_latency() -> None:
    rec = Recorder(now=0.0)
    req = request("OPTIONS")
    tx = ClientTransaction(req, rec, TimerConfig(), ("127.0.0.3", 5060), "udp")
    tx.start(0.0)
    rec.run_until(40.0)  # Timer F (32 s) fires
    assert rec.timeouts == [tx]
    assert rec.completed == []


def test_both_endpoints_report_client_and_server_sides() -> None:
    wire = Wire()
    alice = wire.add("127.0.0.1", 5060, seed=1)
    bob = wire.add("127.0.0.2", 5060, seed=2)
    seen: dict[str, list[tuple[str, str, float]]] = {"alice": [], "bob": []}
    alice.on_transaction_completed = lambda side, method, s: seen["alice"].append((side, method, round(s, 6)))
    bob.on_transaction_completed = lambda side, method, s: seen["bob"].append((side, method, round(s, 6)))
    start = wire.now
    alice.send_request(alice.create_request("OPTIONS", "sip:bob@127.0.0.2", from_uri="sip:alice@127.0.0.1"),
                       wire.now, dest=("127.0.0.2", 5060))
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    wire.advance(0.75)  # bob takes 0.75 s to answer
    bob.respond(incoming.transaction, 200, wire.now)
    wire.flush()
    assert seen["bob"] == [("server", "OPTIONS", 0.75)]
    [(side, method, seconds)] = seen["alice"]
    assert (side, method) == ("client", "OPTIONS")
    assert seconds == round(wire.now - start, 6) and seconds >= 0.75
