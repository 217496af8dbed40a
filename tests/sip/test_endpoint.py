"""Two endpoints wired through their bytes with a fake clock: calls, CANCEL, re-INVITE, loss, clean-up."""

from __future__ import annotations

from typing import Any

from wire import Wire

from callbridge.sip.dialog import DialogStatus
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.events import (
    AckReceived,
    DialogEstablished,
    DialogTerminated,
    RequestReceived,
    ResponseReceived,
)

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def pair(**options: Any) -> tuple[Wire, Endpoint, Endpoint]:
    wire = Wire()
    alice = wire.add("127.0.0.1", 5060, seed=1, **options)
    bob = wire.add("127.0.0.2", 5060, seed=2, **options)
    return wire, alice, bob


def call(wire: Wire, alice: Endpoint, bob: Endpoint) -> tuple[Any, Any]:
    """INVITE/180/200/ACK; returns (alice's dialog, bob's dialog)."""
    tx = alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1", body=SDP,
                      content_type="application/sdp")
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    bob.respond(incoming.transaction, 180, wire.now)
    bob.respond(incoming.transaction, 200, wire.now, body=SDP, content_type="application/sdp")
    wire.flush()
    [established_a] = wire.take(alice, DialogEstablished)
    [established_b] = wire.take(bob, DialogEstablished)
    [ack] = wire.take(bob, AckReceived)
    assert ack.dialog is established_b.dialog
    assert tx.state.value == "Accepted"
    return established_a.dialog, established_b.dialog


def test_invite_180_200_ack_bye() -> None:
    wire, alice, bob = pair()
    da, db = call(wire, alice, bob)
    responses = [e.response.status for e in wire.take(alice, ResponseReceived)]
    assert responses == [100, 180, 200]
    assert da.state is DialogStatus.CONFIRMED and db.state is DialogStatus.CONFIRMED
    assert (da.call_id, da.local_tag, da.remote_tag) == (db.call_id, db.remote_tag, db.local_tag)
    assert str(da.remote_target) == "sip:callbridge@127.0.0.2:5060"
    assert str(db.remote_target) == "sip:callbridge@127.0.0.1:5060"
    assert wire.first_lines() == [
        "INVITE sip:bob@127.0.0.2 SIP/2.0",
        "SIP/2.0 100 Trying",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 200 OK",
        "ACK sip:callbridge@127.0.0.2:5060 SIP/2.0",
    ]
    alice.bye(da, wire.now)
    wire.flush()
    assert [e.reason for e in wire.take(alice, DialogTerminated)] == ["bye-sent"]
    assert [e.reason for e in wire.take(bob, DialogTerminated)] == ["bye"]
    assert [e.response.status for e in wire.take(alice, ResponseReceived)] == [200]
    assert alice.dialog_count == bob.dialog_count == 0
    wire.advance(64.0)  # Timers K, J, L, M run out
    assert alice.transaction_count == bob.transaction_count == 0
    assert alice.get_timer() is None and bob.get_timer() is None
