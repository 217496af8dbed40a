"""The ng client, the relay set and the `Media` port against a real rtpengine (userspace, loopback): health and
features, errors, time-outs, load sharing, and RTP through the relay when a call is re-targeted."""

from __future__ import annotations

import asyncio
import random
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callbridge.b2bua.ports import MediaRefused, MediaUnavailable
from callbridge.media.ng import NgTimers
from callbridge.media.relays import Health, RelaySet, RelayTimers
from callbridge.media.rtpengine import RtpengineMedia
from callbridge.media.shell import NgCommandFailed, NgShell, NgTimeout
from peers.ports import free_udp_port
from peers.rtp import RtpEndpoint
from peers.rtpengine import Rtpengine

pytestmark = pytest.mark.timeout(60)


def sdp(port: int, version: int = 1) -> bytes:
    return (f"v=0\r\no=- 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n").encode()


def media_address(body: bytes) -> tuple[str, int]:
    text = body.decode()
    return (re.search(r"^c=IN IP4 (\S+)", text, re.M).group(1), int(re.search(r"^m=audio (\d+)", text, re.M).group(1)))


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def started(*relays: Rtpengine, ng_timers: NgTimers | None = None,
                  timers: RelayTimers | None = None) -> NgShell:
    shell = NgShell(RelaySet([r.ng_address for r in relays], random.Random(), ng_timers=ng_timers, timers=timers))
    await shell.start()
    await until(lambda: all(r.up and r.features for r in shell.relays.relays.values()))
    return shell


async def test_a_relay_is_up_with_the_features_of_its_version(rtpengine: Rtpengine) -> None:
    shell = await started(rtpengine)
    try:
        relay = shell.relays.relays[rtpengine.ng_address]
        assert relay.health is Health.UP
        # rtpengine 10.5: play media and recording are there; pause recording and connect are not
        for command in ("offer", "answer", "delete", "block media", "play media", "play DTMF", "start recording",
                        "subscribe request"):
            assert relay.supports(command), command
        assert not relay.supports("pause recording") and not relay.supports("connect")
        assert relay.interfaces == (("default", "127.0.0.1"),)
        assert await shell.command(rtpengine.ng_address, {"command": "ping"}) == {"result": b"pong"}
    finally:
        shell.close()


async def test_a_refused_command_carries_the_relays_reason(rtpengine: Rtpengine) -> None:
    shell = await started(rtpengine)
    try:
        with pytest.raises(NgCommandFailed, match=r"refused 'query': Unknown call-id$"):
            await shell.command(rtpengine.ng_address, {"command": "query", "call-id": "no-such-call"})
        with pytest.raises(NgCommandFailed, match=r"refused 'frobnicate': Unrecognized command$"):
            await shell.command(rtpengine.ng_address, {"command": "frobnicate"})
        assert shell.relays.client.stats["unparseable"] == 0
    finally:
        shell.close()


async def test_a_stopped_relay_times_out_goes_down_and_comes_back(tmp_path: Path) -> None:
    relay = Rtpengine(workdir=tmp_path / "r").start()
    shell = await started(relay, ng_timers=NgTimers(first=0.1, cap=0.2, total=0.6),
                          timers=RelayTimers(ping_interval=0.3))
    try:
        relay.stop()
        began = time.monotonic()
        with pytest.raises(NgTimeout, match=r"did not answer 'ping'$"):
            await shell.command(relay.ng_address, {"command": "ping"})
        assert 0.5 < time.monotonic() - began < 2.0  # bounded by the ng time-out
        assert shell.relays.relays[relay.ng_address].health is Health.DOWN
        again = Rtpengine(workdir=tmp_path / "r2")
        again.ng_port = relay.ng_port  # the same relay, restarted
        again.start()
        try:
            await until(lambda: shell.relays.relays[relay.ng_address].up)
        finally:
            again.stop()
    finally:
        shell.close()
        relay.stop()


