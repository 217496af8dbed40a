"""A flood from one source gets that source ignored for a while; the trunk (127.0.0.2) keeps making calls.

10,000 OPTIONS sent as fast as one socket can from 127.0.0.5 (a bounded count) push that address past the flood
limit (production default: more than 500 requests in a sliding second, Kamailio's pike) and it is banned: the
flooder hears at most the answers to the requests before the limit, then nothing, while SIPp's uac from the trunk's
inbound network (exempt, as trunks are in production) places its calls through the DID to three auto-answering
agents, during the flood and after it, every one completing. The ban is shortened to 5 s here (production: 300 s)
so the test can show it ending: after it, the same source is answered again.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))  # callnode: the call-flow node

from callnode import CUSTOMER_HOST, DID, agent_phone, start_node, until

from callbridge.b2bua.defence import DefenceConfig
from callbridge.phone import Phone
from peers.sipp import Sipp

# serial: a flood judged against a requests-per-second limit while the trunk's calls must all complete.
pytestmark = [pytest.mark.peers, pytest.mark.timeout(90), pytest.mark.serial]

FLOODER = "127.0.0.5"
FLOOD = 10_000
BAN_SECONDS = 5.0
CALLS = 40


def options(port: int, serial: int, target: tuple[str, int]) -> bytes:
    return (f"OPTIONS sip:{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {FLOODER}:{port};branch=z9hG4bKflood{serial};rport\r\n"
            f"From: <sip:flood@{FLOODER}>;tag=f{serial}\r\nTo: <sip:{target[0]}>\r\n"
            f"Call-ID: flood-{serial}@{FLOODER}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "User-Agent: flood-test\r\nContent-Length: 0\r\n\r\n").encode()


def flood(sock: socket.socket, target: tuple[str, int], count: int, first: int = 0) -> float:
    """Send `count` OPTIONS back to back (blocking socket); the seconds it took."""
    port = sock.getsockname()[1]
    started = time.perf_counter()
    for serial in range(first, first + count):
        sock.sendto(options(port, serial, target), target)
    return time.perf_counter() - started


def answers(sock: socket.socket, wait: float) -> list[bytes]:
    """Every datagram that arrives until `wait` seconds pass without one."""
    sock.settimeout(wait)
    got = []
    try:
        while True:
            got.append(sock.recv(65535))
    except TimeoutError:
        return got


async def test_flooder_is_banned_while_the_trunk_keeps_calling(tmp_path: Path) -> None:
    config = DefenceConfig(ban_seconds=BAN_SECONDS)
    assert (config.request_limit, config.request_window) == (500, 1.0)  # the production flood limit
    node = await start_node(tmp_path, defence=config)
    agents: list[Phone] = [await agent_phone(node, ext, answer="auto", history=0) for ext in ("1001", "1002", "1003")]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((FLOODER, 0))
    try:
        uac = Sipp("uac", remote=node.sip_address, host=CUSTOMER_HOST, service=DID, calls=CALLS, rate=10,
                   limit=3, timeout=40, workdir=tmp_path / "uac")
        calls = asyncio.create_task(uac.run_async())
        await asyncio.sleep(1.0)  # calls under way before the flood
        took = await asyncio.to_thread(flood, sock, node.sip_address, FLOOD)
        heard = await asyncio.to_thread(answers, sock, 1.0)
        defence = node.switch.defence
        assert defence.is_banned(FLOODER, node.switch.now())
        assert defence.metrics(node.switch.now())["bans_total"] == 1
        ok = [a for a in heard if a.startswith(b"SIP/2.0 200 ")]
        assert len(ok) == len(heard) and 1 <= len(ok) <= config.request_limit + 1, (len(heard), took)
        assert defence.dropped_banned >= FLOOD - len(heard) - 2_000  # the rest dropped unread (minus kernel drops)

        # banned: a single request is not answered
        await asyncio.to_thread(flood, sock, node.sip_address, 1, FLOOD)
        assert await asyncio.to_thread(answers, sock, 1.0) == []

        result = await calls
        assert result.returncode == 0, result.summary()
        assert (result.created, result.successful, result.failed) == (CALLS, CALLS, 0), result.summary()
        assert not defence.is_banned(CUSTOMER_HOST, node.switch.now())

        # the ban ends: answered again
        await until(lambda: not defence.is_banned(FLOODER, node.switch.now()), timeout=BAN_SECONDS + 2,
                    what="the ban to end")
        await asyncio.to_thread(flood, sock, node.sip_address, 1, FLOOD + 1)
        [again] = await asyncio.to_thread(answers, sock, 1.0)
        assert again.startswith(b"SIP/2.0 200 ")
        await until(lambda: node.live_legs == 0, timeout=10, what="calls ended")
    finally:
        sock.close()
        for phone in agents:
            await phone.close()
        await node.close()
