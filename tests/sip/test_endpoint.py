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
    InviteCancelled,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from callbridge.sip.message import Request, Response
from callbridge.sip.parser import parse
from callbridge.sip.transaction import TxKind, TxState

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


def test_cancel_before_200() -> None:
    wire, alice, bob = pair()
    tx = alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1")
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    bob.respond(incoming.transaction, 180, wire.now)
    wire.flush()
    [early] = [e.dialog for e in wire.take(alice, ResponseReceived) if e.dialog is not None]
    assert early.state is DialogStatus.EARLY
    alice.cancel(tx, wire.now)
    wire.flush()
    [cancelled] = wire.take(bob, InviteCancelled)
    assert cancelled.transaction is incoming.transaction
    assert [e.response.status for e in wire.take(alice, ResponseReceived)] == [200, 487]
    assert [e.reason for e in wire.take(alice, DialogTerminated)] == ["cancelled"]
    assert [e.reason for e in wire.take(bob, DialogTerminated)] == ["cancelled"]
    assert wire.first_lines()[-4:] == [
        "CANCEL sip:bob@127.0.0.2 SIP/2.0",
        "SIP/2.0 200 OK",
        "SIP/2.0 487 Request Terminated",
        "ACK sip:bob@127.0.0.2 SIP/2.0",
    ]
    cancel = parse(wire.log[-4].data)
    assert isinstance(cancel, Request)
    assert cancel.via.branch == tx.request.via.branch and cancel.cseq.number == tx.request.cseq.number
    wire.advance(64.0)
    assert alice.transaction_count == bob.transaction_count == 0
    assert alice.dialog_count == bob.dialog_count == 0


def test_cancel_waits_for_a_provisional_response() -> None:
    wire = Wire()
    alice = wire.add("127.0.0.1", 5060, seed=1)
    bob = wire.add("127.0.0.2", 5060, seed=2, send_trying=False)
    tx = alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1")
    alice.cancel(tx, wire.now)  # nothing received yet: CANCEL must wait (§9.1)
    wire.flush()
    assert wire.first_lines() == ["INVITE sip:bob@127.0.0.2 SIP/2.0"]
    [incoming] = wire.take(bob, RequestReceived)
    bob.respond(incoming.transaction, 183, wire.now)
    wire.flush()
    assert "CANCEL sip:bob@127.0.0.2 SIP/2.0" in wire.first_lines()
    assert len(wire.take(bob, InviteCancelled)) == 1


def test_cancel_crossing_the_200_ends_the_call_with_bye() -> None:
    wire, alice, bob = pair()
    tx = alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1")
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    bob.respond(incoming.transaction, 180, wire.now)
    wire.flush()
    wire.drop_next(b"SIP/2.0 200 OK")  # the 200 is "in flight" while alice cancels
    bob.respond(incoming.transaction, 200, wire.now)
    wire.flush()
    alice.cancel(tx, wire.now)
    wire.flush()
    assert wire.take(bob, InviteCancelled) == []  # too late: the INVITE was answered
    assert [e.response.status for e in wire.take(alice, ResponseReceived)][-1] == 200  # 200 for the CANCEL
    wire.advance(0.5)  # bob retransmits the 2xx (T1); alice ACKs it and hangs up
    assert [e.reason for e in wire.take(alice, DialogTerminated)] == ["cancelled"]
    assert len(wire.take(bob, AckReceived)) == 1
    assert [e.reason for e in wire.take(bob, DialogTerminated)] == ["bye"]
    assert wire.first_lines()[-4:] == [
        "SIP/2.0 200 OK",
        "ACK sip:callbridge@127.0.0.2:5060 SIP/2.0",
        "BYE sip:callbridge@127.0.0.2:5060 SIP/2.0",
        "SIP/2.0 200 OK",
    ]


