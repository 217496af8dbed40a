"""`callbridge serve` as a subprocess (the shipped command, its destination policy given on the command line as
loopback only) takes the 50 RFC 4475 messages over UDP and over TCP and keeps serving: after each one an OPTIONS
ping is answered 200, nothing ever reaches the sending sockets (responses go to the rewritten sent-by, see
``torture_wire``), the policy refusal counter on the real /metrics stays 0, and SIGTERM ends it with status 0.
Each message's own answer is judged by test_torture_over_the_wire.py (in-process, same table)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from torture_wire import load, load_cases, rewrite_top_via, status_of, udp_inbox

from peers.ports import free_port

pytestmark = pytest.mark.timeout(180)
CALLBRIDGE = Path(sys.executable).with_name("callbridge")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[tuple[str, int], str]]:
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    load(url)
    sip_port, http_port = free_port(), free_port(tcp=True, udp=False)
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (closed below, after the process)
    proc = subprocess.Popen(
        [str(CALLBRIDGE), "serve", "--sip-host", "127.0.0.1", "--sip-port", str(sip_port), "--http-host",
         "127.0.0.1", "--http-port", str(http_port), "--database-url", url, "--allowed-networks",
         "127.0.0.0/8,::1/128", "--node-id", "torture", "--drain-seconds", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "CALLBRIDGE_LOG_LEVEL": "WARNING"})
    base = f"http://127.0.0.1:{http_port}"
    try:
        # Bounded by time, not by a count of tries: a loaded machine (the suite's other servers, SIPp) may take
        # well over the usual second to start Python and migrate the database.
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            if time.monotonic() > deadline:
                pytest.fail("callbridge serve did not become healthy within 60 s")
            time.sleep(0.05)
        yield ("127.0.0.1", sip_port), base
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def options_ping(host: str, port: int) -> bytes:
    call_id = uuid.uuid4().hex
    return (f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{call_id}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:ping@{host}>;tag=1\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


async def test_serve_keeps_serving_through_the_corpus(served: tuple[tuple[str, int], str]) -> None:
    server, base = served
    cases = load_cases()
    prober = await udp_inbox("127.0.0.5")
    try:
        for i, case in enumerate(cases):
            for transport in ("udp", "tcp"):
                source = f"127.0.{3 if transport == 'udp' else 4}.{i + 1}"
                listener, sender = await udp_inbox(source), await udp_inbox(source)
                data = rewrite_top_via(case.data, source, listener.port)
                if transport == "udp":
                    assert sender.transport is not None
                    sender.transport.sendto(data, server)
                    await listener.collect(0.1)
                else:
                    reader, writer = await asyncio.open_connection(*server, local_addr=(source, 0))
                    writer.write(data)
                    try:
                        await asyncio.wait_for(reader.read(65536), 0.1)
                    except TimeoutError:
                        pass
                    writer.close()
                rport = b";rport" in data.split(b"\r\n\r\n", 1)[0]
                assert rport or await sender.collect(0.02) == [], f"{case.name}/{transport}: answered the source"
                listener.close()
                sender.close()
                assert prober.transport is not None
                prober.transport.sendto(options_ping("127.0.0.5", prober.port), server)
                pong = await asyncio.wait_for(prober.queue.get(), 10.0)  # whether it answers, not how fast
                assert status_of(pong) == 200, f"after {case.name}/{transport}: {pong!r}"
        async with httpx.AsyncClient(base_url=base) as http:
            metrics = (await http.get("/metrics")).text
        refused = re.search(r'^callbridge_transport_total\{counter="policy_refused_total"\} (\d+)', metrics,
                            re.MULTILINE)
        assert refused is not None and refused.group(1) == "0", metrics
    finally:
        prober.close()
