"""A WebRTC agent without a browser: aiortc (a Python WebRTC stack: ICE, DTLS-SRTP, rtcp-mux, Opus/G.711) behind
`callbridge.phone` speaking SIP over WebSocket (RFC 7118), on an anchored call through a real userspace rtpengine.

What the browser tests show with Chromium, this shows faster and with the protocol in view: the offer callbridge
sends to a WebSocket-registered agent is the WebRTC profile the relay wrote (UDP/TLS/RTP/SAVPF, the relay's ICE
candidate on loopback, a DTLS fingerprint, ``setup:actpass``, ``rtcp-mux``), the customer's side stays plain RTP
(RTP/AVP, no ICE, no fingerprint), and audio is measured both ways: the customer hears the WebRTC agent's tone and
the WebRTC agent hears the customer's, decoded from SRTP by aiortc.

Loopback only: aiortc is given no STUN or TURN server (its default configuration names a public STUN server) and
its ICE agent gathers only 127.0.0.1 (aioice leaves loopback out of its host candidates on its own); the relay's
candidates are IP literals, so nothing is resolved.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import sys
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aioice.ice  # aiortc's ICE agent; aiortc is a test dependency (pyproject [dev], scripts/setup --test)
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from callnode import DOMAIN, OP, agent_phone, customer_phone, did_uri, load, operation_doc, until  # noqa: E402

from callbridge.bootstrap import Node, bootstrap  # noqa: E402
from callbridge.config import Settings  # noqa: E402
from callbridge.phone import Call, CallEnded, Established, IncomingCall, Phone  # noqa: E402
from callbridge.phone.spectrum import analyse  # noqa: E402
from callbridge.sip.sdp import SessionDescription  # noqa: E402
from peers.rtpengine import Rtpengine  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

CUSTOMER_HZ, WEBRTC_HZ, FIRST_AGENT_HZ = 700.0, 1100.0, 1500.0
RATE = 8000
FRAME = 160  # 20 ms at 8 kHz


class ToneTrack(MediaStreamTrack):
    """An audio track playing one sine at -12 dBFS, 20 ms frames paced in real time (what a microphone gives)."""

    kind = "audio"

    def __init__(self, hz: float) -> None:
        super().__init__()
        self.hz = hz
        self._sent = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._sent / RATE - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        amplitude = 32767 * 10 ** (-12 / 20)
        samples = [int(amplitude * math.sin(2 * math.pi * self.hz * (self._sent + n) / RATE)) for n in range(FRAME)]
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))
        frame.sample_rate = RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, RATE)
        self._sent += FRAME
        return frame


@dataclass
class Ear:
    """What aiortc decoded from the remote track: mono samples at the track's rate, with the loop time each frame
    arrived."""

    frames: list[tuple[float, int, list[float]]] = field(default_factory=list)
    failure: BaseException | None = None  # what ended the reading, other than the track's end

    async def run(self, track: MediaStreamTrack) -> None:
        try:
            await self._read(track)
        except Exception as exc:  # shown by the assertion that waits for a tone
            self.failure = exc
            raise

    async def _read(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert frame.format.name in ("s16", "s16p"), frame.format.name  # what aiortc's decoders give
            channels = len(frame.layout.channels) if frame.format.is_packed else 1  # planar: plane 0 is one channel
            data = array("h", bytes(frame.planes[0]))[: frame.samples * channels]
            self.frames.append((loop.time(), frame.sample_rate, [float(v) for v in data[::channels]]))

    def dominant_hz(self, since: float) -> float | None:
        recent = [(rate, s) for at, rate, s in self.frames if at >= since]
        if not recent:
            return None
        rate = recent[0][0]
        samples = [v for _, s in recent for v in s][-rate // 2:]  # the last half second
        return analyse(samples, rate).dominant_hz


@dataclass
class World:
    node: Node
    relay: Rtpengine
    customer: Phone
    agent: Phone
    pc: RTCPeerConnection
    ear: Ear
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@asynccontextmanager
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, ready: bool = True) -> AsyncIterator[World]:
    # aioice's host candidates: loopback only (it skips 127.0.0.1 by itself and would offer this machine's networks)
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    await asyncio.to_thread(load, url, operation_doc())
    with Rtpengine(workdir=tmp_path / "rtpengine") as relay:
        node = await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                        sip_ws_port=0, rtpengine=(f"udp:{relay.host}:{relay.ng_port}",)))
        agent = customer = None
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        w: World | None = None
        try:
            await until(lambda: node.switch.anchor.media is not None and node.switch.anchor.media.available(),
                        what="the relay up")
            assert node.sip_ws_address is not None
            agent = await Phone.start(host="127.0.0.1", transport="ws", user="1001", domain=DOMAIN,
                                      password="secret-1001", name="webrtc-1001", answer="manual")
            await agent.register(node.sip_ws_address, expires=300)
            await until(lambda: node.service.get_agent(OP, "1001").registered, what="1001 registered")
            if ready:
                node.service.change_status(OP, "1001", "ready")
            customer = await customer_phone(media=True)
            w = World(node, relay, customer, agent, pc, Ear())
            yield w
        finally:
            await pc.close()
            if w is not None:
                for task in w.tasks:
                    task.cancel()
                await asyncio.gather(*w.tasks, return_exceptions=True)
            for phone in (agent, customer):
                if phone is not None:
                    await phone.close()
            await node.close()


async def answer_with_aiortc(w: World, incoming: IncomingCall) -> None:
    """aiortc takes the INVITE's offer, plays its tone, and its answer goes back in the 200 OK."""
    pc, ear = w.pc, w.ear

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        w.tasks.append(asyncio.create_task(ear.run(track)))

    pc.addTrack(ToneTrack(WEBRTC_HZ))
    await pc.setRemoteDescription(RTCSessionDescription(incoming.request.body.decode(), "offer"))
    await pc.setLocalDescription(await pc.createAnswer())  # gathers the (loopback) candidates
    await incoming.call.answer(sdp=pc.localDescription.sdp.encode())