def test_reinvite_refreshes_target_and_is_acked() -> None:
    wire, alice, bob = pair()
    da, db = call(wire, alice, bob)
    wire.take(alice)
    tx = alice.send_in_dialog(da, "INVITE", wire.now, body=SDP.replace(b"4000", b"4002"),
                              content_type="application/sdp")
    assert tx.request.cseq.number == 2
    wire.flush()
    [reinvite] = wire.take(bob, RequestReceived)
    assert reinvite.dialog is db and reinvite.request.method == "INVITE"
    response = bob.respond(reinvite.transaction, 200, wire.now, body=SDP, content_type="application/sdp",
                           headers=[("Contact", "<sip:moved@127.0.0.2:5060>")])
    assert isinstance(response, Response)
    wire.flush()
    trying, answer = wire.take(alice, ResponseReceived)
    assert (trying.response.status, answer.response.status) == (100, 200) and answer.dialog is da
    assert str(da.remote_target) == "sip:moved@127.0.0.2:5060"
    [ack] = wire.take(bob, AckReceived)
    assert ack.request.cseq.number == 2
    assert wire.first_lines()[-1] == "ACK sip:moved@127.0.0.2:5060 SIP/2.0"
    assert da.state is DialogStatus.CONFIRMED and alice.dialog_count == 1


def test_lost_invite_200_and_ack_recovered_by_retransmission() -> None:
    wire, alice, bob = pair(send_trying=False)
    wire.drop_next(b"INVITE ")
    alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1")
    wire.flush()
    assert wire.take(bob) == []
    wire.advance(0.5)  # Timer A
    [incoming] = wire.take(bob, RequestReceived)
    wire.drop_next(b"SIP/2.0 200")
    wire.drop_next(b"ACK ")
    start, mark = wire.now, len(wire.log)
    bob.respond(incoming.transaction, 200, wire.now)
    wire.flush()
    wire.advance(0.5)  # bob's 2xx again at T1: alice ACKs (lost)
    wire.advance(1.0)  # again at 2*T1: alice re-sends the same ACK, which arrives
    assert len(wire.take(alice, DialogEstablished)) == 1
    assert len(wire.take(bob, AckReceived)) == 1
    sends = [(s.time - start, s.first_line, s.dropped) for s in wire.log[mark:]]
    assert sends == [
        (0.0, "SIP/2.0 200 OK", True),
        (0.5, "SIP/2.0 200 OK", False),
        (0.5, "ACK sip:callbridge@127.0.0.2:5060 SIP/2.0", True),
        (1.5, "SIP/2.0 200 OK", False),
        (1.5, "ACK sip:callbridge@127.0.0.2:5060 SIP/2.0", False),
    ]
    acks = [s.data for s in wire.log if s.first_line.startswith("ACK")]
    assert acks[0] == acks[1]  # the same ACK, re-sent by the UAC core (§13.2.2.4)


def test_2xx_never_acked_ends_the_call_with_bye_after_64_t1() -> None:
    wire, alice, bob = pair()
    wire.drop_rules.append(lambda data, src, dst: data.startswith(b"ACK "))
    alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1")
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    start = wire.now
    bob.respond(incoming.transaction, 200, wire.now)
    wire.advance(40.0)
    times = [round(s.time - start, 3) for s in wire.log if s.src == ("127.0.0.2", 5060)
             and s.first_line == "SIP/2.0 200 OK" and s.data.find(b"INVITE\r\n") > 0]
    # §13.3.1.4: T1 doubling up to T2 ...
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    # ... and after 64*T1 without ACK the session ends with BYE.
    [terminated] = wire.take(bob, DialogTerminated)
    assert terminated.reason == "ack-timeout"
    assert [s.time - start for s in wire.log if s.first_line.startswith("BYE")] == [32.0]
    assert [e.reason for e in wire.take(alice, DialogTerminated)] == ["bye"]
    wire.advance(64.0)
    assert alice.transaction_count == bob.transaction_count == 0
    assert alice.dialog_count == bob.dialog_count == 0


