"""A relay that went down, in memory (b2bua/relay_loss.py): which calls are re-anchored on another relay and how
(an ng offer from the customer toward its peer, the peer's answer, a re-INVITE of each party with a new version of
its session), and which are ended (the domain's `on_relay_lost`), with an in-memory media port and re-INVITEs that
the test answers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from media_fake import RELAY, FakeMedia
from switch_harness import sdp

from callbridge.b2bua.anchor import MediaAnchor
from callbridge.b2bua.leg_state import UP
from callbridge.b2bua.legs import LegTable, ReinviteDone, SipLeg
from callbridge.b2bua.relay_loss import RelayLoss
from callbridge.sip.sdp import SessionDescription


@dataclass
class Domain:
    lost: list[str] = field(default_factory=list)

    def on_relay_lost(self, conn_id: str) -> None:
        self.lost.append(conn_id)


class Switch:
    def __init__(self, media: FakeMedia) -> None:
        self.anchor = MediaAnchor(media, asyncio.get_running_loop())  # type: ignore[arg-type]
        self.legs = LegTable()
        self.service: Any = Domain()
        self.reinvites: list[tuple[str, bytes, ReinviteDone]] = []

    def report(self, fn: Any, *args: Any) -> None:
        fn(*args)

    def reinvite(self, leg: SipLeg, body: bytes, done: ReinviteDone, *, defer_ack: bool = False) -> bool:
        self.reinvites.append((leg.leg_id, body, done))
        return True


def leg(leg_id: str, peer: str, owner: str, port: int) -> SipLeg:
    out = SipLeg(leg_id, "0042", "in", 0.0, conn_id="c1", state=UP, peer=peer,
                 remote_sdp=sdp(owner, "192.0.2.1", port), sent_sdp=sdp("far", RELAY, 30000 + port % 2))
    out.sent_origin = SessionDescription.parse(out.sent_sdp).origin
    out.relayed_origin = out.sent_origin
    out.dialog = SimpleNamespace(terminated=False)  # type: ignore[assignment]
    return out


async def talking() -> tuple[FakeMedia, Switch, RelayLoss]:
    media = FakeMedia()
    sw = Switch(media)
    customer, agent = sw.legs.add(leg("lc", "la", "cust", 4000)), sw.legs.add(leg("la", "lc", "agent", 5000))
    sw.anchor.adopt("c1", customer)
    sw.anchor.peers["c1"] = agent.leg_id
    media.calls.add("c1")
    return media, sw, RelayLoss(sw)


def answer_all(sw: Switch, status: int = 200) -> None:
    for _, _, done in sw.reinvites:
        done(SimpleNamespace(status=status))  # type: ignore[arg-type]


async def settle(sw: Switch) -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_two_parties_talking_are_re_anchored_each_with_a_new_version_of_its_session() -> None:
    media, sw, loss = await talking()
    loss.lost(["c1"])
    await settle(sw)
    assert media.ops == [("lost", "c1"), ("offer", "c1", "lc", "la"), ("answer", "c1", "lc", "la")]
    assert sorted(leg_id for leg_id, _, _ in sw.reinvites) == ["la", "lc"]
    for leg_id, body, _ in sw.reinvites:
        sd = SessionDescription.parse(body)
        assert (sd.origin.username, sd.origin.sess_version) == ("far", 2)  # the session it knew, version + 1
        assert sd.connection is not None and sd.connection.address == RELAY
        party = sw.legs.get(leg_id)
        assert party is not None and party.sent_sdp == body
    answer_all(sw)
    await settle(sw)
    assert sw.anchor.stats["reanchored"] == 1 and sw.anchor.stats["relay_lost"] == 0
    assert sw.service.lost == []


async def test_a_party_refusing_the_new_relays_sdp_ends_the_call() -> None:
    _, sw, loss = await talking()
    loss.lost(["c1"])
    await settle(sw)
    answer_all(sw, 488)
    await settle(sw)
    assert sw.service.lost == ["c1"]
    assert (sw.anchor.stats["reanchored"], sw.anchor.stats["relay_lost"]) == (0, 1)


async def test_with_no_other_relay_up_the_call_is_ended() -> None:
    media, sw, loss = await talking()
    media.up = False
    loss.lost(["c1"])
    await settle(sw)
    assert sw.service.lost == ["c1"] and sw.reinvites == []
    assert media.ops == [("lost", "c1")]


@pytest.mark.parametrize("state", ["music", "no peer", "peer ringing", "re-INVITE in progress", "listened to",
                                   "listened to in a page"])
async def test_a_call_that_is_not_two_parties_talking_is_ended(state: str) -> None:
    media, sw, loss = await talking()
    if state == "music":
        sw.anchor.hearing.calls["c1"].wanted = "music"
    elif state == "no peer":
        del sw.anchor.peers["c1"]
    elif state == "peer ringing":
        agent = sw.legs.get("la")
        assert agent is not None
        agent.dialog = None
    elif state == "listened to":
        supervisor = sw.legs.add(leg("ls", "", "sup", 6000))
        supervisor.listener = True
    elif state == "listened to in a page":
        sw.anchor.listeners.subscribe_page("c1", "mp", lambda: None, lambda: None)
        await settle(sw)
        media.ops.clear()
    else:
        customer = sw.legs.get("lc")
        assert customer is not None
        customer.reinvite_done = lambda _: None
    loss.lost(["c1"])
    await settle(sw)
    assert sw.service.lost == ["c1"] and sw.reinvites == []
    assert media.ops == [("lost", "c1")]


async def test_a_call_no_longer_anchored_here_is_left_alone() -> None:
    media, sw, loss = await talking()
    loss.lost(["c9"])
    await settle(sw)
    assert media.ops == [] and sw.service.lost == []


async def test_a_call_revived_is_deleted_on_its_relay_then_offered_afresh_and_each_party_re_invited() -> None:
    media, sw, loss = await talking()
    before = {leg_id: sw.legs.get(leg_id).sent_sdp for leg_id in ("lc", "la")}  # type: ignore[union-attr]
    loss.revive("c1")
    await settle(sw)
    assert media.ops == [("delete", "c1"), ("offer", "c1", "lc", "la"), ("answer", "c1", "lc", "la")]
    assert sorted(leg_id for leg_id, _, _ in sw.reinvites) == ["la", "lc"]
    for leg_id, body, _ in sw.reinvites:
        new, old = SessionDescription.parse(body), SessionDescription.parse(before[leg_id])
        assert new.origin.sess_version == old.origin.sess_version + 1
    answer_all(sw)
    await settle(sw)
    assert (sw.anchor.stats["revived"], sw.anchor.stats["reanchored"], sw.anchor.stats["relay_lost"]) == (1, 0, 0)
    assert sw.service.lost == []


async def test_a_call_that_is_not_two_parties_talking_is_not_revived_and_not_ended() -> None:
    media, sw, loss = await talking()
    sw.anchor.hearing.calls["c1"].wanted = "music"
    assert loss.revive("c1") is False
    await settle(sw)
    assert media.ops == [] and sw.reinvites == [] and sw.service.lost == []  # the media time-out decides
    sw.anchor.hearing.calls["c1"].wanted = "peer"
    media.up = False
    assert loss.revive("c1") is False  # no relay up: the watch asks again later
    media.up = True
    assert loss.revive("c1") is True


async def test_a_revived_call_a_party_refuses_is_ended() -> None:
    _, sw, loss = await talking()
    loss.revive("c1")
    await settle(sw)
    answer_all(sw, 488)
    await settle(sw)
    assert sw.service.lost == ["c1"]
    assert (sw.anchor.stats["revived"], sw.anchor.stats["relay_lost"]) == (0, 1)
