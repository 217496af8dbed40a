"""What a call keeps for its life: a confirmed dialog holds no INVITE transaction (so none of its parsed messages),
while an early dialog keeps its creating transaction for CANCEL (ours) and for the 487 on BYE (theirs)."""

from __future__ import annotations

import gc
import weakref

from test_endpoint import SDP, call, pair
from wire import Wire

from callbridge.sip.dialog import DialogStatus
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.events import DialogTerminated, RequestReceived, ResponseReceived
from callbridge.sip.transaction import ClientTransaction, ServerTransaction, TxState


def forget_events(wire: Wire) -> None:
    for events in wire.events.values():
        events.clear()


def ring(wire: Wire, alice: Endpoint, bob: Endpoint) -> tuple[ClientTransaction, ServerTransaction]:
    tx = alice.invite("sip:bob@127.0.0.2", wire.now, from_uri="sip:alice@127.0.0.1", body=SDP,
                      content_type="application/sdp")
    wire.flush()
    [incoming] = wire.take(bob, RequestReceived)
    bob.respond(incoming.transaction, 180, wire.now)
    wire.flush()
    return tx, incoming.transaction


def test_a_confirmed_dialog_keeps_no_invite_transaction_and_both_are_freed_after_their_timers() -> None:
    # A 90 s session: its refresh, due at 45 s, stays the heap's earliest live entry while the test runs, as a busy
    # node always has one; the dead entries behind it (Timer C's, due at 180 s) must not keep anything alive.
    wire, alice, bob = pair(session_expires=90)
    da, db = call(wire, alice, bob)
    assert da.creating_tx is None and db.creating_tx is None
    assert da.state is DialogStatus.CONFIRMED and db.state is DialogStatus.CONFIRMED
    [client_invite] = [t for t in alice._client.values() if isinstance(t, ClientTransaction)]
    server_invite = bob._server[next(iter(bob._server))]
    assert not isinstance(server_invite, ServerTransaction)  # a record already (Timer L): only a weak reference
    client_ref = weakref.ref(client_invite)
    del client_invite, server_invite
    wire.advance(40.0)  # Timers L and M (64*T1) run out
    forget_events(wire)
    gc.collect()
    assert client_ref() is None  # nothing keeps the answered INVITE, its request or its responses
    assert alice.transaction_count == bob.transaction_count == 0
    assert alice.dialog_count == bob.dialog_count == 1
    assert da.pending_2xx is None and db.pending_2xx is None  # the 2xx bytes went with its ACK
    alice.bye(da, wire.now)  # the dialog alone still carries the call's end
    wire.flush()
    assert [e.reason for e in wire.take(bob, DialogTerminated)] == ["bye"]
    assert [e.response.status for e in wire.take(alice, ResponseReceived)] == [200]


def test_our_early_dialog_keeps_its_invite_and_hangs_up_with_cancel() -> None:
    wire, alice, bob = pair()
    tx, server_tx = ring(wire, alice, bob)
    [ringing] = [e for e in wire.take(alice, ResponseReceived) if e.response.status == 180]
    early = ringing.dialog
    assert early is not None and early.state is DialogStatus.EARLY and early.creating_tx is tx
    assert alice.bye(early, wire.now) is None  # early: CANCEL, not BYE
    wire.flush()
    assert [line for line in wire.first_lines() if "CANCEL" in line or "487" in line] == [
        "CANCEL sip:bob@127.0.0.2 SIP/2.0",
        "SIP/2.0 487 Request Terminated",
    ]
    assert server_tx.state is TxState.CONFIRMED  # 487 sent and ACKed
    assert [e.reason for e in wire.take(alice, DialogTerminated)] == ["cancelled"]
    assert [e.reason for e in wire.take(bob, DialogTerminated)] == ["cancelled"]
    assert early.creating_tx is None and alice.dialog_count == bob.dialog_count == 0


def test_a_bye_for_their_early_dialog_answers_the_invite_487() -> None:
    wire, alice, bob = pair()
    tx, server_tx = ring(wire, alice, bob)
    [ringing] = [e for e in wire.take(alice, ResponseReceived) if e.response.status == 180]
    assert ringing.dialog is not None
    [theirs] = [d for d in bob._dialogs.values()]
    assert theirs.state is DialogStatus.EARLY and theirs.creating_tx is server_tx
    alice.send_in_dialog(ringing.dialog, "BYE", wire.now)  # the caller may BYE an early dialog (§15)
    wire.flush()
    assert [e.reason for e in wire.take(bob, DialogTerminated)] == ["bye"]
    statuses = sorted((e.response.cseq.method, e.response.status) for e in wire.take(alice, ResponseReceived))
    assert statuses == [("BYE", 200), ("INVITE", 487)]
    assert server_tx.state is TxState.CONFIRMED and tx.state is TxState.COMPLETED
    assert theirs.creating_tx is None and bob.dialog_count == 0
