"""`Endpoint.set_destination`: a dialog's requests (and the ACK of its 2xx) sent to a fixed address instead of the
remote target, for a peer behind NAT whose Contact names a private address (RFC 3581 spirit, §12.2.1.1 otherwise).

The callee here believes it is at 192.0.2.55:5999 (its Contact and Via say so); the in-memory wire knows it at
127.0.0.2:5060, as a NAT would show it. Nothing is ever delivered to 192.0.2.55: the wire only logs it."""

from __future__ import annotations

import random

from wire import Wire

from callbridge.sip.dialog import Dialog, DialogState
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.events import Event, RequestReceived, ResponseReceived
from callbridge.sip.timers import TimerConfig

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
PUBLIC = ("127.0.0.2", 5060)  # where the NAT shows the callee
PRIVATE = ("192.0.2.55", 5999)  # what the callee's Contact names


def nat_pair() -> tuple[Wire, Endpoint, Endpoint]:
    wire = Wire()
    caller = wire.add("127.0.0.1", 5060, seed=1, auto_ack=False)
    callee = Endpoint(PRIVATE[0], PRIVATE[1], TimerConfig(), random.Random(2))
    wire.endpoints[PUBLIC] = callee
    wire.events[PUBLIC] = []
    return wire, caller, callee


def take(wire: Wire, addr: tuple[str, int], kind: type[Event]) -> list[Event]:
    wire.flush()
    bucket = wire.events[addr]
    taken = [e for e in bucket if isinstance(e, kind)]
    bucket[:] = [e for e in bucket if not isinstance(e, kind)]
    return taken


def sent_to(wire: Wire, addr: tuple[str, int]) -> list[str]:
    return [s.first_line for s in wire.log if s.dst == addr]


def answered_call(wire: Wire, caller: Endpoint) -> Dialog:
    """INVITE to the callee's public address, 200 from it; the caller's confirmed dialog (its 2xx not ACKed)."""
    caller.invite(f"sip:bob@{PRIVATE[0]}:{PRIVATE[1]}", wire.now, from_uri="sip:alice@127.0.0.1", body=SDP,
                  content_type="application/sdp", dest=PUBLIC)
    [incoming] = take(wire, PUBLIC, RequestReceived)
    assert isinstance(incoming, RequestReceived)
    wire.endpoints[PUBLIC].respond(incoming.transaction, 200, wire.now, body=SDP, content_type="application/sdp")
    wire.flush()
    final = [e for e in take(wire, ("127.0.0.1", 5060), ResponseReceived)
             if isinstance(e, ResponseReceived) and e.response.status == 200]
    assert len(final) == 1 and final[0].dialog is not None
    dialog = final[0].dialog
    assert str(dialog.remote_target) == f"sip:callbridge@{PRIVATE[0]}:{PRIVATE[1]}"
    return dialog


def test_ack_reinvite_and_bye_go_to_the_destination_not_the_contact() -> None:
    wire, caller, callee = nat_pair()
    dialog = answered_call(wire, caller)
    caller.set_destination(dialog, PUBLIC)
    assert caller.dialog_destination(dialog) == (PUBLIC, "udp")
    caller.ack(dialog, wire.now)
    wire.flush()
    caller.send_in_dialog(dialog, "INVITE", wire.now, body=SDP, content_type="application/sdp")
    [reinvite] = take(wire, PUBLIC, RequestReceived)
    assert isinstance(reinvite, RequestReceived)
    # the Request-URI is still the remote target (§12.2.1.1): only where the datagram goes changed
    assert str(reinvite.request.uri) == f"sip:callbridge@{PRIVATE[0]}:{PRIVATE[1]}"
    callee.respond(reinvite.transaction, 200, wire.now, body=SDP, content_type="application/sdp")
    wire.flush()
    caller.ack(dialog, wire.now)
    caller.bye(dialog, wire.now)
    wire.flush()
    assert sent_to(wire, PRIVATE) == []
    to_callee = sent_to(wire, PUBLIC)
    assert [line.split()[0] for line in to_callee] == ["INVITE", "ACK", "INVITE", "ACK", "BYE"]
    assert callee.dialog_count == 0 and caller.dialog_count == 0
    assert caller.dialog_destination(dialog) is None  # forgotten with the dialog


def test_without_a_destination_requests_follow_the_remote_target() -> None:
    wire, caller, _ = nat_pair()
    dialog = answered_call(wire, caller)
    caller.set_destination(dialog, PUBLIC)
    caller.set_destination(dialog, None)
    caller.ack(dialog, wire.now)
    caller.send_in_dialog(dialog, "INFO", wire.now)
    wire.flush()
    assert [line.split()[0] for line in sent_to(wire, PRIVATE)] == ["ACK", "INFO"]


def test_a_restored_dialog_is_ended_through_its_destination() -> None:
    wire, caller, callee = nat_pair()
    dialog = answered_call(wire, caller)
    caller.set_destination(dialog, PUBLIC)
    caller.ack(dialog, wire.now)
    wire.flush()
    state: DialogState = caller.dialog_state(dialog)
    restarted = wire.add("127.0.0.1", 5060, seed=3, auto_ack=False)  # a new process on the same address
    restored = restarted.restore_dialog(state)
    restarted.set_destination(restored, PUBLIC)
    restarted.bye(restored, wire.now)
    wire.flush()
    assert sent_to(wire, PRIVATE) == []
    assert sent_to(wire, PUBLIC)[-1].startswith("BYE ")
    assert callee.dialog_count == 0


def test_a_terminated_dialog_takes_no_destination() -> None:
    wire, caller, _ = nat_pair()
    dialog = answered_call(wire, caller)
    caller.ack(dialog, wire.now)
    caller.bye(dialog, wire.now)
    caller.set_destination(dialog, PUBLIC)
    assert caller.dialog_destination(dialog) is None
