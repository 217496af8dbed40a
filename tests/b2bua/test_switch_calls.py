"""The switch in memory (`switch_harness.Net`): a call from a trunk routed to the queued agent's phone, forking,
provisional responses and re-INVITEs relayed, CANCEL and BYE carried to the other side, in both directions. Every
assertion is on the datagrams the switch sent: their first line, their destination, their SDP direction."""

from __future__ import annotations

from switch_harness import DOMAIN, GATEWAY, OP, PHONES, SWITCH, Net, direction, sdp

from callbridge.b2bua.legs import LegState
from callbridge.sip import Request, Response

PHONE = PHONES["1001"]


def _net(*ready: str) -> Net:
    net = Net()
    for ext in ready:
        net.phone(ext)
    net.ready(*ready)
    return net


def test_an_invite_from_the_trunk_to_a_did_reaches_the_queued_agents_registered_contact() -> None:
    net = _net("1001")
    mark = net.mark()
    net.call_in(did="5550100", caller="3001234567")
    out = net.sent(mark, src=SWITCH)
    assert [(s.line, s.dst) for s in out] == [
        ("100 Trying", GATEWAY),
        ("INVITE sip:1001@192.0.2.21:5062", PHONE),  # the binding's contact, sent where it registered from
    ]
    invite = out[1].message
    assert isinstance(invite, Request)
    assert invite.to.uri.user == "1001" and invite.to.uri.host == DOMAIN
    assert invite.from_.uri.user == "3001234567"
    assert invite.body.startswith(b"v=0\r\no=cust ")  # the customer's offer, passed as it is
    assert invite.headers.get("Max-Forwards") == "69"  # the incoming INVITE's 70, less one (loops run out)
    (call,) = net.service.list_calls(OP)
    assert call.state == "offering"


def test_an_invite_to_an_unknown_did_is_404_and_reaches_nobody() -> None:
    net = _net("1001")
    mark = net.mark()
    net.call_in(did="5559999")
    assert [(line, s.dst) for s in net.sent(mark, src=SWITCH) for line in [s.line] if not line.startswith("100")] \
        == [("404 Not Found", GATEWAY)]
    assert len(net.switch.legs) == 0


def test_the_invite_forks_to_every_contact_and_the_first_2xx_cancels_the_others() -> None:
    net = Net()
    desk, soft = ("192.0.2.21", 5062), ("192.0.2.31", 5070)
    net.phone("1001", desk)
    net.phone("1001", soft)
    net.ready("1001")
    mark = net.mark()
    net.call_in()
    invites = [s for s in net.sent(mark, src=SWITCH) if s.line.startswith("INVITE")]
    assert sorted(s.dst for s in invites) == [desk, soft]
    (ring_desk,) = net.requests(desk, "INVITE")
    (ring_soft,) = net.requests(soft, "INVITE")
    net.answer(desk, ring_desk, 180)
    net.answer(soft, ring_soft, 180)
    mark = net.mark()
    net.answer(soft, ring_soft, 200, sdp("soft", soft[0], 43000))
    sent = [(s.line, s.dst) for s in net.sent(mark, src=SWITCH)]
    assert ("CANCEL sip:1001@192.0.2.21:5062", desk) in sent
    assert ("ACK sip:peer@192.0.2.31:5070", soft) in sent  # to the answering phone's Contact, where it registered
    ok = next(s.message for s in net.sent(mark, src=SWITCH, dst=GATEWAY) if s.line == "200 OK")
    assert ok.body == sdp("soft", soft[0], 43000)  # the answering fork's SDP, the first the customer gets
    assert not [s for s in net.sent(mark, src=SWITCH, dst=desk) if s.line.startswith("BYE")]


def test_provisional_responses_are_relayed_in_order_with_their_early_media() -> None:
    net = _net("1001")
    net.call_in()
    (invite,) = net.requests(PHONE, "INVITE")
    mark = net.mark()
    net.answer(PHONE, invite, 180)
    early = sdp("phone", PHONE[0], 42000)
    net.answer(PHONE, invite, 183, early)
    relayed = [s.message for s in net.sent(mark, src=SWITCH, dst=GATEWAY)]
    assert [(m.status, m.body) for m in relayed if isinstance(m, Response)] == [(180, b""), (183, early)]
    (call,) = net.service.list_calls(OP)
    assert call.state == "offering"
    (leg,) = [leg for leg in net.switch.legs if leg.direction == "out"]
    assert leg.state is LegState.EARLY