def test_tables_return_to_empty_after_many_calls() -> None:
    wire, alice, bob = pair()
    outcomes = ["answer", "reject", "cancel", "answer-bob-hangs-up"] * 5
    for outcome in outcomes:
        tx = alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1")
        wire.flush()
        [incoming] = wire.take(bob, RequestReceived)
        if outcome == "reject":
            bob.respond(incoming.transaction, 486, wire.now)
        elif outcome == "cancel":
            bob.respond(incoming.transaction, 180, wire.now)
            wire.flush()
            alice.cancel(tx, wire.now)
        else:
            bob.respond(incoming.transaction, 200, wire.now)
        wire.flush()
        wire.advance(0.01)
        if outcome == "answer":
            [established] = wire.take(alice, DialogEstablished)
            alice.bye(established.dialog, wire.now)
        elif outcome == "answer-bob-hangs-up":
            [established] = wire.take(bob, DialogEstablished)
            bob.bye(established.dialog, wire.now)
        wire.flush()
        wire.take(alice)
        wire.take(bob)
    assert alice.dialog_count == bob.dialog_count == 0
    assert alice.transaction_count > 0  # Timers K, J, D, I, L, M still running
    wire.advance(64.0)
    assert alice.transaction_count == bob.transaction_count == 0
    assert alice.get_timer() is None and bob.get_timer() is None
    assert len(alice._heap) == len(bob._heap) == 0


def test_ringing_peer_that_vanishes_is_cancelled_by_timer_c() -> None:
    wire, alice, bob = pair()
    tx = alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1")
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    bob.respond(incoming.transaction, 180, wire.now)
    wire.flush()
    wire.drop_all_from(bob)  # bob rings, then goes silent
    start = wire.now
    wire.advance(180.9)
    assert wire.take(alice, TransactionTimedOut) == []
    wire.advance(0.1)  # Timer C: 181 s after the last provisional response
    assert [e.transaction for e in wire.take(alice, TransactionTimedOut)] == [tx]
    assert [e.reason for e in wire.take(alice, DialogTerminated)] == ["timeout"]
    cancels = [s.time - start for s in wire.log if s.first_line.startswith("CANCEL")]
    assert cancels[0] == 181.0
    wire.advance(64.0)  # the CANCEL's own transaction times out (Timer F) and leaves
    assert alice.transaction_count == 0 and alice.dialog_count == 0


def test_an_input_no_state_allows_is_counted_not_raised() -> None:
    wire, alice, bob = pair()
    alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1")
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    tx = incoming.transaction  # held here, as a TU may (the confirmed dialog keeps no transaction)
    bob.respond(tx, 200, wire.now)
    wire.flush()
    # The answered INVITE waits out Timer L as a compact record; put the transaction back in the table, in a
    # state the INVITE table does not have, as a bug would.
    [(tx_key, record)] = [(k, r) for k, r in bob._server.items() if r.kind is TxKind.INVITE_SERVER]
    assert record.tx() is tx
    bob._server[tx_key] = tx
    tx.state = TxState.TRYING
    retransmission = next(s.data for s in wire.log if s.first_line.startswith("INVITE"))
    bob.receive_datagram(retransmission, ("127.0.0.1", 5060), wire.now)
    assert bob.stats["protocol_errors"] == 1 and tx_key in bob._server


def test_pending_transactions_are_those_whose_final_response_is_still_to_come() -> None:
    """What a shut-down waits for: not the transactions that only absorb retransmissions (Accepted, Completed)."""
    wire, alice, bob = pair()
    alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1", body=SDP,
                 content_type="application/sdp")
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    bob.respond(incoming.transaction, 180, wire.now)
    wire.flush()
    assert (alice.pending_transaction_count, bob.pending_transaction_count) == (1, 1)  # Proceeding, both sides
    bob.respond(incoming.transaction, 200, wire.now, body=SDP, content_type="application/sdp")
    wire.flush()
    assert alice.transaction_count >= 1 and bob.transaction_count >= 1  # kept to absorb 2xx/ACK retransmissions
    assert (alice.pending_transaction_count, bob.pending_transaction_count) == (0, 0)
