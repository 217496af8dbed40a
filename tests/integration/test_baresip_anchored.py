"""baresip (Debian's baresip-core, headless, over ctrl_tcp) as the agent of an anchored call, through a real
userspace rtpengine: baresip's RTP is established with the relay (CALL_RTPESTAB, and the media address callbridge
gave it is the relay's), and the customer (`callbridge.phone` with real RTP) hears the tone of baresip's audio file,
measured by frequency; baresip's ``aufile`` source plays a WAV written for the test."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from callnode import DOMAIN, OP, customer_phone, did_uri, load, operation_doc, until  # noqa: E402

from callbridge.b2bua.legs import SipLeg  # noqa: E402
from callbridge.bootstrap import Node, bootstrap  # noqa: E402
from callbridge.config import Settings  # noqa: E402
from callbridge.phone.listen import Heard  # noqa: E402
from callbridge.sip.sdp import SessionDescription  # noqa: E402
from peers.baresip import Baresip  # noqa: E402
from peers.rtpengine import Rtpengine  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

BARESIP_HZ = 1200.0  # the tone in baresip's audio file
CUSTOMER_HZ = 700.0


def tones(heard: Heard) -> set[int]:
    return {int(round(w.hz / 25.0) * 25) for w in heard.windows if w.hz is not None and w.dbfs > -50}


async def test_baresip_as_an_anchored_agent_talks_through_the_relay_and_the_customer_hears_its_file(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    await asyncio.to_thread(load, url, operation_doc())
    with Rtpengine(workdir=tmp_path / "rtpengine") as relay:
        node = await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                        rtpengine=(f"udp:{relay.host}:{relay.ng_port}",)))
        host, port = node.sip_address
        account = (f"<sip:1001@{DOMAIN}>;auth_pass=secret-1001;outbound=\"sip:{host}:{port}\""
                   f";regint=300;answermode=auto")
        phone = Baresip(user="1001", accounts=[account], workdir=tmp_path / "baresip", tone_hz=BARESIP_HZ,
                        wav_seconds=60)
        customer = None
        try:
            await until(lambda: node.switch.anchor.media is not None and node.switch.anchor.media.available(),
                        what="the relay up")
            await phone.start()
            await until(lambda: node.service.get_agent(OP, "1001").registered, timeout=10, what="baresip registered")
            node.service.change_status(OP, "1001", "ready")
            customer = await customer_phone(media=True)
            call = await customer.call(did_uri(node), timeout=10)
            assert call.rtp is not None
            call.rtp.play_tone(CUSTOMER_HZ)
            await phone.wait_event("CALL_ESTABLISHED")
            rtpestab = await phone.wait_event("CALL_RTPESTAB", timeout=5)
            assert (rtpestab["param"], rtpestab["direction"]) == ("audio", "incoming")
            conn_id = node.service.get_agent(OP, "1001").conn_id
            assert conn_id is not None and node.switch.anchor.anchored(conn_id)
            # what baresip's RTP was established with (its log line of the same moment as CALL_RTPESTAB): the
            # relay's port that callbridge's SDP gave it, never the customer's own address
            [source] = re.findall(r"incoming rtp for 'audio' established, receiving from ([0-9.]+):(\d+)", phone.log())
            given = SessionDescription.parse(agent_leg(node, conn_id).sent_sdp)
            given_connection = given.media[0].connection or given.connection
            assert given_connection is not None
            assert (source[0], int(source[1])) == (given_connection.address, given.media[0].port)
            assert source[0] == relay.host and relay.port_min <= int(source[1]) <= relay.port_max, source

            await asyncio.sleep(0.3)
            start = customer.now()
            await asyncio.sleep(1.5)
            heard = call.rtp.heard(start, customer.now())
            assert heard.share(BARESIP_HZ, tolerance=3) >= 0.9, str(heard)
            assert tones(heard) == {int(BARESIP_HZ)}, str(heard)
            # both parties' RTP went through the relay
            media = node.switch.anchor.media
            assert media is not None
            packets = await media.packets(conn_id)
            assert packets[agent_leg(node, conn_id).leg_id] > 50 and packets[node.switch.anchor.calls[conn_id]] > 50

            await call.hangup()
            await phone.wait_event("CALL_CLOSED")
            await until(lambda: node.live_legs == 0 and not node.switch.anchor.calls, what="legs released")
            assert node.switch.anchor.stats["media_failures"] == 0
        finally:
            if customer is not None:
                await customer.close()
            await phone.aclose()
            await node.close()


def agent_leg(node: Node, conn_id: str) -> SipLeg:
    [leg] = [leg for leg in node.switch.legs if leg.conn_id == conn_id and leg.agent == "1001"]
    return leg
