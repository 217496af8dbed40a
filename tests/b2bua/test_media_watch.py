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