async def test_calls_are_shared_between_relays_and_stick_to_theirs(tmp_path: Path) -> None:
    with Rtpengine(workdir=tmp_path / "a") as a, Rtpengine(workdir=tmp_path / "b") as b:
        shell = await started(a, b)
        media = RtpengineMedia(shell)
        try:
            offers = {conn: await media.offer(conn, "cust", None, sdp(free_udp_port())) for conn in ("c1", "c2")}
            ports = {conn: media_address(body)[1] for conn, body in offers.items()}
            assert a.port_min <= ports["c1"] <= a.port_max and b.port_min <= ports["c2"] <= b.port_max
            # c1's answer goes to relay a, which knows it; b would answer "Unknown call-id"
            await media.answer("c1", "cust", "agent", sdp(free_udp_port()))
            assert (await shell.command(a.ng_address, {"command": "query", "call-id": "c1"}))["result"] == b"ok"
            with pytest.raises(NgCommandFailed, match="Unknown call-id"):
                await shell.command(b.ng_address, {"command": "query", "call-id": "c1"})
            await media.delete("c1")
            await media.delete("c2")
            assert shell.relays.call_count == 0
        finally:
            shell.close()


async def test_no_relay_up_is_media_unavailable_and_leaves_nothing_counted(tmp_path: Path) -> None:
    relay = Rtpengine(workdir=tmp_path / "r").start()
    shell = await started(relay, ng_timers=NgTimers(first=0.1, cap=0.2, total=0.5))
    media = RtpengineMedia(shell)
    try:
        relay.stop()
        with pytest.raises(MediaUnavailable, match="did not answer 'offer'"):
            await media.offer("c1", "cust", None, sdp(40000))
        assert shell.relays.call_count == 0 and not media.available()
        with pytest.raises(MediaUnavailable, match=r"^no rtpengine relay is up$"):
            await media.offer("c2", "cust", None, sdp(40000))
        with pytest.raises(MediaUnavailable, match=r"^call c3 has no media relay$"):
            await media.block("c3", "cust")
    finally:
        shell.close()


async def test_garbage_sdp_is_refused(rtpengine: Rtpengine) -> None:
    shell = await started(rtpengine)
    media = RtpengineMedia(shell)
    try:
        with pytest.raises(MediaRefused, match="refused 'offer'"):
            await media.offer("c1", "cust", None, b"this is not SDP")
        assert shell.relays.call_count == 0
    finally:
        shell.close()


async def test_rtp_flows_through_the_relay_and_follows_a_re_targeting(rtpengine: Rtpengine) -> None:
    shell = await started(rtpengine)
    media = RtpengineMedia(shell)
    customer, agent, target = RtpEndpoint(), RtpEndpoint(), RtpEndpoint()
    try:
        to_agent = await media.offer("call", "cust", None, sdp(customer.address[1]))
        to_customer = await media.answer("call", "cust", "agent", sdp(agent.address[1]))
        relay_for_agent, relay_for_customer = media_address(to_agent), media_address(to_customer)
        for address in (relay_for_agent, relay_for_customer):
            assert address[0] == "127.0.0.1" and rtpengine.port_min <= address[1] <= rtpengine.port_max
        await customer.send(relay_for_customer, 10)
        await agent.send(relay_for_agent, 10)
        got_agent = await agent.receive(want=10)
        got_customer = await customer.receive(want=10)
        assert {(p.source, p.sender) for p in got_agent} == {(relay_for_agent, customer.ssrc)} and len(got_agent) == 10
        assert {(p.source, p.sender) for p in got_customer} == {(relay_for_customer, agent.ssrc)}
        assert len(got_customer) == 10

        # a blind transfer: the target offers toward the customer (RFC 3725 flow I), the customer answers
        to_customer_again = await media.offer("call", "target", "cust", sdp(target.address[1]))
        to_target = await media.answer("call", "target", "cust", sdp(customer.address[1], version=2))
        assert media_address(to_customer_again) == relay_for_customer  # the customer's side does not move
        await media.drop_leg("call", "agent")
        relay_for_target = media_address(to_target)
        await customer.send(relay_for_customer, 10)
        await target.send(relay_for_target, 10)
        await agent.send(relay_for_agent, 10)  # the released agent's media goes nowhere
        got_target = await target.receive(want=10)
        got_customer = await customer.receive(want=11, timeout=0.5)
        assert {(p.source, p.sender) for p in got_target} == {(relay_for_target, customer.ssrc)}
        assert len(got_target) == 10
        assert {p.sender for p in got_customer} == {target.ssrc} and len(got_customer) == 10
        assert await agent.receive(want=1, timeout=0.2) == []
        await media.delete("call")
        await media.delete("call")  # idempotent
    finally:
        shell.close()
        for endpoint in (customer, agent, target):
            endpoint.close()


