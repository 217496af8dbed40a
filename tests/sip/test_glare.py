"""Re-INVITE glare (RFC 3261 §14.1, §14.2): 491 on both sides, randomised retries, one succeeds."""

from __future__ import annotations

import pytest
from test_endpoint import SDP, call, pair

from callbridge.sip.dialog import DialogError
from callbridge.sip.events import AckReceived, RequestReceived, ResponseReceived


def test_both_reinvite_both_get_491_then_retries_succeed() -> None:
    wire, alice, bob = pair()
    da, db = call(wire, alice, bob)  # alice sent the INVITE: she owns the Call-ID
    wire.take(alice)
    wire.take(bob)
    t0 = wire.now
    alice.send_in_dialog(da, "INVITE", t0, body=SDP, content_type="application/sdp")
    bob.send_in_dialog(db, "INVITE", t0, body=SDP, content_type="application/sdp")
    wire.flush()
    assert [e.response.status for e in wire.take(alice, ResponseReceived)] == [100, 491]
    assert [e.response.status for e in wire.take(bob, ResponseReceived)] == [100, 491]
    assert wire.take(alice, RequestReceived) == [] and wire.take(bob, RequestReceived) == []
    # §14.1: the owner waits 2.1-4 s, the other side 0-2 s (10 ms units, from the injected RNG).
    alice_retry, bob_retry = da.timers["glare"] - t0, db.timers["glare"] - t0
    assert 2.1 <= alice_retry <= 4.0 and 0.0 <= bob_retry <= 2.0
    for delay in (alice_retry, bob_retry):
        assert abs(delay * 100 - round(delay * 100)) < 1e-6

    wire.run_until(t0 + bob_retry)  # bob retries first; alice accepts
    [retry] = wire.take(alice, RequestReceived)
    # bob's first request in the dialog had CSeq 1 (his local sequence started empty), the retry CSeq 2.
    assert retry.request.method == "INVITE" and retry.request.cseq.number == 2 and retry.dialog is da
    alice.respond(retry.transaction, 200, wire.now, body=SDP, content_type="application/sdp")
    wire.flush()
    assert [e.response.status for e in wire.take(bob, ResponseReceived)] == [100, 200]
    assert len(wire.take(alice, AckReceived)) == 1

    wire.run_until(t0 + alice_retry)  # then alice's own retry goes through
    [second] = wire.take(bob, RequestReceived)
    assert second.request.method == "INVITE" and second.request.cseq.number == 3
    bob.respond(second.transaction, 200, wire.now, body=SDP, content_type="application/sdp")
    wire.flush()
    assert [e.response.status for e in wire.take(alice, ResponseReceived)] == [100, 200]
    assert len(wire.take(bob, AckReceived)) == 1
    assert da.outgoing_invite is None and db.outgoing_invite is None


def test_second_invite_while_first_unanswered_gets_500_and_local_guard() -> None:
    wire, alice, bob = pair()
    da, db = call(wire, alice, bob)
    wire.take(alice)
    wire.take(bob)
    alice.send_in_dialog(da, "INVITE", wire.now, body=SDP, content_type="application/sdp")
    wire.flush()
    [pending] = wire.take(bob, RequestReceived)
    with pytest.raises(DialogError):
        bob.send_in_dialog(db, "INVITE", wire.now)  # refused locally: an INVITE is in progress
    # A peer that does send a second INVITE before the first is answered gets 500 with Retry-After (§14.2).
    da.outgoing_invite = None
    alice.send_in_dialog(da, "INVITE", wire.now, body=SDP, content_type="application/sdp")
    wire.flush()
    statuses = [e.response for e in wire.take(alice, ResponseReceived) if e.response.status >= 200]
    assert [r.status for r in statuses] == [500]
    assert statuses[0].headers.get("Retry-After") is not None
    assert pending.transaction.state.value == "Proceeding"
