"""Session timers (RFC 4028) between two endpoints: negotiation, 422, refresh, and expiry when the peer vanishes."""

from __future__ import annotations

from test_endpoint import SDP
from wire import Wire

from callbridge.sip.endpoint import Endpoint
from callbridge.sip.events import (
    DialogEstablished,
    DialogTerminated,
    RequestReceived,
    ResponseReceived,
    SessionExpired,
)
from callbridge.sip.session_timer import expiry_delay, refresh_delay


def setup(**bob_options: object) -> tuple[Wire, Endpoint, Endpoint]:
    wire = Wire()
    alice = wire.add("127.0.0.1", 5060, seed=1)
    bob = wire.add("127.0.0.2", 5060, seed=2, **bob_options)
    return wire, alice, bob


def answered_call(wire: Wire, alice: Endpoint, bob: Endpoint, session_expires: int) -> tuple[object, object]:
    alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1", body=SDP,
                 content_type="application/sdp", session_expires=session_expires)
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    bob.respond(incoming.transaction, 200, wire.now, body=SDP, content_type="application/sdp")
    wire.flush()
    [a] = wire.take(alice, DialogEstablished)
    [b] = wire.take(bob, DialogEstablished)
    return a.dialog, b.dialog


def test_delays() -> None:
    assert refresh_delay(1800) == 900
    assert expiry_delay(1800) == 1800 - 32  # min(32, interval/3)
    assert expiry_delay(90) == 60  # min(32, 30)


def test_negotiation_picks_the_uac_as_refresher_and_refreshes_by_update() -> None:
    wire, alice, bob = setup()
    da, db = answered_call(wire, alice, bob, 120)
    ok = next(e.response for e in wire.take(alice, ResponseReceived) if e.response.status == 200)
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    assert da.session.we_refresh and not db.session.we_refresh  # type: ignore[attr-defined]
    start = wire.now
    wire.advance(60.0)  # half the interval: alice refreshes with UPDATE, bob answers by himself
    updates = [s for s in wire.log if s.first_line.startswith("UPDATE")]
    assert [s.time - start for s in updates] == [60.0]
    assert b"Session-Expires: 120;refresher=uac" in updates[0].data
    wire.advance(200.0)  # keeps refreshing every 60 s; the call stays up
    assert [s.time - start for s in wire.log if s.first_line.startswith("UPDATE")] == [60.0, 120.0, 180.0, 240.0]
    assert wire.take(alice, DialogTerminated) == [] and wire.take(bob, DialogTerminated) == []
    assert wire.take(bob, RequestReceived) == []  # refreshes are handled inside the endpoint


def test_peer_vanishes_session_expires_and_bye_is_sent() -> None:
    wire, alice, bob = setup()
    _da, db = answered_call(wire, alice, bob, 90)
    wire.drop_all_from(alice)  # alice (the refresher) goes silent
    start = wire.now
    wire.advance(59.9)
    assert wire.take(bob, SessionExpired) == []
    wire.advance(0.1)  # 90 - min(32, 90/3) = 60 s after the last refresh
    [expired] = wire.take(bob, SessionExpired)
    assert expired.dialog is db
    [terminated] = wire.take(bob, DialogTerminated)
    assert terminated.reason == "session-expired"
    assert [s.time - start for s in wire.log if s.first_line.startswith("BYE") and s.src == ("127.0.0.2", 5060)] == [
        60.0
    ]
    assert bob.dialog_count == 0
    wire.advance(100.0)
    assert bob.transaction_count == 0


def test_uas_imposes_a_session_timer_and_refreshes_itself_when_the_uac_cannot() -> None:
    wire, alice, bob = setup(session_expires=100)
    alice.session_expires = None
    request = alice.create_request("INVITE", "sip:bob@127.0.0.2", from_uri="sip:alice@127.0.0.1", body=SDP,
                                   content_type="application/sdp")  # no Supported: timer
    alice.send_request(request, wire.now)
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    response = bob.respond(incoming.transaction, 200, wire.now, body=SDP, content_type="application/sdp")
    assert response.headers.get("Session-Expires") == "100;refresher=uas"
    assert "require" not in response.headers
    wire.flush()
    [db] = [e.dialog for e in wire.take(bob, DialogEstablished)]
    assert db.session is not None and db.session.we_refresh


def test_too_small_interval_gets_422_and_the_retry_with_min_se_succeeds() -> None:
    wire, alice, bob = setup(min_se=300)
    tx = alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1", session_expires=120)
    wire.flush()
    assert wire.take(bob, RequestReceived) == []
    rejected = [e.response for e in wire.take(alice, ResponseReceived) if e.response.status >= 200]
    assert [r.status for r in rejected] == [422]
    assert rejected[0].headers.get("Min-SE") == "300"
    retry = alice.retry_request(tx, wire.now, headers=[("Session-Expires", "300"), ("Min-SE", "300")])
    assert retry.request.cseq.number == 2
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    bob.respond(incoming.transaction, 200, wire.now)
    wire.flush()
    [established] = wire.take(alice, DialogEstablished)
    assert established.dialog.session is not None and established.dialog.session.interval == 300