BROWSER_ANSWER = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio {port} UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host generation 0\r\n"
    "a=ice-ufrag:Xb1q\r\na=ice-pwd:0123456789abcdefghijklmn\r\n"
    "a=fingerprint:sha-256 CE:79:2F:E6:9E:BD:1F:4C:58:DA:83:9B:89:2A:B8:D0:76:E4:2F:25:0E:76:F3:83:EC:85:A3:EA:87:36:"
    "06:7B\r\na=setup:active\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n")


async def test_a_browser_gets_webrtc_and_its_answer_reaches_the_customer_as_plain_rtp(rtpengine: Rtpengine) -> None:
    shell = await started(rtpengine)
    media = RtpengineMedia(shell)
    try:
        offer = (await media.offer("c1", "cust", None, sdp(free_udp_port()), to_browser=True)).decode()
        [m_line] = re.findall(r"^m=audio \d+ (.*)$", offer, re.M)
        assert m_line.split()[:2] == ["UDP/TLS/RTP/SAVPF", "0"]  # the customer's PCMU first, then Opus (transcoded)
        assert re.search(r"^a=rtpmap:\d+ opus/48000/2\r?$", offer, re.M)
        for line in ("a=rtcp-mux", "a=setup:actpass"):
            assert re.search(f"^{line}\\r?$", offer, re.M), offer
        assert re.search(r"^a=fingerprint:sha-256 [0-9A-F:]+\r?$", offer, re.M)
        assert re.search(r"^a=ice-ufrag:\S+\r?$", offer, re.M) and re.search(r"^a=ice-pwd:\S+\r?$", offer, re.M)
        assert re.search(r"^a=candidate:\S+ 1 UDP \d+ 127\.0\.0\.1 \d+ typ host\r?$", offer, re.M), offer
        assert "a=crypto" not in offer

        answer = (await media.answer("c1", "cust", "agent", BROWSER_ANSWER.format(port=free_udp_port()).encode(),
                                     answerer_browser=True)).decode()
        assert re.search(r"^m=audio \d+ RTP/AVP 0\r?$", answer, re.M), answer
        for gone in ("a=ice-", "a=candidate", "a=fingerprint", "a=setup", "a=rtcp-mux"):
            assert gone not in answer, answer
        assert media_address(answer.encode())[0] == "127.0.0.1"
    finally:
        await media.delete("c1")
        shell.close()


def browser_sdp(port: int, setup: str, ssrc: int) -> bytes:
    """What Chromium offers or answers: BROWSER_ANSWER's lines with its SSRC and stream signalled (RFC 5576)."""
    return (BROWSER_ANSWER.format(port=port).replace("a=setup:active", f"a=setup:{setup}")
            + f"a=msid:s1 t1\r\na=ssrc:{ssrc} cname:c{ssrc}\r\na=ssrc:{ssrc} msid:s1 t1\r\n").encode()