def test_the_answer_is_relayed_to_the_customer_and_both_sides_are_up() -> None:
    net = _net("1001")
    net.call_in()
    (invite,) = net.requests(PHONE, "INVITE")
    mark = net.mark()
    net.answer(PHONE, invite, 200, sdp("phone", PHONE[0], 42000))
    assert [(s.line, s.dst) for s in net.sent(mark, src=SWITCH)] == [
        ("ACK sip:peer@192.0.2.21:5062", PHONE),  # our INVITE carried the offer: ACKed at once, to its Contact
        ("200 OK", GATEWAY),
    ]
    assert [leg.state for leg in net.switch.legs] == [LegState.UP, LegState.UP]
    (call,) = net.service.list_calls(OP)
    assert call.state == "connected"


def test_a_hold_re_invite_from_the_phone_is_relayed_sendonly_and_its_recvonly_answer_comes_back() -> None:
    net = _net("1001")
    _, phone_dialog = net.connected("1001")
    phone = net.peers[PHONE]
    mark = net.mark()
    phone.send_in_dialog(phone_dialog, "INVITE", net.loop.t, body=sdp("phone", PHONE[0], 42000, "sendonly", 2),
                         content_type="application/sdp")
    net.flush()
    (offer,) = net.answer_reinvites(GATEWAY)
    assert direction(offer) == "sendonly"
    relayed = net.sent(mark, src=SWITCH, dst=GATEWAY)[0]
    assert relayed.line == "INVITE sip:peer@192.0.2.10:5060" and direction(relayed.message) == "sendonly"
    # version 2 of the session the customer knows the phone by (its o= as the 200 gave it, RFC 3264 §8)
    assert relayed.message.body == sdp("phone1001", PHONE[0], 42000, "sendonly", 2)
    answer = next(s.message for s in net.sent(mark, src=SWITCH, dst=PHONE) if s.line == "200 OK")
    assert direction(answer) == "recvonly"
    # the customer's answer as a new version of the session the phone knows (RFC 3264 §8)
    assert b"o=cust 1 2 IN IP4 192.0.2.10\r\n" in answer.body and b"m=audio 41000 " in answer.body
    assert [leg.state for leg in net.switch.legs] == [LegState.UP, LegState.UP]


def test_the_customers_bye_reaches_the_phone() -> None:
    net = _net("1001")
    gateway_dialog, _ = net.connected("1001")
    mark = net.mark()
    net.gateway.bye(gateway_dialog, net.loop.t)
    net.flush()
    out = [(s.line, s.dst) for s in net.sent(mark, src=SWITCH)]
    assert out[0] == ("200 OK", GATEWAY)
    assert [x for x in out if x[0].startswith("BYE")] == [("BYE sip:peer@192.0.2.21:5062", PHONE)]
    assert len(net.switch.legs) == 0
    assert net.records.dialogs == {}


def test_the_phones_bye_reaches_the_customer() -> None:
    net = _net("1001")
    _, phone_dialog = net.connected("1001")
    mark = net.mark()
    net.peers[PHONE].bye(phone_dialog, net.loop.t)
    net.flush()
    byes = [(s.line, s.dst) for s in net.sent(mark, src=SWITCH) if s.line.startswith("BYE")]
    assert byes == [("BYE sip:peer@192.0.2.10:5060", GATEWAY)]
    assert ("200 OK", PHONE) in [(s.line, s.dst) for s in net.sent(mark, src=SWITCH)]
    assert len(net.switch.legs) == 0


def test_the_customers_cancel_cancels_the_ringing_phone() -> None:
    net = _net("1001")
    tx = net.call_in()
    (invite,) = net.requests(PHONE, "INVITE")
    net.answer(PHONE, invite, 180)
    mark = net.mark()
    net.gateway.cancel(tx, net.loop.t)
    net.flush()
    to_gateway = [s.line for s in net.sent(mark, src=SWITCH, dst=GATEWAY)]
    assert to_gateway == ["200 OK", "487 Request Terminated"]  # the CANCEL's 200, then the INVITE's 487
    assert [s.line for s in net.sent(mark, src=SWITCH, dst=PHONE)][:1] == ["CANCEL sip:1001@192.0.2.21:5062"]
    assert len(net.switch.legs) == 0
    assert net.service.list_calls(OP) == []


def test_a_phone_that_declines_is_not_the_end_of_the_customers_call() -> None:
    net = _net("1001", "1002")
    net.call_in()
    (invite,) = net.requests(PHONE, "INVITE")
    mark = net.mark()
    net.answer(PHONE, invite, 603)
    # the queue offers the call to the next agent; the customer hears nothing of the refusal
    assert [s.line for s in net.sent(mark, src=SWITCH, dst=GATEWAY)] == []
    assert [s.line for s in net.sent(mark, src=SWITCH, dst=PHONES["1002"])] == ["INVITE sip:1002@192.0.2.22:5062"]
