"""Transactions that only wait out a timer are kept as compact records (`callbridge.sip.absorbing`).

What a record must still do is what the transaction's table does in that state (RFC 3261 §17, RFC 6026): absorb
retransmissions, re-send the last response (NIST Completed) or the ACK of a non-2xx (ICT Completed), pass the ACK
of a 2xx to the dialog (IST Accepted); the record leaves at its timer, and a transaction the TU still holds then
reads Terminated. What it must no longer do: keep the transaction, its messages, its dialog or the TU's objects
alive (an ended call is freed by reference counting, with no help from the garbage collector).
"""

from __future__ import annotations

import gc
import sys
import weakref

from test_load_regressions import PEER, answered_call, deliver, phone, sipp_request, to_peer

from callbridge.sip.absorbing import Record
from callbridge.sip.events import AckReceived, DialogEstablished, DialogTerminated, RequestReceived, ResponseReceived
from callbridge.sip.transaction import TxKind, TxState


def test_a_finished_call_leaves_records_only_and_is_freed_by_reference_counting() -> None:
    wire, endpoint = phone()
    invite_tx, tag = answered_call(wire, endpoint)
    deliver(wire, endpoint, sipp_request("ACK", 1, cseq=1, to_tag=tag))
    [ack] = wire.take(endpoint, AckReceived)
    dialog = ack.dialog
    deliver(wire, endpoint, sipp_request("BYE", 2, cseq=2, to_tag=tag))
    assert [type(e) for e in wire.take(endpoint)] == [DialogEstablished, DialogTerminated]  # BYE answered
    records = list(endpoint._server.values())
    assert [(r.kind, r.state) for r in records if isinstance(r, Record)] == [
        (TxKind.INVITE_SERVER, TxState.ACCEPTED),
        (TxKind.NON_INVITE_SERVER, TxState.COMPLETED),
    ]
    assert endpoint.transaction_count == 2 and endpoint.dialog_count == 0
    tx_ref = weakref.ref(invite_tx)
    was_enabled = gc.isenabled()
    gc.disable()  # reference counting alone must free them
    try:
        del invite_tx, ack
        assert tx_ref() is None
        # Only this function holds the dialog (its 2xx give-up timer is still in the heap, by dialog id).
        assert sys.getrefcount(dialog) == 2
    finally:
        if was_enabled:
            gc.enable()
    wire.advance(64 * 0.5)  # Timer L and J
    assert endpoint.transaction_count == 0 and endpoint.get_timer() is None


def test_records_absorb_and_resend_as_the_tables_say() -> None:
    wire, endpoint = phone()
    invite_tx, tag = answered_call(wire, endpoint)  # its 200 was lost
    deliver(wire, endpoint, sipp_request("INVITE", 0, cseq=1))  # INVITE again: absorbed in Accepted (RFC 6026)
    assert wire.take(endpoint, RequestReceived) == []
    before = len(to_peer(wire))
    deliver(wire, endpoint, sipp_request("ACK", 1, cseq=1, to_tag=tag))  # the ACK of the 2xx: to the dialog
    assert len(wire.take(endpoint, AckReceived)) == 1
    deliver(wire, endpoint, sipp_request("ACK", 1, cseq=1, to_tag=tag))  # again: nothing awaits it
    assert wire.take(endpoint, AckReceived) == [] and endpoint.stats["unmatched_acks"] == 1
    assert len(to_peer(wire)) == before
    deliver(wire, endpoint, sipp_request("BYE", 2, cseq=2, to_tag=tag))
    assert len(wire.take(endpoint, DialogTerminated)) == 1
    ok = [s.data for s in wire.log if s.dst == PEER and b"CSeq: 2 BYE" in s.data]
    deliver(wire, endpoint, sipp_request("BYE", 2, cseq=2, to_tag=tag))  # a retransmitted BYE: the same 200
    again = [s.data for s in wire.log if s.dst == PEER and b"CSeq: 2 BYE" in s.data]
    assert len(ok) == 1 and again == ok * 2
    assert wire.take(endpoint, RequestReceived) == []
    assert invite_tx.state is TxState.ACCEPTED
    wire.advance(64 * 0.5)
    assert invite_tx.state is TxState.TERMINATED  # held by the test: it takes Timer L as its table says
    deliver(wire, endpoint, sipp_request("BYE", 2, cseq=2, to_tag=tag))  # after Timer J: a new transaction
    assert [s.first_line for s in wire.log if s.dst == PEER][-1] == "SIP/2.0 481 Call/Transaction Does Not Exist"


def test_client_records_absorb_responses_and_ack_a_retransmitted_rejection() -> None:
    wire = phone()[0]
    alice = wire.add("127.0.0.1", 5060)
    bob = wire.add("127.0.0.3", 5060, seed=2)
    invite = alice.invite("sip:bob@127.0.0.3:5060", wire.now, from_uri="sip:alice@127.0.0.1")
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    wire.drop_next(b"ACK ", 1)  # bob's 486 is re-sent at Timer G; alice's record must ACK it again
    bob.respond(incoming.transaction, 486, wire.now)
    wire.flush()
    assert invite.state is TxState.COMPLETED
    assert isinstance(alice._client[invite.key], Record)
    wire.advance(0.5)
    acks = [s for s in wire.log if s.first_line.startswith("ACK ")]
    assert [(round(s.time - 1000.0, 3), s.dropped) for s in acks] == [(0.0, True), (0.5, False)]
    assert acks[0].data == acks[1].data
    assert [e.response.status for e in wire.take(alice, ResponseReceived)] == [100, 486]  # 486 once, not per copy
    wire.advance(32.0)  # Timer D, H
    assert invite.state is TxState.TERMINATED
    assert alice.transaction_count == 0 and bob.transaction_count == 0
