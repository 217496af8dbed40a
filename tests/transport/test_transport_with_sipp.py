"""The runtime carrying the real SIP endpoint against SIPp, over UDP and over TCP (a real peer framing a stream).

The consumer here answers every new request 200 at once: just enough of a TU to complete SIPp's built-in uac call
flow (INVITE, 200, ACK, BYE, 200); the phone has its own tests."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from callbridge.sip import TimerConfig
from callbridge.sip.endpoint import Endpoint
from callbridge.sip.events import Event, RequestReceived
from callbridge.transport import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests/`: the real-peer harness package `peers`

from peers.ports import free_port
from peers.sipp import Sipp

pytestmark = pytest.mark.peers

SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


@pytest.mark.parametrize(("sipp_transport", "transport"), [("u1", "udp"), ("t1", "tcp")])
async def test_sipp_calls_through_the_runtime(tmp_path: Path, sipp_transport: str, transport: str) -> None:
    port = free_port()
    endpoint = Endpoint("127.0.0.1", port, TimerConfig(), random.Random(7))
    runtime: Runtime

    def answer(event: Event) -> None:
        if isinstance(event, RequestReceived):
            if event.request.method == "INVITE":
                endpoint.respond(event.transaction, 200, runtime.now(), body=SDP, content_type="application/sdp")
            else:
                endpoint.respond(event.transaction, 200, runtime.now())

    runtime = Runtime(endpoint, on_event=answer)
    try:
        await runtime.listen_udp("127.0.0.1", port)
        await runtime.listen_tcp("127.0.0.1", port)
        result = await Sipp("uac", transport=sipp_transport, remote=("127.0.0.1", port), calls=50, rate=100,
                            timeout=30, workdir=tmp_path).run_async()
        assert (result.successful, result.failed) == (50, 0), result.summary()
        metrics = runtime.metrics()
        assert metrics["datagrams_in"] == 150  # INVITE, ACK, BYE per call, no retransmission on loopback
        assert metrics["datagrams_out"] >= 150  # 100 (sent by the endpoint), 200 INVITE, 200 BYE
        assert metrics["policy_refused_total"] == 0
        assert metrics["stream_framing_errors"] == 0
        if transport == "tcp":
            assert metrics["tcp_accepted"] == 1  # SIPp t1: every call on one connection
        assert endpoint.dialog_count == 0
    finally:
        await runtime.close()
