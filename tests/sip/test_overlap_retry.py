"""A re-INVITE answered 500 with Retry-After (RFC 3261 §14.2: the peer still busy with an INVITE) is re-sent after
that delay (§14.1), at most 1.3 s later and at most three times in a row; the retry's answer completes it."""

from __future__ import annotations

from test_endpoint import SDP, call, pair

from callbridge.sip.events import RequestReceived, ResponseReceived
from callbridge.sip.uac import OVERLAP_DELAY_MAX, OVERLAP_RETRIES


def test_a_reinvite_answered_500_with_retry_after_is_sent_again_then_succeeds() -> None:
    wire, alice, bob = pair()
    da, _db = call(wire, alice, bob)
    wire.take(alice)
    wire.take(bob)
    t0 = wire.now
    alice.send_in_dialog(da, "INVITE", t0, body=SDP, content_type="application/sdp")
    wire.flush()
    [first] = wire.take(bob, RequestReceived)
    bob.respond(first.transaction, 500, wire.now, headers=[("Retry-After", "1")])
    wire.flush()
    assert [e.response.status for e in wire.take(alice, ResponseReceived)] == [100, 500]
    assert da.timers["glare"] - t0 == 1.0  # Retry-After's second

    wire.run_until(t0 + 1.0)
    [retry] = wire.take(bob, RequestReceived)
    assert retry.request.method == "INVITE" and retry.request.body == SDP
    assert retry.request.cseq.number == first.request.cseq.number + 1
    bob.respond(retry.transaction, 200, wire.now, body=SDP, content_type="application/sdp")
    wire.flush()
    assert [e.response.status for e in wire.take(alice, ResponseReceived)] == [100, 200]
    assert da.overlap_retries == 0 and da.glare_retry is None


def test_the_retries_are_bounded_in_number_and_delay() -> None:
    wire, alice, bob = pair()
    da, _db = call(wire, alice, bob)
    wire.take(alice)
    wire.take(bob)
    alice.send_in_dialog(da, "INVITE", wire.now, body=SDP, content_type="application/sdp")
    sent = 0
    for _ in range(OVERLAP_RETRIES + 1):
        wire.flush()
        [invite] = wire.take(bob, RequestReceived)
        sent += 1
        bob.respond(invite.transaction, 500, wire.now, headers=[("Retry-After", "10")])
        wire.flush()
        at = wire.now
        if "glare" in da.timers:
            assert da.timers["glare"] - at <= OVERLAP_DELAY_MAX
            wire.run_until(da.timers["glare"])
    assert sent == OVERLAP_RETRIES + 1  # the first and three retries
    assert "glare" not in da.timers and da.glare_retry is None
    wire.run_until(wire.now + 15)
    assert wire.take(bob, RequestReceived) == []