async def test_between_two_browsers_neither_is_told_the_other_ones_ssrc(rtpengine: Rtpengine) -> None:
    """The consulted page's offer toward the agent's page and its answer back (an attended transfer between two
    pages): the relay re-writes each stream's SSRC (it transcodes, `inject DTMF`), so the SSRCs a page signalled
    must not reach the other page; the rest of the SDP does (its stream id, a=msid)."""
    shell = await started(rtpengine)
    media = RtpengineMedia(shell)
    try:
        await media.offer("c2", "cust", None, sdp(free_udp_port()), to_browser=True)
        await media.answer("c2", "cust", "first", browser_sdp(free_udp_port(), "active", 1111), answerer_browser=True)
        raw = await shell.command(rtpengine.ng_address, {  # what rtpengine 10.5 itself writes: the SSRC passed on
            "command": "offer", "call-id": "c-raw", "from-tag": "a", "sdp": browser_sdp(free_udp_port(), "actpass", 7),
            "flags": ["port latching"], "ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF"})
        assert b"a=ssrc:7 cname:c7" in raw["sdp"]
        await shell.command(rtpengine.ng_address, {"command": "delete", "call-id": "c-raw"})

        offer = (await media.offer("c2", "second", "first", browser_sdp(free_udp_port(), "actpass", 2222),
                                   from_browser=True, to_browser=True)).decode()
        assert re.search(r"^m=audio \d+ UDP/TLS/RTP/SAVPF 0\b", offer, re.M), offer
        assert "a=ssrc" not in offer and re.search(r"^a=msid:s1 t1\r$", offer, re.M), offer
        answer = (await media.answer("c2", "second", "first", browser_sdp(free_udp_port(), "active", 1111),
                                     offerer_browser=True, answerer_browser=True)).decode()
        assert re.search(r"^m=audio \d+ UDP/TLS/RTP/SAVPF 0\b", answer, re.M), answer
        assert "a=ssrc" not in answer and re.search(r"^a=fingerprint:sha-256 [0-9A-F:]+\r$", answer, re.M), answer
        assert answer.endswith("\r\n") and "\r\n\r\n" not in answer
    finally:
        await media.delete("c2")
        shell.close()


async def test_a_browsers_subscription_is_webrtc_per_party_and_makes_the_browser_the_controlling_ice_agent(
        rtpengine: Rtpengine) -> None:
    """The supervisor's board page listening: `subscribe(webrtc=True)` of two parties gives one DTLS-SRTP/ICE stream
    per party with no signalled SSRC, marked ice-lite (10.5 stays ICE-controlled on a subscription), and takes a
    browser's answer; a plain subscription stays RTP/AVP, not marked."""
    shell = await started(rtpengine)
    media = RtpengineMedia(shell)
    try:
        await media.offer("c3", "cust", None, sdp(free_udp_port()))
        await media.answer("c3", "cust", "agent", sdp(free_udp_port()))
        offer = (await media.subscribe("c3", ["cust", "agent"], "m1", webrtc=True)).decode()
        assert re.findall(r"^m=audio \d+ (\S+) 0\b", offer, re.M) == ["UDP/TLS/RTP/SAVPF"] * 2, offer
        session = offer[:offer.index("m=audio")]
        assert session.endswith("t=0 0\r\na=ice-lite\r\n") and offer.count("a=ice-lite") == 1, offer
        for line in ("a=sendonly", "a=rtcp-mux", "a=setup:actpass"):
            assert len(re.findall(f"^{line}\\r$", offer, re.M)) == 2, offer
        assert len(re.findall(r"^a=candidate:\S+ 1 UDP \d+ 127\.0\.0\.1 \d+ typ host\r$", offer, re.M)) == 2
        assert "a=ssrc" not in offer and "a=crypto" not in offer
        answer = BROWSER_ANSWER.format(port=free_udp_port()).replace("a=sendrecv", "a=recvonly")
        head, section = answer[:answer.index("m=audio")], answer[answer.index("m=audio"):]
        await media.subscribe_answer("c3", "m1", (head + section * 2).encode())

        plain = (await media.subscribe("c3", ["cust", "agent"], "m2")).decode()
        assert re.findall(r"^m=audio \d+ (\S+) 0\b", plain, re.M) == ["RTP/AVP"] * 2 and "ice-lite" not in plain
        await media.unsubscribe("c3", "m1")
    finally:
        await media.delete("c3")
        shell.close()
