"""Dead media and the customer's DTMF, in memory (b2bua/media_watch.py): the relay's RTP counters judged on a
clock the test moves, with an in-memory media port; what a party is to send, read from the SDPs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from media_fake import FakeMedia
from switch_harness import sdp

from callbridge.b2bua.anchor import MediaAnchor
from callbridge.b2bua.leg_state import UP
from callbridge.b2bua.legs import LegTable, SipLeg
from callbridge.b2bua.media_watch import MediaWatch, poll_interval, sends
from callbridge.media.rtpengine import rtp_packets


@dataclass
class Domain:
    reports: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def on_dtmf(self, *args: Any) -> None:
        self.reports.append(("on_dtmf", args))

    def on_media_timeout(self, *args: Any) -> None:
        self.reports.append(("on_media_timeout", args))


class Switch:
    def __init__(self, media: FakeMedia) -> None:
        self.anchor = MediaAnchor(media, asyncio.get_running_loop())  # type: ignore[arg-type]
        self.legs = LegTable()
        self.service: Any = Domain()

    def report(self, fn: Any, *args: Any) -> None:
        fn(*args)  # at once: the test reads the reports right after


def up_leg(leg_id: str, theirs: str = "sendrecv", ours: str = "sendrecv") -> SipLeg:
    leg = SipLeg(leg_id, "0042", "in", 0.0, conn_id="c1", state=UP, remote_sdp=sdp("p", "192.0.2.1", 4000, theirs),
                 sent_sdp=sdp("r", "127.0.0.99", 30000, ours))
    leg.dialog = SimpleNamespace(terminated=False)  # type: ignore[assignment]
    return leg


def test_who_is_to_send() -> None:
    assert sends(up_leg("l1"))
    assert sends(up_leg("l1", theirs="sendonly"))
    assert not sends(up_leg("l1", theirs="recvonly"))  # the customer's answer to our hold
    assert not sends(up_leg("l1", theirs="inactive"))
    assert not sends(up_leg("l1", ours="sendonly"))  # we told it we only send (hold, mute)
    assert not sends(up_leg("l1", ours="inactive"))
    ringing = up_leg("l1")
    ringing.dialog = None
    assert not sends(ringing)


def test_the_poll_interval_is_a_quarter_of_the_timeout_within_bounds() -> None:
    assert [poll_interval(t) for t in (0.4, 2.0, 8.0, 60.0)] == [0.2, 0.5, 2.0, 5.0]


def test_rtp_packets_from_a_query_reply_as_10_5_gives_it() -> None:
    def stream(flag: bytes, packets: int) -> dict[str, Any]:
        return {"local port": 30000, "flags": [flag, b"filled"], "stats": {"packets": packets, "bytes": 0}}

    reply = {"result": b"ok", "tags": {
        b"lcust": {"tag": b"lcust", "medias": [{"index": 1, "streams": [stream(b"RTP", 175), stream(b"RTCP", 3)]}]},
        b"lagent": {"tag": b"lagent", "medias": [{"index": 1, "streams": [stream(b"RTP", 281)]}]},
        b"lgone": {"tag": b"lgone", "medias": []},
    }}
    assert rtp_packets(reply) == {"lcust": 175, "lagent": 281, "lgone": 0}
    assert rtp_packets({"result": b"ok"}) == {}


async def watched(timeout: float = 2.0) -> tuple[FakeMedia, Switch, MediaWatch, list[float]]:
    media = FakeMedia()
    media.calls.add("c1")
    sw = Switch(media)
    customer, agent = sw.legs.add(up_leg("lcust")), sw.legs.add(up_leg("lagent"))
    sw.anchor.adopt("c1", customer)
    sw.anchor.peers["c1"] = agent.leg_id
    now = [100.0]
    return media, sw, MediaWatch(sw, timeout=timeout, clock=lambda: now[0]), now


async def test_a_party_whose_count_stops_ends_the_call_once_after_the_timeout() -> None:
    media, sw, watch, now = await watched()
    for t, cust, agent in ((100.0, 10, 10), (101.0, 60, 60), (102.0, 60, 110), (102.9, 60, 205)):
        now[0] = t
        media.counters["c1"] = {"lcust": cust, "lagent": agent}
        await watch.poll()
        assert sw.service.reports == []  # the customer silent since 101.0: 1.9 s at most
    now[0] = 103.0  # 2 s since the customer's count last moved: the time-out
    await watch.poll()
    assert sw.service.reports == [("on_media_timeout", ("c1", "lcust"))]
    now[0] = 105.0
    await watch.poll()
    assert sw.service.reports == [("on_media_timeout", ("c1", "lcust"))]  # once
    assert watch.stats["media_timeouts"] == 1


async def test_a_party_told_not_to_send_is_not_judged() -> None:
    media, sw, watch, now = await watched()
    sw.legs.get("lcust").remote_sdp = sdp("p", "192.0.2.1", 4000, "recvonly")  # type: ignore[union-attr]
    media.counters["c1"] = {"lcust": 50, "lagent": 0}
    for t in (100.0, 103.0):
        now[0] = t
        media.counters["c1"]["lagent"] += 50
        await watch.poll()
    assert sw.service.reports == []


async def test_a_relay_that_does_not_answer_restarts_the_clocks_and_one_that_lost_the_call_is_silence() -> None:
    media, sw, watch, now = await watched()
    media.counters["c1"] = {"lcust": 50, "lagent": 50}
    await watch.poll()
    media.failing.add("packets")
    now[0] = 103.0
    await watch.poll()  # no report from the relay: no judgement, and the silence counts from now
    media.failing.clear()
    now[0] = 104.0
    await watch.poll()
    assert sw.service.reports == []
    media.refusing.add("packets")  # the relay no longer knows the call: nothing flows through it
    now[0] = 105.5
    await watch.poll()
    assert sw.service.reports == [("on_media_timeout", ("c1", "lagent"))]


async def test_a_call_whose_media_went_direct_is_not_watched() -> None:
    media, sw, watch, now = await watched()
    media.counters["c1"] = {"lcust": 50, "lagent": 50}
    await watch.poll()
    sw.anchor.went_direct.add("c1")  # a re-INVITE the relay failed: the parties may talk past it
    now[0] = 110.0
    await watch.poll()
    assert sw.service.reports == []
    assert media.ops == [("packets", "c1")]  # the relay is not even asked


async def test_only_the_customers_digits_are_reported() -> None:
    _, sw, watch, _ = await watched()
    watch.dtmf("c1", "lcust", "#", 100)
    watch.dtmf("c1", "lagent", "5", 160)  # api=dtmf's digit, logged under the agent's tag
    watch.dtmf("c9", "lcust", "1", 100)  # not a call of ours
    assert sw.service.reports == [("on_dtmf", ("c1", "lcust", "#", 100))]
    assert (watch.stats["dtmf"], watch.stats["dtmf_ignored"]) == (1, 2)


async def revived_watch(timeout: float = 6.0, revive_after: float = 2.0
                        ) -> tuple[FakeMedia, Switch, MediaWatch, list[float], list[str]]:
    media, sw, _, now = await watched(timeout)
    revived: list[str] = []

    def revive(conn_id: str) -> bool:
        revived.append(conn_id)
        return True

    watch = MediaWatch(sw, timeout=timeout, clock=lambda: now[0], revive_after=revive_after, revive=revive)
    return media, sw, watch, now, revived


async def poll_at(media: FakeMedia, watch: MediaWatch, now: list[float], t: float, cust: int, agent: int) -> None:
    now[0] = t
    media.counters["c1"] = {"lcust": cust, "lagent": agent}
    await watch.poll()


async def test_a_silent_call_is_revived_once_before_the_timeout_then_ended_if_still_silent() -> None:
    media, sw, watch, now, revived = await revived_watch()
    await poll_at(media, watch, now, 100.0, 50, 50)
    await poll_at(media, watch, now, 101.9, 50, 50)
    assert revived == []
    await poll_at(media, watch, now, 102.0, 50, 50)  # both silent for 2 s: anchored afresh
    assert revived == ["c1"] and sw.service.reports == []
    await poll_at(media, watch, now, 104.0, 50, 50)  # still the same silence: not again
    # the new session counts from 0: that is not media moving forward, and its clock restarts
    await poll_at(media, watch, now, 105.0, 0, 0)
    await poll_at(media, watch, now, 108.0, 0, 0)
    assert revived == ["c1"] and sw.service.reports == []
    await poll_at(media, watch, now, 111.0, 0, 0)  # 6 s since the counts last changed: the time-out
    assert sw.service.reports == [("on_media_timeout", ("c1", "lagent"))]  # the first silent party, by leg id
    assert (watch.stats["revivals"], watch.stats["media_timeouts"]) == (1, 1)


async def test_a_revived_call_whose_media_moves_again_can_be_revived_at_a_later_silence() -> None:
    media, sw, watch, now, revived = await revived_watch()
    await poll_at(media, watch, now, 100.0, 50, 50)
    await poll_at(media, watch, now, 102.0, 50, 50)
    assert revived == ["c1"]
    await poll_at(media, watch, now, 103.0, 0, 0)  # the new session
    await poll_at(media, watch, now, 104.0, 40, 40)  # its media moves forward: the silence is over
    await poll_at(media, watch, now, 106.0, 40, 40)
    assert revived == ["c1", "c1"] and sw.service.reports == []


async def test_no_revival_when_it_would_not_come_before_the_timeout_or_nobody_does_it() -> None:
    _, sw, _, now = await watched(timeout=2.0)
    assert MediaWatch(sw, timeout=2.0, clock=lambda: now[0], revive_after=2.0, revive=bool).revive_after == 0.0
    assert MediaWatch(sw, timeout=2.0, clock=lambda: now[0], revive_after=1.0).revive_after == 0.0
    assert MediaWatch(sw, timeout=2.0, clock=lambda: now[0], revive_after=1.0, revive=bool).revive_after == 1.0


async def test_a_revival_that_cannot_be_done_now_is_asked_again_at_the_next_poll() -> None:
    media, sw, _, now = await watched(6.0)
    answers, asked = [False, True], []

    def revive(conn_id: str) -> bool:
        asked.append(conn_id)
        return answers.pop(0)

    watch = MediaWatch(sw, timeout=6.0, clock=lambda: now[0], revive_after=2.0, revive=revive)
    await poll_at(media, watch, now, 100.0, 50, 50)
    await poll_at(media, watch, now, 102.0, 50, 50)  # no relay up: not done, not counted
    assert (asked, watch.stats["revivals"]) == (["c1"], 0)
    await poll_at(media, watch, now, 103.0, 50, 50)
    await poll_at(media, watch, now, 104.0, 50, 50)
    assert (asked, watch.stats["revivals"]) == (["c1", "c1"], 1)


async def test_one_party_silent_alone_or_parties_that_never_sent_are_not_revived() -> None:
    media, sw, watch, now, revived = await revived_watch()
    await poll_at(media, watch, now, 100.0, 50, 50)
    await poll_at(media, watch, now, 103.0, 50, 150)  # the agent still sends: the customer's own silence
    assert revived == []
    await poll_at(media, watch, now, 106.0, 50, 300)
    assert sw.service.reports == [("on_media_timeout", ("c1", "lcust"))]  # the time-out decides, as before
    media, sw, watch, now, revived = await revived_watch()
    for t in (100.0, 102.0, 104.0, 105.9):  # no party ever sent a packet through the relay: nothing it dropped
        await poll_at(media, watch, now, t, 0, 0)
    assert revived == [] and sw.service.reports == []
