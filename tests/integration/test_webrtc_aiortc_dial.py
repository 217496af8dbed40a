"""A WebRTC agent (aiortc behind callbridge.phone over SIP WebSocket, as in test_webrtc_aiortc.py) placing api=dial on
an anchored operation: its phone is rung first without an offer and offers WebRTC in its 200, the relay parks it
(the ACK carries the relay's WebRTC answer: DTLS-SRTP and ICE with the relay start at once), the customer is called
at the trunk's gateway with plain RTP, and once the customer answers the agent is re-INVITEd with the relay's answer
as the session's next version. Audio is measured both ways.

callbridge.phone's call is given aiortc's SDP to answer the re-INVITE with (`Call.answer_offers`), and the test hands
the re-INVITE's offer to aiortc (what a browser's SIP stack does with its one peer connection). The relay does not
need that answer: the agent's address and DTLS stay those of its first offer."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

pytest.importorskip("aiortc")

import aioice.ice  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import MediaStreamTrack  # noqa: E402
from callnode import DOMAIN, GATEWAY_HOST, OP, load, operation_doc, until  # noqa: E402
from test_webrtc_aiortc import CUSTOMER_HZ, WEBRTC_HZ, Ear, ToneTrack, agent_hears, customer_hears  # noqa: E402

from callbridge.bootstrap import bootstrap  # noqa: E402
from callbridge.config import Settings  # noqa: E402
from callbridge.phone import Established, IncomingCall, Phone, ReInviteReceived  # noqa: E402
from callbridge.sip.sdp import SessionDescription  # noqa: E402
from peers.ports import free_port  # noqa: E402
from peers.rtpengine import Rtpengine  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]


async def test_a_webrtc_agent_places_a_dial_and_audio_flows_both_ways_through_the_relay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    gateway_port = free_port(GATEWAY_HOST, udp=True, tcp=False)
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    await asyncio.to_thread(load, url, operation_doc(gateway_port=gateway_port))
    tasks: list[asyncio.Task[None]] = []
    with Rtpengine(workdir=tmp_path / "rtpengine") as relay:
        node = await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                        sip_ws_port=0, rtpengine=(f"udp:{relay.host}:{relay.ng_port}",)))
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        phones: list[Phone] = []
        try:
            await until(lambda: node.switch.anchor.media is not None and node.switch.anchor.media.available(),
                        what="the relay up")
            assert node.sip_ws_address is not None
            agent = await Phone.start(host="127.0.0.1", transport="ws", user="1001", domain=DOMAIN,
                                      password="secret-1001", name="webrtc-1001", answer="manual")
            phones.append(agent)
            await agent.register(node.sip_ws_address, expires=300)
            await until(lambda: node.service.get_agent(OP, "1001").registered, what="1001 registered")
            node.service.change_status(OP, "1001", "ready")
            gateway = await Phone.start(host=GATEWAY_HOST, port=gateway_port, user="gateway", name="gateway",
                                        media=True, answer="auto")
            phones.append(gateway)

            conn_id = node.service.dial(OP, "1001", "3105550123")
            incoming = await agent.wait_for(IncomingCall, timeout=5)
            assert not incoming.request.body  # rung first, without an offer (RFC 3725 flow III)
            ear = Ear()

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                tasks.append(asyncio.create_task(ear.run(track)))

            pc.addTrack(ToneTrack(WEBRTC_HZ))
            await pc.setLocalDescription(await pc.createOffer())
            await incoming.call.answer(sdp=pc.localDescription.sdp.encode())
            await agent.wait_for(Established, call=incoming.call, timeout=5)
            # parked on the relay: its WebRTC answer, no media toward anyone yet
            assert incoming.call.ack_body is not None
            parked = incoming.call.ack_body.decode()
            assert "UDP/TLS/RTP/SAVPF" in parked and "a=fingerprint:" in parked, parked
            await pc.setRemoteDescription(RTCSessionDescription(parked, "answer"))
            # the 2xx to the re-INVITE: aiortc's session as it stands (the relay keeps the agent's first offer's
            # address and DTLS, so it needs nothing new from it); aiortc itself takes the offer below
            local = pc.localDescription.sdp.replace("a=setup:actpass", "a=setup:passive").encode()
            incoming.call.answer_offers = lambda offer: local

            customer_call = (await gateway.wait_for(IncomingCall, timeout=5)).call
            await gateway.wait_for(Established, call=customer_call, timeout=5)
            assert customer_call.remote_sdp is not None and customer_call.remote_sdp.media[0].proto == "RTP/AVP"
            customer_text = customer_call.remote_sdp.to_bytes().decode()
            assert "a=fingerprint:" not in customer_text and "a=candidate:" not in customer_text
            connection = customer_call.remote_sdp.media[0].connection or customer_call.remote_sdp.connection
            assert connection is not None and connection.address == relay.host
            assert customer_call.rtp is not None
            customer_call.rtp.play_tone(CUSTOMER_HZ)

            reinvite = await agent.wait_for(ReInviteReceived, call=incoming.call, timeout=5)
            offer = reinvite.request.body.decode()
            assert SessionDescription.parse(reinvite.request.body).media[0].proto == "UDP/TLS/RTP/SAVPF", offer
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())

            await until(lambda: pc.connectionState == "connected", what="DTLS with the relay")
            assert await customer_hears(customer_call, gateway, WEBRTC_HZ) >= 0.9  # SRTP -> relay -> plain RTP
            assert abs(await agent_hears(ear, CUSTOMER_HZ) - CUSTOMER_HZ) <= 3  # plain RTP -> relay -> SRTP
            assert node.switch.anchor.anchored(conn_id) and node.switch.anchor.stats["media_failures"] == 0

            await customer_call.hangup()
            await until(lambda: node.live_legs == 0 and not node.switch.anchor.calls, what="the call over")
        finally:
            await pc.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for phone in phones:
                await phone.close()
            await node.close()
