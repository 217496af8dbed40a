"""Calls through the B2BUA at 10 % loss: SIPp as the carrier (from 127.0.0.2, the trunk's inbound network) calls
the DID; callbridge.phone agents answer. Two kinds of loss on the carrier's side:

- ``sipp-lost``: SIPp drops 10 % of its own sends (``scenarios/uac_lost10.xml``, ``lost="10"``);
- ``relay``: the project's lossy relay sits in front of callbridge and drops 10 % of the datagrams each way,
  seeded (``lossy_relay``, beside this test; its server-side sockets are on 127.0.0.2, so callbridge still sees
  the carrier's network).

At least 99.9 % of the calls complete (all of them in the CI form of 300 calls), every completed call has its CDR,
and once the timers have run (the last BYE's server transaction lives 64*T1 = 32 s on UDP, Timer J) the gauges on
/metrics read zero: no dialog, transaction or B2BUA leg is left behind. The agents' side is loss-free.

Longer form (3,000 calls each way, about 6 minutes):
    RELIABILITY_CALLBRIDGE_LOSS_CALLS=3000 .venv/bin/python -m pytest tests/reliability/test_loss_through_callbridge.py
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))  # callnode: the call-flow node

from callnode import CUSTOMER_HOST, DID, OP, agent_phone, cdrs, operation_doc, start_node, until
from lossy_relay import LossyRelay

from callbridge.bootstrap import Node
from callbridge.phone import Phone
from peers.sipp import Sipp

CALLS = int(os.environ.get("RELIABILITY_CALLBRIDGE_LOSS_CALLS", "300"))
RATE = 20.0                 # calls per second
CONCURRENT = 8              # SIPp's -l: never more calls up than agents free
AGENTS = tuple(str(1001 + i) for i in range(12))
SEED = 42
SIPP_TIMEOUT = CALLS / RATE + 60
DRAIN_TIMEOUT = 45.0        # Timer J (32 s) after the last BYE, and slack
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
GAUGES = ("callbridge_sip_dialogs", "callbridge_sip_transactions", "callbridge_b2bua_legs")

# serial: a call load whose loss must be the relay's alone, not a busy core's (scripts/test).
pytestmark = [pytest.mark.peers, pytest.mark.timeout(int(SIPP_TIMEOUT + DRAIN_TIMEOUT + 120)), pytest.mark.serial]


async def gauges(client: httpx.AsyncClient) -> dict[str, float]:
    """The values of GAUGES, read from /metrics as a scraper would."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    found = {}
    for name in GAUGES:
        match = re.search(rf"^{name} (\S+)$", response.text, re.MULTILINE)
        assert match is not None, f"{name} missing from /metrics"
        found[name] = float(match.group(1))
    return found


async def wait_for_zero(node: Node, client: httpx.AsyncClient) -> dict[str, float]:
    deadline = asyncio.get_running_loop().time() + DRAIN_TIMEOUT
    while True:
        values = await gauges(client)
        if not any(values.values()) or asyncio.get_running_loop().time() > deadline:
            return values
        await asyncio.sleep(0.5)


@pytest.mark.parametrize("loss", ["sipp-lost", "relay"])
async def test_calls_complete_at_ten_percent_loss_and_leave_nothing_behind(tmp_path: Path, loss: str) -> None:
    doc = operation_doc(agents=AGENTS, ring_timeout=10.0, max_wait=20.0)
    node = await start_node(tmp_path, doc=doc)
    agents: list[Phone] = []
    relay: LossyRelay | None = None
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app), base_url="http://callbridge")
    try:
        agents = [await agent_phone(node, ext, answer="auto", history=0) for ext in AGENTS]
        if loss == "relay":
            relay = await LossyRelay(("127.0.0.1", 0), node.sip_address, loss_to_server=0.1, loss_to_client=0.1,
                                     seed=SEED, duration=SIPP_TIMEOUT + 30, back_host=CUSTOMER_HOST).start()
            scenario, remote, host = SCENARIOS / "uac_loss_tolerant.xml", relay.address, "127.0.0.1"
        else:
            scenario, remote, host = SCENARIOS / "uac_lost10.xml", node.sip_address, CUSTOMER_HOST
        uac = await Sipp(scenario, remote=remote, host=host, service=DID, calls=CALLS, rate=RATE,
                         limit=CONCURRENT, timeout=SIPP_TIMEOUT, workdir=tmp_path / "uac").run_async()
        values = await wait_for_zero(node, client)
        await until(lambda: all(node.service.get_agent(OP, e).state == "ready" for e in AGENTS), timeout=10,
                    what="every agent ready again")
    finally:
        if relay is not None:
            relay.close()
        for phone in agents:
            await phone.close()
        await client.aclose()
        await node.close()
    need = math.ceil(CALLS * 0.999)
    print(f"{loss}: {uac.successful}/{CALLS} calls completed, {uac.failed} failed, {uac.retransmissions} SIPp "
          f"retransmissions, {uac.elapsed:.1f} s; relay {relay.counts if relay else '-'}; gauges {values}")
    assert uac.created == CALLS, uac.summary()
    assert uac.successful >= need, uac.summary()
    assert uac.retransmissions > 0, uac.summary()  # the loss happened and was recovered from
    if relay is not None:
        for direction in (relay.counts.to_server, relay.counts.to_client):
            assert 0.07 <= direction.dropped / (direction.forwarded + direction.dropped) <= 0.13, relay.counts
    assert values == dict.fromkeys(GAUGES, 0.0), values
    rows = await asyncio.to_thread(cdrs, node)
    answered = [row for row in rows if row["answered_at"] is not None]
    assert len(answered) >= uac.successful, (len(rows), len(answered), uac.summary())
