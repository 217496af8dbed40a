"""Digest challenge and retry between two endpoints (RFC 3261 §22 with sip.auth)."""

from __future__ import annotations

from test_endpoint import SDP, pair

from callbridge.sip.auth import DigestChallenger, DigestResponder, ha1
from callbridge.sip.events import DialogEstablished, RequestReceived, ResponseReceived


def lookup(username: str, realm: str, algorithm: str) -> str | None:
    return ha1("1001", realm, "secret", algorithm) if username == "1001" else None


def test_invite_challenged_with_401_and_retried_with_credentials() -> None:
    wire, alice, bob = pair()
    challenger = DigestChallenger("callbridge", b"0123456789abcdef0123", random_bytes=lambda n: b"\x01" * n)
    tx = alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:1001@127.0.0.1", body=SDP,
                      content_type="application/sdp")
    wire.flush()

    [first] = wire.take(bob, RequestReceived)
    result = challenger.verify("INVITE", None, lookup, wire.now)
    assert not result.ok
    bob.respond(first.transaction, 401, wire.now,
                headers=[("WWW-Authenticate", v) for v in challenger.challenge(wire.now)])
    wire.flush()
    challenge = next(e.response for e in wire.take(alice, ResponseReceived) if e.response.status == 401)
    assert "ACK sip:bob@127.0.0.2 SIP/2.0" in wire.first_lines()  # the 401 is ACKed by the transaction

    responder = DigestResponder("1001", "secret")
    credentials = responder.authorize("INVITE", str(tx.request.uri), challenge.headers.get_all("WWW-Authenticate"))
    retry = alice.retry_request(tx, wire.now, headers=[("Authorization", credentials)])
    assert retry.request.cseq.number == 2 and retry.request.call_id == tx.request.call_id
    assert retry.request.from_.tag == tx.request.from_.tag and retry.request.via.branch != tx.request.via.branch
    wire.flush()

    [second] = wire.take(bob, RequestReceived)
    verdict = challenger.verify("INVITE", second.request.headers.get("Authorization"), lookup, wire.now)
    assert verdict.ok and verdict.username == "1001"
    bob.respond(second.transaction, 200, wire.now, body=SDP, content_type="application/sdp")
    wire.flush()
    [established] = wire.take(alice, DialogEstablished)
    assert established.dialog.local_seq == 2
    wire.advance(64.0)
    assert alice.transaction_count == bob.transaction_count == 0
