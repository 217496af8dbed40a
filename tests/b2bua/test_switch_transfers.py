"""Transfers made on the agent's phone, through the switch in memory (`switch_harness.Net`): a blind REFER that
completes, and its failures (the target busy, the target not answering): the customer is brought back to the agent
(a re-INVITE back to sendrecv), never hung up; the phone hears the outcome in its NOTIFYs (RFC 3515 §2.4.4)."""

from __future__ import annotations

from typing import Any

from switch_harness import DOMAIN, GATEWAY, OP, PHONES, SWITCH, Net, direction, sdp

from callbridge.b2bua.legs import LegState

AGENT, TARGET = PHONES["1001"], PHONES["1002"]


def _refer(target: str = "1002", **op_settings: Any) -> tuple[Net, Any]:
    """1001 talks with a customer and its phone REFERs the call to `target`; the customer's hold is answered."""
    net = Net(**op_settings)
    net.phone("1001")
    net.phone("1002")
    net.ready("1001", "1002")
    _, agent_dialog = net.connected("1001")
    net.peers[AGENT].send_in_dialog(agent_dialog, "REFER", net.loop.t,
                                    headers=(("Refer-To", f"<sip:{target}@{DOMAIN}>"),))
    net.flush()
    (hold,) = net.answer_reinvites(GATEWAY)
    assert direction(hold) == "sendonly"  # the customer is held while the target rings
    return net, agent_dialog


def test_a_blind_refer_rings_the_target_and_hands_it_the_customer() -> None:
    net, _ = _refer()
    assert ("202 Accepted", AGENT) in [(s.line, s.dst) for s in net.sent(src=SWITCH)]
    (invite,) = net.requests(TARGET, "INVITE")
    assert invite.request.body == b""  # offer-less (RFC 3725 flow I): the target's 2xx brings the offer
    net.answer(TARGET, invite, 180)
    assert net.sipfrags(AGENT) == [("SIP/2.0 100 Trying", "active;expires=60"),
                                   ("SIP/2.0 180 Ringing", "active;expires=60")]
    mark = net.mark()
    net.answer(TARGET, invite, 200, sdp("phone1002", TARGET[0], 44000))
    (moved,) = net.answer_reinvites(GATEWAY)
    assert direction(moved) == "sendrecv" and b"m=audio 44000 " in moved.body  # the target's media, not held
    assert net.sipfrags(AGENT) == [("SIP/2.0 200 OK", "terminated;reason=noresource")]
    to_agent = [s.line for s in net.sent(mark, src=SWITCH, dst=AGENT)]
    assert "BYE sip:peer@192.0.2.21:5062" in to_agent  # the agent's leg is released once the target answered
    assert not [s for s in net.sent(mark, src=SWITCH, dst=GATEWAY) if s.line.startswith("BYE")]
    ack = next(s.message for s in net.sent(mark, src=SWITCH, dst=TARGET) if s.line.startswith("ACK"))
    assert direction(ack) == "sendrecv" and b"m=audio 41000 " in ack.body  # the customer's answer, in the ACK
    assert [leg.state for leg in net.switch.legs] == [LegState.UP, LegState.UP]
    (call,) = net.service.list_calls(OP)
    assert call.state == "connected"


def test_a_busy_target_brings_the_customer_back_to_the_agent() -> None:
    net, _ = _refer()
    (invite,) = net.requests(TARGET, "INVITE")
    mark = net.mark()
    net.answer(TARGET, invite, 486)
    (back,) = net.answer_reinvites(GATEWAY)
    assert direction(back) == "sendrecv"  # off hold, back with the agent
    assert net.sipfrags(AGENT)[-1] == ("SIP/2.0 486 Busy Here", "terminated;reason=noresource")
    assert [s.line for s in net.sent(mark, src=SWITCH, dst=TARGET)] == ["ACK sip:1002@192.0.2.22:5062"]
    assert not [s for s in net.sent(mark, src=SWITCH) if s.line.startswith(("BYE", "CANCEL"))]
    assert [leg.state for leg in net.switch.legs] == [LegState.UP, LegState.UP]
    (call,) = net.service.list_calls(OP)
    assert call.state == "connected"


def test_a_target_that_does_not_answer_is_cancelled_at_the_transfer_timeout_and_the_customer_comes_back() -> None:
    net, _ = _refer(transfer_timeout=20.0)
    started = net.loop.t
    (invite,) = net.requests(TARGET, "INVITE")
    net.answer(TARGET, invite, 180)
    mark = net.mark()
    net.advance(19.9)
    assert [s.line for s in net.sent(mark, src=SWITCH, dst=TARGET)] == []  # still ringing
    net.advance(0.2)
    cancel = next(s for s in net.sent(mark, src=SWITCH, dst=TARGET) if s.line.startswith("CANCEL"))
    assert cancel.line == "CANCEL sip:1002@192.0.2.22:5062" and cancel.time == started + 20.0
    (back,) = net.answer_reinvites(GATEWAY)
    assert direction(back) == "sendrecv"
    assert net.sipfrags(AGENT)[-1] == ("SIP/2.0 408 Request Timeout", "terminated;reason=noresource")
    assert not [s for s in net.sent(mark, src=SWITCH) if s.line.startswith("BYE")]
    assert [leg.state for leg in net.switch.legs] == [LegState.UP, LegState.UP]


def test_a_refer_to_a_number_the_dial_plan_refuses_is_refused_from_the_table_and_nothing_moves() -> None:
    net = Net()
    net.phone("1001")
    net.ready("1001")
    _, agent_dialog = net.connected("1001")
    mark = net.mark()
    net.peers[AGENT].send_in_dialog(agent_dialog, "REFER", net.loop.t,
                                    headers=(("Refer-To", f"<sip:7777@{DOMAIN}>"),))
    net.flush()
    refusal = next(s.message for s in net.sent(mark, src=SWITCH, dst=AGENT) if s.line[0].isdigit() and
                   not s.line.startswith("100"))
    assert (refusal.status, refusal.reason) == (403, "Number Not Allowed")  # REFUSALS["NUMBER_NOT_ALLOWED"]
    assert [s.line for s in net.sent(mark, src=SWITCH, dst=GATEWAY)] == []


def test_a_refer_naming_a_foreign_host_is_403_and_nothing_moves() -> None:
    net = Net()
    net.phone("1001")
    net.ready("1001")
    _, agent_dialog = net.connected("1001")
    mark = net.mark()
    net.peers[AGENT].send_in_dialog(agent_dialog, "REFER", net.loop.t,
                                    headers=(("Refer-To", "<sip:1002@evil.example>"),))
    net.flush()
    out = [(s.message.status, s.message.reason) for s in net.sent(mark, src=SWITCH, dst=AGENT)
           if s.line[0].isdigit()]
    assert out == [(403, "Refer-To Host Not Served")]
    assert [s.line for s in net.sent(mark, src=SWITCH) if s.dst != AGENT] == []
    assert net.switch.refers.stats["foreign_refer_to"] == 1
