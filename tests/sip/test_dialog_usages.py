"""Dialog usages (RFC 5057 §5.5, RFC 6665 §4.5.3): a BYE ends the INVITE usage only; a subscription usage the TU
holds keeps the dialog's state, so that its final NOTIFY can still be sent, until the TU releases it."""

from __future__ import annotations

import pytest
from test_endpoint import call, pair

from callbridge.sip.dialog import DialogError
from callbridge.sip.events import DialogTerminated, RequestReceived, ResponseReceived

NOTIFY_HEADERS = (("Event", "refer;id=2"), ("Subscription-State", "terminated;reason=noresource"))
SIPFRAG = "message/sipfrag;version=2.0"


def test_a_held_usage_outlives_the_peers_bye_and_carries_the_final_notify() -> None:
    wire, alice, bob = pair()
    da, db = call(wire, alice, bob)
    alice.hold_usage(da)  # alice is the notifier of a REFER bob sent
    bob.bye(db, wire.now)
    wire.flush()
    wire.take(alice, ResponseReceived)
    [ended] = wire.take(alice, DialogTerminated)
    assert (ended.dialog, ended.reason, da.terminated) == (da, "bye", True)
    assert alice.dialog_count == 1 and bob.dialog_count == 0  # alice keeps the state; bob forgot it
    with pytest.raises(DialogError):
        alice.send_in_dialog(da, "INVITE", wire.now)  # the session is over: only the usage's requests
    with pytest.raises(DialogError):
        alice.send_in_dialog(da, "BYE", wire.now)
    cseq = da.local_seq
    tx = alice.send_in_dialog(da, "NOTIFY", wire.now, body=b"SIP/2.0 200 OK\r\n", content_type=SIPFRAG,
                              headers=NOTIFY_HEADERS)
    wire.flush()
    notify = tx.request
    assert (notify.cseq.number, notify.to.tag, notify.from_.tag) == (cseq + 1, da.remote_tag, da.local_tag)
    assert notify.headers.get("Subscription-State") == "terminated;reason=noresource"
    [answer] = wire.take(alice, ResponseReceived)
    assert answer.response.status == 481  # bob discarded the dialog with his BYE
    assert alice.dialog_count == 1  # a 481 to a request of a terminated dialog changes nothing more
    alice.release_usage(da)
    assert alice.dialog_count == 0 and da.usages == 0
    with pytest.raises(DialogError):
        alice.release_usage(da)


def test_a_held_usage_outlives_our_own_bye_and_reaches_a_subscriber_that_holds_it_too() -> None:
    wire, alice, bob = pair()
    da, db = call(wire, alice, bob)
    alice.hold_usage(da)
    bob.hold_usage(db)  # bob, the subscriber, keeps the dialog too (RFC 5057 §5.5)
    alice.bye(da, wire.now)
    wire.flush()
    assert [e.reason for e in wire.take(alice, DialogTerminated)] == ["bye-sent"]
    assert [e.reason for e in wire.take(bob, DialogTerminated)] == ["bye"]
    assert alice.dialog_count == bob.dialog_count == 1
    wire.take(alice, ResponseReceived)
    alice.send_in_dialog(da, "NOTIFY", wire.now, body=b"SIP/2.0 486 Busy Here\r\n", content_type=SIPFRAG,
                         headers=NOTIFY_HEADERS)
    wire.flush()
    [notify] = wire.take(bob, RequestReceived)  # the usage's request goes to bob's TU, which answers it
    assert (notify.request.method, notify.dialog, notify.request.body) == ("NOTIFY", db, b"SIP/2.0 486 Busy Here\r\n")
    bob.respond(notify.transaction, 200, wire.now)
    wire.flush()
    assert [e.response.status for e in wire.take(alice, ResponseReceived)] == [200]
    alice.release_usage(da)
    bob.release_usage(db)
    assert alice.dialog_count == bob.dialog_count == 0


def test_without_a_held_usage_the_bye_forgets_the_dialog_at_once() -> None:
    wire, alice, bob = pair()
    da, db = call(wire, alice, bob)
    alice.hold_usage(da)
    alice.release_usage(da)  # released while the session lives: nothing is kept after the BYE
    bob.bye(db, wire.now)
    wire.flush()
    assert alice.dialog_count == bob.dialog_count == 0
    with pytest.raises(DialogError):
        alice.send_in_dialog(da, "NOTIFY", wire.now)
    with pytest.raises(DialogError):
        alice.hold_usage(da)  # no new usage on a terminated dialog


def test_other_requests_for_a_lingering_dialog_get_481() -> None:
    wire, alice, bob = pair()
    da, db = call(wire, alice, bob)
    alice.hold_usage(da)
    bob.bye(db, wire.now)  # bob holds nothing: his dialog is gone; an INFO built from it gets 481
    wire.flush()
    wire.take(alice)
    wire.take(bob)
    info = db.build_request("INFO", db.local_seq + 1, None, None)
    bob.send_request(info, wire.now, dest=("127.0.0.1", 5060))
    wire.flush()
    assert [e.response.status for e in wire.take(bob, ResponseReceived)] == [481]
    assert wire.take(alice, RequestReceived) == []
    alice.release_usage(da)
    assert alice.dialog_count == bob.dialog_count == 0
