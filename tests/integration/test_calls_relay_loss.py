"""A relay that dies mid-call (docs/operations.md, "A relay that dies mid-call"): two real userspace rtpengine
processes, one killed with SIGKILL while a call talks through it; real SIP and RTP between `callbridge.phone` phones
and callbridge on loopback; what the customer hears measured by tone frequency on its phone.

- With a second relay up, the call is re-anchored there: both phones are re-INVITEd with the new relay's SDP and
  the customer hears the agent's tone again (and the agent the customer's).
- With no other relay, the call is ended cleanly: BYE to both phones, CDR end_reason ``relay_lost``, the agent
  freed, ``call.ended`` by the system.
(A relay unreachable when the call starts, under both policies: test_calls_media_anchored.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from anchored import anchored_node, talking  # noqa: E402
from callnode import OP, cdrs, operation_doc, state_history, until  # noqa: E402

from callbridge.bootstrap import Node  # noqa: E402
from callbridge.phone import Call, CallEnded, Phone  # noqa: E402
from callbridge.phone.listen import Heard  # noqa: E402
from callbridge.sip.sdp import SessionDescription  # noqa: E402
from peers.rtpengine import Rtpengine  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

AGENT_HZ, CUSTOMER_HZ = 1000.0, 700.0
PING = 0.5  # rtpengine_ping_seconds
# a dead relay's calls are lost at its second ping unanswered in a row (rtpengine_pings_to_lose's default): each
# ping waits up to PING to be sent, then the ng client's 4 s of retransmissions
DETECTED = 2 * (PING + 4.0)
SLACK = 2.0  # the re-INVITEs or BYEs, and a loop slowed by a machine shared with other tests
SETTLE = 0.3


@dataclass
class World:
    node: Node
    relays: list[Rtpengine]
    customer: Phone
    agent: Phone
    call: Call
    agent_call: Call
    conn_id: str


@asynccontextmanager
async def world(tmp_path: Path, relay_count: int) -> AsyncIterator[World]:
    async with anchored_node(tmp_path, operation_doc(), relays=relay_count, rtpengine_ping_seconds=PING) as a:
        talk = await talking(a, agent_hz=AGENT_HZ, customer_hz=CUSTOMER_HZ)
        conn_id = a.node.service.get_agent(OP, "1001").conn_id
        assert conn_id is not None and a.node.switch.anchor.anchored(conn_id)
        yield World(a.node, a.relays, talk.customer, talk.agent, talk.call, talk.agent_call, conn_id)


def relay_of(w: World) -> Rtpengine:
    shell = w.node.media_shell
    assert shell is not None
    relay = shell.relays.relay_of(w.conn_id)
    assert relay is not None
    [found] = [r for r in w.relays if r.ng_address == relay.address]
    return found


def media_of(sdp: SessionDescription | None) -> tuple[str, int]:
    assert sdp is not None and sdp.media
    connection = sdp.media[0].connection or sdp.connection
    assert connection is not None
    return connection.address, sdp.media[0].port


def in_range(relay: Rtpengine, address: tuple[str, int]) -> bool:
    return address[0] == relay.host and relay.port_min <= address[1] <= relay.port_max


async def listen(phone: Phone, call: Call, seconds: float) -> Heard:
    assert call.rtp is not None
    await asyncio.sleep(SETTLE)
    start = phone.now()
    await asyncio.sleep(seconds)
    return call.rtp.heard(start, phone.now())


def assert_tone(heard: Heard, hz: float) -> None:
    assert heard.share(hz, tolerance=3) >= 0.9, str(heard)
    assert {int(round(w.hz / 25.0) * 25) for w in heard.windows if w.hz is not None and w.dbfs > -50} == {int(hz)}, \
        str(heard)


def kill(relay: Rtpengine) -> None:
    assert relay.pid is not None
    os.kill(relay.pid, signal.SIGKILL)


async def test_a_relay_killed_mid_call_re_anchors_the_call_on_the_other_relay(tmp_path: Path) -> None:
    async with world(tmp_path, 2) as w:
        first = relay_of(w)
        assert first is w.relays[0]  # the first configured of two idle relays takes the call
        assert in_range(first, media_of(w.call.remote_sdp)) and in_range(first, media_of(w.agent_call.remote_sdp))
        assert_tone(await listen(w.customer, w.call, 1.0), AGENT_HZ)
        customer_version = w.call.remote_sdp.origin.sess_version
        agent_version = w.agent_call.remote_sdp.origin.sess_version

        kill(first)
        loop = asyncio.get_running_loop()
        killed = loop.time()
        anchor = w.node.switch.anchor
        await until(lambda: anchor.stats["reanchored"] == 1, timeout=DETECTED + 2 * SLACK, what="the call re-anchored")
        assert loop.time() - killed <= DETECTED + SLACK
        second = relay_of(w)
        assert second is w.relays[1]
        # both phones were re-INVITEd with a new version of the session they knew, naming the second relay
        assert w.call.remote_sdp.origin.sess_version == customer_version + 1
        assert w.agent_call.remote_sdp.origin.sess_version == agent_version + 1
        assert in_range(second, media_of(w.call.remote_sdp)), media_of(w.call.remote_sdp)
        assert in_range(second, media_of(w.agent_call.remote_sdp)), media_of(w.agent_call.remote_sdp)
        # and they hear each other again, through it
        assert_tone(await listen(w.customer, w.call, 1.5), AGENT_HZ)
        assert_tone(await listen(w.agent, w.agent_call, 1.0), CUSTOMER_HZ)
        assert anchor.stats["relay_lost"] == 0
        assert w.node.service.get_agent(OP, "1001").conn_id == w.conn_id  # the call goes on
        assert 'callbridge_media_calls_total{outcome="reanchored"} 1' in w.node.metrics.render()

        await w.call.hangup()
        await w.agent.wait_for(CallEnded, call=w.agent_call, timeout=5)
        await until(lambda: w.node.live_legs == 0 and not anchor.calls, what="the call over")
        shell = w.node.media_shell
        assert shell is not None
        await until(lambda: shell.relays.call_count == 0, what="the relay's call deleted")
        [cdr] = cdrs(w.node)
        assert (cdr["hangup_by"], cdr["end_reason"]) == ("customer", None)


async def test_a_relay_killed_mid_call_with_no_other_relay_ends_the_call_with_end_reason_relay_lost(
        tmp_path: Path) -> None:
    async with world(tmp_path, 1) as w:
        assert_tone(await listen(w.customer, w.call, 1.0), AGENT_HZ)
        kill(w.relays[0])
        loop = asyncio.get_running_loop()
        killed = loop.time()
        ended = await w.customer.wait_for(CallEnded, call=w.call, timeout=DETECTED + 2 * SLACK)
        agent_ended = await w.agent.wait_for(CallEnded, call=w.agent_call, timeout=2)
        assert loop.time() - killed <= DETECTED + SLACK
        assert (ended.reason, ended.by) == ("bye", "remote")  # callbridge's BYE to the customer
        assert (agent_ended.reason, agent_ended.by) == ("bye", "remote")  # ... and to the agent
        await until(lambda: w.node.service.get_agent(OP, "1001").conn_id is None, what="the agent freed")
        assert w.node.service.get_agent(OP, "1001").state == "ready"
        assert state_history(w.node, "1001")[-2:] == [("acw", "call_end"), ("ready", "acw_end")]
        [cdr] = cdrs(w.node)
        assert (cdr["conn_id"], cdr["hangup_by"], cdr["end_reason"], cdr["sip_cause"]) == (
            w.conn_id, "system", "relay_lost", None)
        anchor = w.node.switch.anchor
        assert (anchor.stats["relay_lost"], anchor.stats["reanchored"]) == (1, 0)
        await until(lambda: w.node.live_legs == 0 and not anchor.calls, what="the legs gone")

        def ended_events() -> list[dict[str, Any]]:
            return [e.data for e in w.node.events.since(OP, 0) if e.type == "call.ended"]

        await until(lambda: ended_events() != [], what="call.ended in the event log")
        assert [(e["conn_id"], e["ended_by"], e["end_reason"]) for e in ended_events()] == [
            (w.conn_id, "system", "relay_lost")]
        assert 'callbridge_media_calls_total{outcome="relay_lost"} 1' in w.node.metrics.render()
        assert 'callbridge_media_relay_up{relay="' in w.node.metrics.render()


async def test_a_relay_stopped_for_one_ping_series_keeps_its_call_and_the_call_keeps_its_audio(
        tmp_path: Path) -> None:
    """A relay too busy to answer one ping series (a SIGSTOP of 6 s: the first ping within it times out after the
    ng client's 4 s; the next one is answered once the relay runs again): down for new calls meanwhile, its call
    untouched (rtpengine_pings_to_lose 2), and the parties hear each other through it afterwards.
    The phones pause their RTP while the relay is stopped: rtpengine 10.5 stops reading for good a media socket
    on which it found more than 50 datagrams queued at five wake-ups (daemon/media_socket.c, MAX_RECV_ITERS and
    MAX_RECV_LOOP_STRIKES), which 6 s of a party's 50 packets a second do; that is the relay's own loss, whatever
    callbridge does (docs/peers.md)."""
    async with world(tmp_path, 1) as w:
        assert_tone(await listen(w.customer, w.call, 1.0), AGENT_HZ)
        relay = w.relays[0]
        assert relay.pid is not None and w.call.rtp is not None and w.agent_call.rtp is not None
        shell = w.node.media_shell
        assert shell is not None
        w.call.rtp.stop()
        w.agent_call.rtp.stop()
        os.kill(relay.pid, signal.SIGSTOP)
        try:
            await until(lambda: not shell.relays.relays[relay.ng_address].up, timeout=PING + 4.0 + SLACK,
                        what="the stopped relay down for new calls")
            assert shell.relays.relays[relay.ng_address].pings_failed == 1
            await asyncio.sleep(6.0 - (PING + 4.0) + 0.5)
        finally:
            os.kill(relay.pid, signal.SIGCONT)
        await until(lambda: shell.relays.relays[relay.ng_address].up, timeout=PING + 4.0 + SLACK,
                    what="the relay up again")
        w.call.rtp.play_tone(CUSTOMER_HZ)
        w.agent_call.rtp.play_tone(AGENT_HZ)
        anchor = w.node.switch.anchor
        assert (anchor.stats["relay_lost"], anchor.stats["reanchored"]) == (0, 0)
        assert shell.relays.relay_of(w.conn_id) is not None and anchor.anchored(w.conn_id)
        assert_tone(await listen(w.customer, w.call, 1.0), AGENT_HZ)  # through the same relay as before
        assert_tone(await listen(w.agent, w.agent_call, 1.0), CUSTOMER_HZ)
        assert w.node.service.get_agent(OP, "1001").conn_id == w.conn_id
        assert 'callbridge_media_calls_total{outcome="relay_lost"} 0' in w.node.metrics.render()


async def test_a_relay_restarted_between_two_pings_is_seen_by_its_uptime_and_its_call_re_anchored(
        tmp_path: Path) -> None:
    """A relay killed and started again on the same ports at once (as a supervisor restarts it): it may answer
    every ping, but it knows no call; its uptime, lower than before, tells. The call is re-anchored."""
    async with world(tmp_path, 2) as w:
        first = relay_of(w)
        shell = w.node.media_shell
        assert shell is not None
        await asyncio.sleep(1.5 + PING)  # the relay reported an uptime of at least 1 s
        assert (shell.relays.relays[first.ng_address].uptime or 0) >= 1
        assert_tone(await listen(w.customer, w.call, 0.5), AGENT_HZ)
        kill(first)
        proc = first._proc
        assert proc is not None
        proc.wait(5)
        loop = asyncio.get_running_loop()
        restarted = loop.time()
        first.start()
        anchor = w.node.switch.anchor
        await until(lambda: anchor.stats["reanchored"] == 1, timeout=DETECTED + 2 * SLACK, what="the call re-anchored")
        assert loop.time() - restarted <= DETECTED + SLACK
        assert anchor.stats["relay_lost"] == 0
        # it hears the agent again, through whichever relay took it (the restarted one is up and holds no call)
        assert_tone(await listen(w.customer, w.call, 1.5), AGENT_HZ)
        assert_tone(await listen(w.agent, w.agent_call, 1.0), CUSTOMER_HZ)
        await w.call.hangup()
        await w.agent.wait_for(CallEnded, call=w.agent_call, timeout=5)


async def test_a_call_whose_relay_stopped_reading_its_media_is_anchored_afresh_and_heard_again(
        tmp_path: Path) -> None:
    """The relay stopped for 6 s while both phones keep sending: rtpengine 10.5 then stops reading the call's
    sockets for good (docs/peers.md) though it still answers for the call. The media watch sees both parties
    silent for media_revive_seconds and anchors the call afresh: new sockets, a re-INVITE to each phone, and they
    hear each other again; nothing is ended."""
    async with anchored_node(tmp_path, operation_doc(), relays=1, rtpengine_ping_seconds=PING,
                             media_timeout_seconds=8.0, media_revive_seconds=2.0) as a:
        talk = await talking(a, agent_hz=AGENT_HZ, customer_hz=CUSTOMER_HZ)
        conn_id = a.node.service.get_agent(OP, "1001").conn_id
        assert conn_id is not None
        assert_tone(await listen(talk.customer, talk.call, 1.0), AGENT_HZ)
        before = media_of(talk.call.remote_sdp)
        customer_version = talk.call.remote_sdp.origin.sess_version
        [relay] = a.relays
        assert relay.pid is not None
        os.kill(relay.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(6.0)
        finally:
            os.kill(relay.pid, signal.SIGCONT)
        anchor = a.node.switch.anchor
        await until(lambda: anchor.stats["revived"] == 1, timeout=20.0, what="the call anchored afresh")
        assert "Too many packets in UDP receive queue" in relay.log_tail(400)  # the relay fell behind on its sockets
        after = media_of(talk.call.remote_sdp)
        assert after != before and in_range(relay, after)  # new sockets on the same relay
        assert talk.call.remote_sdp.origin.sess_version == customer_version + 1
        await asyncio.sleep(0.5)  # both phones move to the new sockets as each takes its re-INVITE
        assert_tone(await listen(talk.customer, talk.call, 1.0), AGENT_HZ)
        assert_tone(await listen(talk.agent, talk.agent_call, 1.0), CUSTOMER_HZ)
        assert (anchor.stats["relay_lost"], anchor.stats["reanchored"]) == (0, 0)
        watch = a.node.media_watch
        assert watch is not None and (watch.stats["revivals"], watch.stats["media_timeouts"]) == (1, 0)
        assert a.node.service.get_agent(OP, "1001").conn_id == conn_id
        assert 'callbridge_media_calls_total{outcome="revived"} 1' in a.node.metrics.render()
        await talk.call.hangup()
        await talk.agent.wait_for(CallEnded, call=talk.agent_call, timeout=5)
        [cdr] = cdrs(a.node)
        assert (cdr["hangup_by"], cdr["end_reason"]) == ("customer", None)
