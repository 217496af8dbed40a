"""The media anchor in memory (the Media port faked): which calls are anchored, SDP through the media plane in
callbridge's terms, parties leaving, and a relay failing mid-call."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media_fake import RELAY, FakeMedia

from callbridge.b2bua.anchor import MediaAnchor
from callbridge.b2bua.legs import SipLeg
from callbridge.callcontrol.model import Operation

CUSTOMER_SDP = (b"v=0\r\no=c 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
                b"m=audio 40000 RTP/AVP 0\r\na=sendrecv\r\n")
AGENT_SDP = CUSTOMER_SDP.replace(b"127.0.0.2", b"127.0.0.1").replace(b"40000", b"41000")
TARGET_SDP = CUSTOMER_SDP.replace(b"127.0.0.2", b"127.0.0.1").replace(b"40000", b"42000")


def leg(leg_id: str, conn_id: str = "c1") -> SipLeg:
    return SipLeg(leg_id, "0042", "in", 0.0, conn_id=conn_id)


def op(**changes: str) -> Operation:
    return Operation("0042", "a.test", **changes)  # type: ignore[arg-type]


async def through(step, *args) -> bytes:
    got: list[bytes] = []
    step(*args, got.append)
    for _ in range(20):
        if got:
            break
        await asyncio.sleep(0)
    assert len(got) == 1
    return got[0]


def media_line(sdp: bytes) -> tuple[str, int]:
    text = sdp.decode()
    address = text.split("c=IN IP4 ")[1].split("\r\n")[0]
    return address, int(text.split("m=audio ")[1].split(" ")[0])


@pytest.mark.parametrize(("media", "operation", "admission"), [
    (None, op(), "direct"),                                         # no media plane configured
    (FakeMedia(), op(media_mode="direct"), "direct"),              # the operation wants direct media
    (FakeMedia(), op(), "anchored"),
    (FakeMedia(up=False), op(), "direct_relay_down"),              # default policy: go on direct
    (FakeMedia(up=False), op(media_relay_down="refuse"), "refuse"),
])
def test_admission_follows_the_operation(media: FakeMedia | None, operation: Operation, admission: str) -> None:
    loop = asyncio.new_event_loop()  # a media plane comes with its loop; admission itself runs nothing on it
    try:
        anchor = MediaAnchor(media, loop if media else None)
        assert anchor.admit(operation) == admission
    finally:
        loop.close()
    outcome = {"direct": "direct", "anchored": None, "direct_relay_down": "direct_relay_down",
               "refuse": "refused_relay_down"}[admission]
    assert {k for k, v in anchor.stats.items() if v} == ({outcome} if outcome else set())


def test_a_direct_call_moves_its_sdp_at_once_and_unchanged() -> None:
    anchor = MediaAnchor(None)
    got: list[bytes] = []
    anchor.offer("c1", leg("cust"), None, CUSTOMER_SDP, got.append)
    anchor.answer("c1", leg("cust"), leg("agent"), AGENT_SDP, got.append)
    assert got == [CUSTOMER_SDP, AGENT_SDP]


async def test_an_anchored_call_goes_through_the_media_plane_and_the_customer_side_stays() -> None:
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop())
    customer, agent, target = leg("cust"), leg("agent"), leg("target")
    anchor.adopt("c1", customer)
    to_agent = await through(anchor.offer, "c1", customer, None, CUSTOMER_SDP)
    to_customer = await through(anchor.answer, "c1", customer, agent, AGENT_SDP)
    assert media_line(to_agent)[0] == RELAY and media_line(to_customer)[0] == RELAY
    # a transfer target offers toward the customer, the customer answers
    to_customer_again = await through(anchor.offer, "c1", target, customer, TARGET_SDP)
    to_target = await through(anchor.answer, "c1", target, customer, CUSTOMER_SDP)
    assert media_line(to_customer_again) == media_line(to_customer)
    assert media_line(to_target)[0] == RELAY and media_line(to_target) != media_line(to_customer)
    anchor.leg_ended(agent)
    anchor.leg_ended(customer)
    await anchor.settle()
    assert media.ops == [("offer", "c1", "cust", None), ("answer", "c1", "cust", "agent"),
                         ("offer", "c1", "target", "cust"), ("answer", "c1", "target", "cust"),
                         ("drop_leg", "c1", "agent"), ("delete", "c1")]
    assert anchor.calls == {} and anchor.stats["anchored"] == 1


async def test_a_peer_released_before_the_customer_is_re_targeted_leaves_after_it() -> None:
    # attended transfer: the agent consults the target, then is released before the customer joins the target
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop())
    customer, agent, target = leg("cust"), leg("agent"), leg("target")
    anchor.adopt("c1", customer)
    await through(anchor.offer, "c1", customer, None, CUSTOMER_SDP)
    await through(anchor.answer, "c1", customer, agent, AGENT_SDP)
    await through(anchor.offer, "c1", target, agent, TARGET_SDP)
    await through(anchor.answer, "c1", target, agent, AGENT_SDP)
    assert anchor.peers == {"c1": "agent"}  # the consultation does not move the customer
    anchor.leg_ended(agent)
    await anchor.settle()
    assert ("drop_leg", "c1", "agent") not in media.ops and anchor.leaving == {"c1": ["agent"]}
    await through(anchor.offer, "c1", target, customer, TARGET_SDP)
    await through(anchor.answer, "c1", target, customer, CUSTOMER_SDP)
    await anchor.settle()
    assert media.ops[-3:] == [("offer", "c1", "target", "cust"), ("answer", "c1", "target", "cust"),
                              ("drop_leg", "c1", "agent")]
    assert anchor.peers == {"c1": "target"} and anchor.leaving == {}


async def test_a_relay_failing_mid_call_degrades_that_exchange_to_direct_and_is_counted() -> None:
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop())
    customer, agent = leg("cust"), leg("agent")
    anchor.adopt("c1", customer)
    await through(anchor.offer, "c1", customer, None, CUSTOMER_SDP)
    media.failing.add("answer")
    assert await through(anchor.answer, "c1", customer, agent, AGENT_SDP) == AGENT_SDP
    assert anchor.stats["media_failures"] == 1


async def test_legs_of_calls_not_anchored_are_not_the_media_planes_business() -> None:
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop())
    anchor.leg_ended(leg("x", conn_id="other"))
    anchor.leg_ended(SipLeg("y", "0042", "in", 0.0))  # no call yet (refused at once)
    await anchor.settle()
    assert media.ops == []


def test_a_media_plane_needs_its_loop() -> None:
    with pytest.raises(ValueError, match=r"^a media plane needs the event loop its steps run on$"):
        MediaAnchor(FakeMedia())


async def test_a_call_another_node_anchored_is_restored_on_its_relay_and_deleted_at_its_end() -> None:
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop())
    customer, agent = leg("cust"), leg("agent")
    assert anchor.restore("c1", "0042", "cust", "agent", f"{RELAY}:2223") is True
    assert anchor.anchored("c1") and anchor.peers == {"c1": "agent"} and anchor.relay_of("c1") == f"{RELAY}:2223"
    assert "c1" in anchor.hearing.calls and anchor.stats["anchored"] == 1
    anchor.hearing.hold("c1")  # hold music on the relay, as for a call anchored here
    await anchor.settle()
    assert [o[:4] if o[0] == "block" else o[:3] for o in media.ops] == [
        ("restore", "c1", f"{RELAY}:2223"), ("block", "c1", "agent", "cust"), ("play_wav", "c1", "cust")]
    anchor.leg_ended(agent)
    anchor.leg_ended(customer)
    await anchor.settle()
    assert media.ops[-1] == ("delete", "c1") and anchor.calls == {}


async def test_a_relay_this_node_does_not_have_leaves_the_adopted_call_direct() -> None:
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop())
    assert anchor.restore("c1", "0042", "cust", "agent", "10.9.9.9:2223") is False
    assert not anchor.anchored("c1") and anchor.relay_of("c1") is None and anchor.stats["anchored"] == 0


async def test_a_call_handed_over_is_forgotten_without_a_command_and_a_left_call_ended_is_deleted() -> None:
    media = FakeMedia()
    anchor = MediaAnchor(media, asyncio.get_running_loop())
    customer, agent = leg("cust"), leg("agent")
    anchor.adopt("c1", customer)
    await through(anchor.offer, "c1", customer, None, CUSTOMER_SDP)
    await through(anchor.answer, "c1", customer, agent, AGENT_SDP)
    assert anchor.relay_of("c1") == f"{RELAY}:2223"
    anchor.forget("c1")
    anchor.leg_ended(customer)  # (its legs are forgotten too: nothing of the call is this node's any more)
    await anchor.settle()
    assert media.ops[-1] == ("forget", "c1") and anchor.calls == {} and "c1" not in anchor.hearing.calls
    anchor.delete_left("c2", f"{RELAY}:2223")  # a left call the new owner ended: its relay call goes
    await anchor.settle()
    assert media.ops[-2:] == [("restore", "c2", f"{RELAY}:2223"), ("delete", "c2")]
