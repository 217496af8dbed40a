"""The SIP side of a cluster handover (`b2bua.handover`), in memory: a connected call's legs, dialogs and the
operation's registrations are forgotten without a message sent; a request within a forgotten dialog that still
reaches this switch is dropped until the operation's owner is known, then handed on to it unchanged (its Via
untouched, so the owner answers the sender directly); new INVITEs for the operation are refused with 503."""

from __future__ import annotations

from switch_harness import GATEWAY, OP, PHONES, SWITCH, Net

from callbridge.b2bua.handover import HANDED_ON, forget

PHONE = PHONES["1001"]
NEW_OWNER = ("10.0.0.2", 5060)


def _handed_over() -> tuple[Net, object]:
    net = Net()
    net.phone("1001")
    net.ready("1001")
    gateway_dialog, _ = net.connected("1001")
    net.switch.handed.operations.add(OP)
    _, legs = net.service.handover.forget(OP)
    mark = net.mark()
    assert forget(net.switch, OP, legs) == 2
    net.flush()
    assert net.sent(mark) == []  # nothing sent to anyone
    assert len(net.switch.legs) == 0 and net.switch.registrar.location.agent_count == 0
    return net, gateway_dialog


def test_a_bye_in_a_forgotten_dialog_waits_for_the_owner_then_goes_on_to_it_unchanged() -> None:
    net, gateway_dialog = _handed_over()
    net.peer(NEW_OWNER)  # a plain endpoint: it answers 481, as the owner does for a dialog it has not adopted
    mark = net.mark()
    net.gateway.bye(gateway_dialog, net.loop.t)  # type: ignore[arg-type]
    net.flush()
    sent = net.sent(mark)
    assert [(s.line.split()[0], s.src, s.dst) for s in sent] == [("BYE", GATEWAY, SWITCH)]  # dropped: no 481
    known: dict[str, tuple[str, int]] = {}
    net.switch.handed.owner_of = known.get
    known[OP] = NEW_OWNER
    mark = net.mark()
    net.advance(0.6)  # the gateway retransmits its BYE (RFC 3261 §17.1.2.2)
    moved = [(s.line.split()[0], s.src, s.dst) for s in net.sent(mark)]
    assert moved == [("BYE", GATEWAY, SWITCH), ("BYE", SWITCH, NEW_OWNER),
                     ("481", NEW_OWNER, SWITCH), ("481", SWITCH, GATEWAY)], moved
    bye, handed_on, answer, back = (s.message for s in net.sent(mark))
    # as a stateless proxy sends it (RFC 3261 §16.11): the same request under this switch's own Via
    assert [f for f in handed_on.headers.fields() if f[0] != "via"] == [
        f for f in bye.headers.fields() if f[0] != "via"]
    assert [v.sent_by for v in handed_on.vias] == [SWITCH, GATEWAY]
    assert handed_on.vias[0].branch.startswith(HANDED_ON)
    # the owner's answer comes back here and goes on to the gateway without this switch's Via
    assert [v.sent_by for v in answer.vias] == [SWITCH, GATEWAY]
    assert [v.sent_by for v in back.vias] == [GATEWAY] and back.vias[0].branch == bye.vias[0].branch
    assert not any(s.dst == PHONE for s in net.sent(mark))


def test_a_new_call_for_an_operation_handed_over_is_refused_with_503_and_retry_after() -> None:
    net, _ = _handed_over()
    mark = net.mark()
    net.call_in()
    answers = [s.message for s in net.sent(mark, src=SWITCH, dst=GATEWAY)]
    assert [(a.status, a.reason) for a in answers] == [  # type: ignore[union-attr]
        (100, "Trying"), (503, "Operation Moving")]
    assert answers[1].headers.get("Retry-After") == "2"
    assert len(net.switch.legs) == 0


def test_a_calls_dialogs_are_written_with_their_sdps_and_a_hold_writes_the_new_one() -> None:
    """What a node adopting the call starts from (docs/cluster.md, "Media in the cluster"): each dialog's record
    holds the SDP its party was last sent and last sent us; a direct call names no relay. (A single node writes no
    SDP: nobody would read it.)"""
    single = Net()
    single.phone("1001")
    single.ready("1001")
    single.connected("1001")
    assert [(r.sent_sdp, r.remote_sdp) for r in single.records.dialogs.values()] == [(b"", b"")] * 2
    net = Net()
    net.switch.dialogs.sdps = True  # a cluster node's (bootstrap)
    net.phone("1001")
    net.ready("1001")
    net.connected("1001")
    legs = list(net.switch.legs)
    assert len(legs) == 2 and set(net.records.dialogs) == {leg.leg_id for leg in legs}
    for leg in legs:
        record = net.records.dialogs[leg.leg_id]
        assert record.sent_sdp == leg.sent_sdp and record.remote_sdp == leg.remote_sdp, leg.leg_id
        assert b"m=audio" in record.sent_sdp and b"m=audio" in record.remote_sdp
        assert record.media_relay is None
    customer = next(leg for leg in legs if leg.agent is None)
    net.service.hold(OP, "1001")
    net.flush()
    held = net.records.dialogs[customer.leg_id]
    assert b"a=sendonly" in held.sent_sdp and held.sent_sdp == customer.sent_sdp
    assert held.remote_sdp == customer.remote_sdp  # the gateway's answer to the hold
