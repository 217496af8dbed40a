"""Calls callbridge places (api=dial, api=aux_call, the automatic recall) anchored on a real rtpengine like a
customer's incoming call (docs/design.md, "Media"; docs/operations.md, "Audio: what each party hears").

The agent's phone (callbridge.phone with real RTP, auto-answering) is rung first without an offer; its offer in the
200 goes through the relay to the customer, called at the trunk's gateway (another callbridge.phone). What each
party hears is measured: the agent plays 1000 Hz, the customer 1300 Hz, a transfer target 1500 Hz. The relay's own
list of calls (ng ``list``) is empty once the call is over."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from callnode import GATEWAY_HOST, OP, agent_phone, cdrs, load, operation_doc, until  # noqa: E402
from test_calls_hearing import assert_music, assert_ringback, assert_voice  # noqa: E402
from test_calls_queue_audio import runs, write_wav  # noqa: E402

from callbridge.bootstrap import Node, bootstrap  # noqa: E402
from callbridge.callcontrol.errors import CallControlUnavailable  # noqa: E402
from callbridge.config import Settings  # noqa: E402
from callbridge.media.bencode import decode, encode  # noqa: E402
from callbridge.phone import Call, CallEnded, Established, Held, IncomingCall, Phone, Resumed  # noqa: E402
from callbridge.phone.listen import Heard  # noqa: E402
from callbridge.sip.sdp import SessionDescription  # noqa: E402
from peers.ports import free_port, free_udp_port  # noqa: E402
from peers.rtpengine import Rtpengine  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

AGENT_HZ, CUSTOMER_HZ, TARGET_HZ = 1000.0, 1300.0, 1500.0
NUMBER = "3105550123"
VOICE_S = 1.2  # as test_calls_hearing: 11 windows of 100 ms, one late window still leaves 91 %
SETTLE = 0.3


@dataclass
class World:
    node: Node
    relay: Rtpengine | None
    agent: Phone
    gateway: Phone
    phones: list[Phone] = field(default_factory=list)


@asynccontextmanager
async def world(tmp_path: Path, *, relay_up: bool = True, queue: dict[str, Any] | None = None,
                **operation: Any) -> AsyncIterator[World]:
    gateway_port = free_port(GATEWAY_HOST, udp=True, tcp=False)
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    doc = operation_doc(gateway_port=gateway_port)
    doc["operation"].update(operation)
    doc["queues"][0].update(queue or {})
    doc["operation"]["transfer_timeout"] = 5
    await asyncio.to_thread(load, url, doc)
    phones: list[Phone] = []
    # --delete-delay=0: a deleted call leaves the relay's list at once (10.5 keeps it 30 s by default), so the list
    # being empty shows callbridge deleted it
    relay = Rtpengine(workdir=tmp_path / "rtpengine", extra_args=("--delete-delay=0",)) if relay_up else None
    ng = f"udp:{relay.host}:{relay.ng_port}" if relay is not None else f"udp:127.0.0.1:{free_udp_port()}"
    try:
        if relay is not None:
            relay.__enter__()
        node = await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                        rtpengine=(ng,)))
        try:
            if relay is not None:
                await until(lambda: node.switch.anchor.media is not None and node.switch.anchor.media.available(),
                            what="the relay up")
            agent = await agent_phone(node, "1001", answer="auto", media=True)
            phones.append(agent)
            gateway = await Phone.start(host=GATEWAY_HOST, port=gateway_port, user="gateway", name="gateway",
                                        media=True, answer="auto")
            phones.append(gateway)
            yield World(node, relay, agent, gateway, phones)
        finally:
            for phone in phones:
                await phone.close()
            await node.close()
    finally:
        if relay is not None:
            relay.__exit__(None, None, None)


async def connected(w: World) -> tuple[Call, Call]:
    """The dial's two calls, answered, each playing its tone: (the agent's, the customer's at the gateway)."""
    agent_call = (await w.agent.wait_for(IncomingCall, timeout=5)).call
    await w.agent.wait_for(Established, call=agent_call, timeout=5)
    customer_call = (await w.gateway.wait_for(IncomingCall, timeout=5)).call
    await w.gateway.wait_for(Established, call=customer_call, timeout=5)
    assert agent_call.rtp is not None and customer_call.rtp is not None
    agent_call.rtp.play_tone(AGENT_HZ)
    customer_call.rtp.play_tone(CUSTOMER_HZ)
    return agent_call, customer_call


