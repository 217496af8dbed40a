"""A supervisor listening to a call (docs/operations.md, "A supervisor listens"), through a real userspace rtpengine
10.5 and real SIP between callbridge.phone phones on loopback, measured by tone frequency: the supervisor's phone
hears the customer (700 Hz) and the agent (1200 Hz), as two RTP sources on the one port it answered with (10.5
cannot mix them), and neither party hears what the supervisor's phone sends (1500 Hz); after `stop_monitor` the
supervisor's phone is hung up and the parties still hear each other. The call's history and events say who
listened and when."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from callnode import OP, agent_phone, customer_phone, did_uri, load, operation_doc, until  # noqa: E402

from callbridge.bootstrap import bootstrap  # noqa: E402
from callbridge.config import Settings  # noqa: E402
from callbridge.media.audio import tone_samples  # noqa: E402
from callbridge.media.g711 import ulaw_encode  # noqa: E402
from callbridge.media.rtp_packet import build  # noqa: E402
from callbridge.phone import CallEnded, Established, IncomingCall, Phone  # noqa: E402
from callbridge.phone.listen import Heard  # noqa: E402
from peers.rtpengine import Rtpengine  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

CUSTOMER_HZ, AGENT_HZ, SUPERVISOR_HZ = 700.0, 1200.0, 1500.0


def tones(heard: Heard) -> set[int]:
    return {int(round(w.hz / 25.0) * 25) for w in heard.windows if w.hz is not None and w.dbfs > -50}


def only(heard: Heard, hz: float) -> None:
    """`hz` and nothing else (a window may be lost at an end of the range under load: 0.85, not 0.9)."""
    assert heard.share(hz, tolerance=3) >= 0.85 and tones(heard) == {int(hz)}, str(heard)


async def send_tone(sock: object, dest: tuple[str, int], hz: float, seconds: float) -> None:
    """RTP (PCMU) of `hz` from the supervisor phone's own RTP socket to `dest`, whatever its SDP said."""
    samples = tone_samples((hz,), -12.0, int(seconds * 8000))
    for i in range(len(samples) // 160):
        payload = ulaw_encode(samples[i * 160:(i + 1) * 160])
        sock.sendto(build(0, 1000 + i, 160 * i, 0x5EED, payload), dest)  # type: ignore[attr-defined]
        await asyncio.sleep(0.02)


async def test_a_supervisor_hears_both_parties_and_neither_hears_the_supervisor(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    await asyncio.to_thread(load, url, operation_doc())
    with Rtpengine(workdir=tmp_path / "rtpengine") as relay:
        node = await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                        rtpengine=(f"udp:{relay.host}:{relay.ng_port}",)))
        phones: list[Phone] = []
        try:
            await until(lambda: node.switch.anchor.media is not None and node.switch.anchor.media.available(),
                        what="the relay up")
            agent = await agent_phone(node, "1001", answer="auto", media=True)
            supervisor = await agent_phone(node, "1003", ready=False, answer="manual", media=True)
            customer = await customer_phone(media=True)
            phones += [agent, supervisor, customer]
            call = await customer.call(did_uri(node), timeout=5)
            agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
            await agent.wait_for(Established, call=agent_call, timeout=5)
            assert call.rtp is not None and agent_call.rtp is not None
            call.rtp.play_tone(CUSTOMER_HZ)
            agent_call.rtp.play_tone(AGENT_HZ)
            conn_id = node.service.get_agent(OP, "1001").conn_id
            assert conn_id is not None

            view = node.service.start_monitor(OP, conn_id, "1003")
            assert view.state == "ringing"
            listen = (await supervisor.wait_for(IncomingCall, timeout=5)).call
            offer = listen.remote_sdp
            assert offer is not None and len(offer.media) == 1  # one stream offered: a phone plays one
            assert offer.direction(offer.media[0]) == "sendonly"
            await listen.answer()
            await supervisor.wait_for(Established, call=listen, timeout=5)
            await until(lambda: node.service.monitor_state(OP, conn_id).state == "listening", what="listening")
            assert listen.rtp is not None
            relay_port = offer.media[0].port
            relay_host = offer.connection_for(0)
            assert relay_host is not None

            await asyncio.sleep(0.4)
            start = supervisor.now()
            sending = asyncio.create_task(send_tone(listen.rtp.socket, (relay_host.address, relay_port),
                                                    SUPERVISOR_HZ, 1.6))
            await asyncio.sleep(1.2)
            end = supervisor.now()
            # the supervisor: two sources on its one port, the customer's tone and the agent's, each alone
            # (sources heard in the range only: the first packets after the subscription are not judged)
            heard = [h for h in (listen.rtp.heard_from(ssrc, start, end) for ssrc in listen.rtp.sources) if h.windows]
            assert len(heard) == 2, {ssrc: str(listen.rtp.heard_from(ssrc, start, end)) for ssrc in listen.rtp.sources}
            assert sorted(h.dominant_hz and int(round(h.dominant_hz / 25.0) * 25) for h in heard) == [
                int(CUSTOMER_HZ), int(AGENT_HZ)], [str(h) for h in heard]
            for h in heard:
                only(h, float(int(round((h.dominant_hz or 0) / 25.0) * 25)))
            # the parties hear each other only, while the supervisor's phone sends
            only(call.rtp.heard(customer.now() - 1.0, customer.now()), AGENT_HZ)
            only(agent_call.rtp.heard(agent.now() - 1.0, agent.now()), CUSTOMER_HZ)
            await sending

            stopped = node.service.stop_monitor(OP, conn_id)
            assert (stopped.state, stopped.reason) == ("ended", "stopped")
            await supervisor.wait_for(CallEnded, call=listen, timeout=5)
            await asyncio.sleep(0.5)
            only(call.rtp.heard(customer.now() - 0.4, customer.now()), AGENT_HZ)
            only(agent_call.rtp.heard(agent.now() - 0.4, agent.now()), CUSTOMER_HZ)
            history = [(what, detail) for _, what, detail in node.service.get_call(OP, conn_id).history]
            assert [h for h in history if h[0].startswith("monitor")] == [
                ("monitor_requested", "1003"), ("monitor_started", "1003"), ("monitor_ended", "1003 stopped")]
            wire = [(e.type, e.data) for e in node.events.since(OP, 0) if e.type.startswith("call.monitor")]
            assert [(t, d["supervisor"], d["monitor_id"]) for t, d in wire] == [
                ("call.monitor_started", "1003", view.monitor_id), ("call.monitor_ended", "1003", view.monitor_id)]
            assert wire[1][1]["reason"] == "stopped" and wire[1][1]["started_at"] == wire[0][1]["started_at"]
            assert node.switch.anchor.stats["media_failures"] == 0
        finally:
            for phone in phones:
                await phone.close()
            await node.close()