async def customer_hears(call: Call, phone: Phone, hz: float, *, within: float = 8.0) -> float:
    """Wait until the last half second the customer heard is `hz` (±3); the share of it in that half second."""
    assert call.rtp is not None
    deadline = asyncio.get_running_loop().time() + within
    while True:
        heard = call.rtp.heard(phone.now() - 0.5, phone.now())
        if heard.share(hz, tolerance=3) >= 0.9:
            return heard.share(hz, tolerance=3)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the customer did not hear {hz} Hz: {heard}")
        await asyncio.sleep(0.1)


async def agent_hears(ear: Ear, hz: float, *, within: float = 8.0) -> float:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        got = ear.dominant_hz(loop.time() - 0.5)
        if got is not None and abs(got - hz) <= 3:
            return got
        if loop.time() > deadline:
            raise AssertionError(f"the WebRTC agent did not hear {hz} Hz (last: {got}, {len(ear.frames)} frames, "
                                 f"{ear.failure!r})")
        await asyncio.sleep(0.1)


async def test_a_webrtc_agent_over_websocket_is_offered_the_webrtc_profile_and_audio_flows_both_ways(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with world(tmp_path, monkeypatch) as w:
        call = await w.customer.call(did_uri(w.node), wait_answer=False)
        incoming = await w.agent.wait_for(IncomingCall, timeout=5)

        # the offer to the browser-like agent: the relay's WebRTC profile
        offer = SessionDescription.parse(incoming.request.body)
        [audio] = offer.media
        assert audio.proto == "UDP/TLS/RTP/SAVPF", incoming.request.body.decode()
        offer_text = incoming.request.body.decode()
        assert "a=fingerprint:" in offer_text and "a=setup:actpass" in offer_text
        assert "a=rtcp-mux" in offer_text and "a=ice-ufrag:" in offer_text
        candidates = [line for line in offer_text.splitlines() if line.startswith("a=candidate:")]
        assert candidates and all(" 127.0.0.1 " in c for c in candidates), candidates
        assert "a=crypto:" not in offer_text  # DTLS-SRTP only, no SDES keys in the signalling

        await answer_with_aiortc(w, incoming)
        await call.wait_answered(5)
        await until(lambda: w.node.service.get_agent(OP, "1001").state == "on_call", what="on_call")

        # the customer's side stays plain RTP from the relay
        answer_text = call.remote_sdp.to_bytes().decode() if call.remote_sdp is not None else ""
        assert call.remote_sdp is not None and call.remote_sdp.media[0].proto == "RTP/AVP", answer_text
        assert "a=fingerprint:" not in answer_text and "a=candidate:" not in answer_text
        connection = call.remote_sdp.media[0].connection or call.remote_sdp.connection
        assert connection is not None and connection.address == w.relay.host
        assert w.relay.port_min <= call.remote_sdp.media[0].port <= w.relay.port_max

        await until(lambda: w.pc.iceConnectionState in ("connected", "completed"), what="ICE with the relay")
        await until(lambda: w.pc.connectionState == "connected", what="DTLS with the relay")
        assert call.rtp is not None
        call.rtp.play_tone(CUSTOMER_HZ)
        assert await customer_hears(call, w.customer, WEBRTC_HZ) >= 0.9  # aiortc's SRTP -> relay -> plain RTP
        assert abs(await agent_hears(w.ear, CUSTOMER_HZ) - CUSTOMER_HZ) <= 3  # plain RTP -> relay -> SRTP
        assert w.node.switch.anchor.stats["media_failures"] == 0

        await call.hangup()
        await w.agent.wait_for(CallEnded, call=incoming.call, timeout=5)
        await until(lambda: w.node.live_legs == 0, what="legs gone")


async def test_a_blind_transfer_to_a_webrtc_agent_takes_its_offer_in_the_200_and_audio_flows_both_ways(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transfer target is invited without an offer (RFC 3725 flow I): the WebRTC agent's offer goes in its 200 OK
    (through the relay, plain RTP toward the customer), the relay's answer in the ACK; then each hears the other."""
    async with world(tmp_path, monkeypatch, ready=False) as w:  # 1002 takes the call first
        first = await agent_phone(w.node, "1002", answer="auto", media=True)
        try:
            call = await w.customer.call(did_uri(w.node), timeout=5)
            first_call = (await first.wait_for(IncomingCall, timeout=5)).call
            await first.wait_for(Established, call=first_call, timeout=5)
            assert call.rtp is not None and first_call.rtp is not None
            call.rtp.play_tone(CUSTOMER_HZ)
            first_call.rtp.play_tone(FIRST_AGENT_HZ)
            assert await customer_hears(call, w.customer, FIRST_AGENT_HZ) >= 0.9

            w.node.service.change_status(OP, "1001", "ready")
            w.node.service.transfer(OP, "1002", "1001")
            incoming = await w.agent.wait_for(IncomingCall, timeout=5)
            assert not incoming.request.body  # offer-less: the target offers

            pc, ear = w.pc, w.ear

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                w.tasks.append(asyncio.create_task(ear.run(track)))

            pc.addTrack(ToneTrack(WEBRTC_HZ))
            await pc.setLocalDescription(await pc.createOffer())
            await incoming.call.answer(sdp=pc.localDescription.sdp.encode())
            await w.agent.wait_for(Established, call=incoming.call, timeout=5)
            assert incoming.call.ack_body is not None
            answer_text = incoming.call.ack_body.decode()
            assert "UDP/TLS/RTP/SAVPF" in answer_text and "a=fingerprint:" in answer_text, answer_text
            await pc.setRemoteDescription(RTCSessionDescription(answer_text, "answer"))
            await first.wait_for(CallEnded, call=first_call, timeout=5)
            await until(lambda: w.node.service.get_agent(OP, "1001").state == "on_call", what="1001 on_call")

            await until(lambda: pc.connectionState == "connected", what="DTLS with the relay")
            assert await customer_hears(call, w.customer, WEBRTC_HZ) >= 0.9
            assert abs(await agent_hears(ear, CUSTOMER_HZ) - CUSTOMER_HZ) <= 3
            assert call.remote_sdp is not None and call.remote_sdp.media[0].proto == "RTP/AVP"
            assert w.node.switch.anchor.stats["media_failures"] == 0
            await call.hangup()
            await w.agent.wait_for(CallEnded, call=incoming.call, timeout=5)
        finally:
            await first.close()
