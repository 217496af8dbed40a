"""The defences on a running node, from bare sockets on loopback: a scanner's User-Agent gets no answer at all and
is counted; a source that keeps failing (REGISTERs refused 400 here) is banned and then ignored, while the trunk's
address (exempt, failing just as much) and another ordinary source go on being answered; the ban ends on time.
Silence is asserted over a bounded wait, after the same socket showed it does get answers otherwise."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from callnode import CUSTOMER_HOST, start_node
from rawsip import RawSip

from callbridge.b2bua.defence import DefenceConfig
from callbridge.bootstrap import Node

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]
SILENCE = 1.0  # seconds without an answer that count as "nothing came back"
FAILING = {"to": "tel:+15550100"}  # a REGISTER whose To is not a SIP URI: 400, a failure toward a ban


async def defence_metrics(node: Node) -> dict[str, float]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app), base_url="http://node") as client:
        text = (await client.get("/metrics")).text
    out = {}
    for line in text.splitlines():
        if line.startswith("callbridge_defence_total{"):  # counters, by label
            name, value = line.rsplit(" ", 1)
            out[name.split('"')[1]] = float(value)
        elif line.startswith("callbridge_defence_banned "):  # a gauge: addresses banned now
            out["banned_now"] = float(line.rsplit(" ", 1)[1])
    return out


async def test_a_scanner_gets_nothing_back_and_is_counted(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    probe = RawSip("127.0.0.7", node.sip_address)
    try:
        answered = await probe.ask("OPTIONS", user_agent="callbridge-test")
        assert answered is not None and answered.status == 200  # this socket is answered when not a scanner
        assert (await defence_metrics(node))["dropped_scanner"] == 0
        assert await probe.ask("OPTIONS", user_agent="friendly-scanner", wait=SILENCE) is None
        assert await probe.ask("REGISTER", user_agent="SIPVicious 0.3", wait=SILENCE) is None
        assert (await defence_metrics(node))["dropped_scanner"] == 2
        assert node.endpoint.transaction_count <= 1  # the first OPTIONS' transaction at most: nothing was parsed
    finally:
        probe.close()
        await node.close()


async def test_a_failing_source_is_banned_others_are_served_and_the_ban_ends(tmp_path: Path) -> None:
    config = DefenceConfig(failure_limit=5, failure_window=30.0, ban_seconds=4.0)
    node = await start_node(tmp_path, defence=config)
    attacker = RawSip("127.0.0.5", node.sip_address)
    trunk = RawSip(CUSTOMER_HOST, node.sip_address)  # 127.0.0.2, the trunk's inbound network: exempt
    neighbour = RawSip("127.0.0.6", node.sip_address)
    try:
        statuses = [getattr(await attacker.ask("REGISTER", **FAILING), "status", None) for _ in range(5)]
        assert statuses == [400] * 5  # at the limit, still answered
        sixth = await attacker.ask("REGISTER", **FAILING)
        assert sixth is not None and sixth.status == 400  # answered, and past the limit: banned now
        started = asyncio.get_running_loop().time()
        assert await attacker.ask("OPTIONS", wait=SILENCE) is None
        assert await attacker.ask("REGISTER", **FAILING, wait=SILENCE) is None
        seen = await defence_metrics(node)
        assert (seen["bans"], seen["banned_now"], seen["dropped_banned"]) == (1, 1, 2)

        for _ in range(8):  # the trunk fails as often and stays answered
            refused = await trunk.ask("REGISTER", **FAILING)
            assert refused is not None and refused.status == 400
        for _ in range(3):
            ok = await neighbour.ask("OPTIONS")
            assert ok is not None and ok.status == 200
        assert (await defence_metrics(node))["bans"] == 1

        left = config.ban_seconds - (asyncio.get_running_loop().time() - started)
        await asyncio.sleep(max(0.0, left) + 0.2)
        back = await attacker.ask("OPTIONS")
        assert back is not None and back.status == 200  # the ban is over
        assert (await defence_metrics(node))["banned_now"] == 0
    finally:
        for sock in (attacker, trunk, neighbour):
            sock.close()
        await node.close()