async def heard(phone: Phone, call: Call, seconds: float) -> Heard:
    """What `call`'s party hears over the next `seconds` (after SETTLE)."""
    assert call.rtp is not None
    await asyncio.sleep(SETTLE)
    start = phone.now()
    await asyncio.sleep(seconds)
    return call.rtp.heard(start, phone.now())


async def hears(phone: Phone, call: Call, hz: float, what: str) -> None:
    """Wait until `call`'s party hears `hz` (a re-INVITE's media change is not instant), then measure it."""
    await until(lambda: call.rtp is not None and call.rtp.heard(phone.now() - 0.2, phone.now()).share(hz) >= 0.5,
                what=what)
    assert_voice(await heard(phone, call, VOICE_S), hz)


def media_of(sdp: SessionDescription | None) -> tuple[str, int]:
    assert sdp is not None and sdp.media, "no SDP with a media stream"
    connection = sdp.media[0].connection or sdp.connection
    assert connection is not None
    return connection.address, sdp.media[0].port


def in_range(relay: Rtpengine, address: tuple[str, int]) -> bool:
    return address[0] == relay.host and relay.port_min <= address[1] <= relay.port_max


def relay_calls(relay: Rtpengine) -> list[bytes]:
    """The call-ids rtpengine itself holds (ng ``list``), asked over its control socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        # a cookie of its own each time: rtpengine answers a repeated cookie with its cached reply
        cookie = f"list{time.monotonic_ns()}".encode()
        sock.sendto(cookie + b" " + encode({"command": "list"}), (relay.host, relay.ng_port))
        data, _ = sock.recvfrom(65535)
    reply = decode(data.partition(b" ")[2])
    assert reply.get("result") == b"ok", reply
    return list(reply.get("calls") or [])


async def test_a_dial_is_anchored_both_hear_each_other_hold_plays_music_and_a_transfer_rings_then_connects(
        tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        relay = w.relay
        assert relay is not None
        conn_id = w.node.service.dial(OP, "1001", NUMBER)
        agent_call, customer_call = await connected(w)
        await until(lambda: in_range(relay, media_of(agent_call.remote_sdp)), what="the agent re-INVITEd")
        # each phone was given the relay's address, never the other's
        agent_sees, customer_sees = media_of(agent_call.remote_sdp), media_of(customer_call.remote_sdp)
        assert in_range(relay, customer_sees) and agent_sees != customer_sees
        assert w.node.switch.anchor.anchored(conn_id) and w.node.switch.anchor.stats["anchored"] == 1
        assert relay_calls(relay) == [conn_id.encode()]

        await hears(w.gateway, customer_call, AGENT_HZ, "the customer hears the agent")
        await hears(w.agent, agent_call, CUSTOMER_HZ, "the agent hears the customer")

        w.node.service.hold(OP, "1001")
        await w.gateway.wait_for(Held, call=customer_call, timeout=5)
        assert_music(await heard(w.gateway, customer_call, 1.6))
        w.node.service.hold(OP, "1001")  # toggles back
        await w.gateway.wait_for(Resumed, call=customer_call, timeout=5)
        await hears(w.gateway, customer_call, AGENT_HZ, "the agent again")

        target = await agent_phone(w.node, "1002", ready=False, answer="manual", media=True)
        w.phones.append(target)
        w.node.service.change_status(OP, "1002", "ready")
        w.node.service.transfer(OP, "1001", "1002")
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await target_call.ring()
        assert_ringback(await heard(w.gateway, customer_call, 0.6))
        await target_call.answer()
        await target.wait_for(Established, call=target_call, timeout=5)
        assert target_call.rtp is not None
        target_call.rtp.play_tone(TARGET_HZ)
        await w.agent.wait_for(CallEnded, call=agent_call, timeout=5)
        await hears(w.gateway, customer_call, TARGET_HZ, "the customer hears the target")
        await hears(target, target_call, CUSTOMER_HZ, "the target hears the customer")
        assert media_of(customer_call.remote_sdp) == customer_sees  # the customer's side never moved

        await customer_call.hangup()
        await until(lambda: w.node.live_legs == 0 and not w.node.switch.anchor.calls, what="the call over")
        await until(lambda: relay_calls(relay) == [], what="the relay's call deleted")
        assert w.node.switch.anchor.stats["media_failures"] == 0
    [cdr] = cdrs(w.node)
    assert cdr["agents"] == ["1001", "1002"] and cdr["transfer_count"] == 1


async def test_an_automatic_recall_is_anchored_and_both_hear_each_other(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        relay = w.relay
        assert relay is not None
        recall = w.node.service.recall(OP, "1001", NUMBER, _in_a_second(w.node), "auto")
        agent_call, customer_call = await connected(w)
        conn_id = w.node.service.get_agent(OP, "1001").conn_id
        assert conn_id is not None and w.node.switch.anchor.anchored(conn_id), recall
        await until(lambda: in_range(relay, media_of(agent_call.remote_sdp)), what="the agent re-INVITEd")
        assert in_range(relay, media_of(customer_call.remote_sdp))
        await hears(w.gateway, customer_call, AGENT_HZ, "the customer hears the agent")
        await hears(w.agent, agent_call, CUSTOMER_HZ, "the agent hears the customer")
        await agent_call.hangup()
        await until(lambda: w.node.live_legs == 0 and not w.node.switch.anchor.calls, what="the call over")
        await until(lambda: relay_calls(relay) == [], what="the relay's call deleted")


def _in_a_second(node: Node) -> str:
    """api=recall's date (YYYYmmddHHiiss, the operation's time zone) about a second from now."""
    import datetime
    from zoneinfo import ZoneInfo

    op = node.switch.directory.get_operation(OP)
    assert op is not None
    at = datetime.datetime.fromtimestamp(time.time() + 1.0, tz=ZoneInfo(op.time_zone))
    return at.strftime("%Y%m%d%H%M%S")


@pytest.mark.parametrize("policy", ["direct", "refuse"])
async def test_a_dial_with_no_relay_up_follows_the_operations_policy(tmp_path: Path, policy: str) -> None:
    async with world(tmp_path, relay_up=False, media_relay_down=policy) as w:
        anchor = w.node.switch.anchor
        assert anchor.media is not None and not anchor.media.available()
        if policy == "refuse":
            with pytest.raises(CallControlUnavailable):
                w.node.service.dial(OP, "1001", NUMBER)
            await asyncio.sleep(0.3)
            assert w.node.live_legs == 0 and w.node.service.get_agent(OP, "1001").state == "ready"
            assert [e.type for e in w.node.events.since(OP, 0) if not e.type.startswith("agent.")] == []
            assert cdrs(w.node) == []
            return
        conn_id = w.node.service.dial(OP, "1001", NUMBER)
        agent_call, customer_call = await connected(w)
        # direct media: each phone is given the other's own address, and both hear each other
        assert agent_call.rtp is not None and customer_call.rtp is not None
        await until(lambda: media_of(agent_call.remote_sdp) == agent_call_peer(customer_call),
                    what="the agent given the customer's address")
        await hears(w.gateway, customer_call, AGENT_HZ, "the customer hears the agent")
        await hears(w.agent, agent_call, CUSTOMER_HZ, "the agent hears the customer")
        assert anchor.stats["direct_relay_down"] == 1 and not anchor.calls
        media_events = [(e.type, e.data) for e in w.node.events.history(conn_id) if e.type == "call.media_direct"]
        assert media_events == [("call.media_direct", {"conn_id": conn_id, "reason": "relay_down"})]
        assert 'callbridge_media_calls_total{outcome="direct_relay_down"} 1' in w.node.metrics.render()
        await customer_call.hangup()
        await until(lambda: w.node.live_legs == 0, what="the call over")


def agent_call_peer(customer_call: Call) -> tuple[str, int]:
    """Where the customer's phone receives its media (its own SDP's address)."""
    return media_of(customer_call.local_sdp)


async def requeued(w: World, *, ringing: Callable[[Call], Awaitable[None]] | None = None) -> tuple[str, Call]:
    """A dial of agent 1001, answered; its blind transfer to agent 1002 rings (`ringing` is then given the
    customer's call); the agent hangs up, then the target answers busy: the transfer fails and the customer goes
    back to the queue (transfer_engine). The call's conn_id and the customer's call."""
    conn_id = w.node.service.dial(OP, "1001", NUMBER)
    agent_call, customer_call = await connected(w)
    await hears(w.gateway, customer_call, AGENT_HZ, "the customer hears the agent")
    target = await agent_phone(w.node, "1002", ready=False, answer="manual", media=True)
    w.phones.append(target)
    w.node.service.change_status(OP, "1002", "ready")
    record = w.node.service.transfer(OP, "1001", "1002")
    target_call = (await target.wait_for(IncomingCall, timeout=5)).call
    await target_call.ring()
    if ringing is not None:
        await ringing(customer_call)
    await agent_call.hangup()  # the agent leaves while the target rings
    await until(lambda: w.node.service.get_agent(OP, "1001").conn_id is None, what="the agent's BYE taken")
    await target_call.reject(486)
    await until(lambda: w.node.service.get_transfer(OP, record.id).state == "failed", what="the transfer failed")
    assert w.node.service.get_transfer(OP, record.id).customer_requeued
    return conn_id, customer_call


async def test_a_customer_requeued_after_a_failed_transfer_hears_music_again(tmp_path: Path) -> None:
    """The customer requeued hears music there, not the transfer's ringback any more."""
    async with world(tmp_path, transfer_audio="ringback", acw_seconds=30) as w:

        async def ringback_heard(customer_call: Call) -> None:
            assert_ringback(await heard(w.gateway, customer_call, 0.6))

        conn_id, customer_call = await requeued(w, ringing=ringback_heard)
        assert w.node.service.get_call(OP, conn_id).state in ("queued", "offering")  # 1002 may be offered it again
        assert_music(await heard(w.gateway, customer_call, 1.6))


async def test_a_customer_requeued_hears_its_queues_music_and_announcement(tmp_path: Path) -> None:
    """With a queue that has its own music and announcement, the requeued customer (answered already, so no early
    media) hears them as a caller waiting in that queue does: the music, then the announcement at the interval,
    then the music again, while agent 1002 is offered the call again and again (it does not answer)."""
    music_hz, announcement_hz, interval = 500, 900, 5.0
    queue = {"music": write_wav(tmp_path / "wait.wav", music_hz, 2.0),
             "announcement": write_wav(tmp_path / "notice.wav", announcement_hz, 1.0),
             "announcement_interval": interval, "max_wait_seconds": 30}
    async with world(tmp_path, queue=queue, transfer_audio="ringback", acw_seconds=30) as w:
        _, customer_call = await requeued(w)
        assert customer_call.rtp is not None
        start = w.gateway.now()
        await asyncio.sleep(interval + 2.5)
        timeline = runs(customer_call.rtp.windows(start, w.gateway.now()))
        heard_tones = [hz for hz, _, _ in timeline if hz]
        first = heard_tones.index(music_hz)  # what played before the requeue (ringback) may open the timeline
        assert heard_tones[first:] == [music_hz, announcement_hz, music_hz], timeline
        music_start = next(begin for hz, begin, _ in timeline if hz == music_hz)
        [(begin, seconds)] = [(begin, seconds) for hz, begin, seconds in timeline if hz == announcement_hz]
        assert begin - music_start == pytest.approx(interval, abs=0.4), timeline
        assert seconds == pytest.approx(1.0, abs=0.15), timeline
        assert w.node.switch.anchor.stats["media_failures"] == 0
