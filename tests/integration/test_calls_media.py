"""Audio through callbridge with direct media (the B2BUA relays SDP; RTP flows between the phones), judged by
measurement: the customer and the agent hear each other's tone, the customer on hold stops sending (RFC 3264
§8.4) and resumes, and after a transfer the customer's stream follows the re-INVITE to the new agent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from callnode import OP, agent_phone, customer_phone, did_uri, start_node, until

from callbridge.phone import Established, Held, IncomingCall, Phone, Resumed

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]


async def listen(phone: Phone, seconds: float) -> tuple[float, float]:
    start = phone.now()
    await asyncio.sleep(seconds)
    return start + 0.15, phone.now()


async def test_customer_and_agents_hear_each_other_through_hold_and_transfer(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    agent = await agent_phone(node, "1001", answer="auto", media=True)
    customer = await customer_phone(media=True)
    target: Phone | None = None
    try:
        call = await customer.call(did_uri(node), timeout=5)
        agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
        await agent.wait_for(Established, call=agent_call, timeout=5)
        assert call.rtp is not None and agent_call.rtp is not None
        call.rtp.play_tone(1000)
        agent_call.rtp.play_tone(500)
        since, until_ = await listen(customer, 0.8)
        assert agent_call.rtp.heard(since, until_).share(1000, tolerance=3) >= 0.8
        assert call.rtp.heard(since, until_).share(500, tolerance=3) >= 0.8
        assert call.rtp.last_destination == agent_call.rtp.local_address  # direct media: phone to phone

        action = node.service.hold(OP, "1001").action_id
        await customer.wait_for(Held, call=call, timeout=5)
        await until(lambda: node.service.action_outcome(action) is not None, what="hold done")
        await asyncio.sleep(0.1)
        since, until_ = await listen(customer, 0.5)
        assert agent_call.rtp.packets_between(since, until_) == 0  # the held customer answered recvonly
        node.service.hold(OP, "1001")  # toggles back
        await customer.wait_for(Resumed, call=call, timeout=5)
        await asyncio.sleep(0.1)
        since, until_ = await listen(customer, 0.5)
        assert agent_call.rtp.heard(since, until_).share(1000, tolerance=3) >= 0.7

        target = await agent_phone(node, "1002", answer="auto", media=True)
        node.service.transfer(OP, "1001", "1002")
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await target.wait_for(Established, call=target_call, timeout=5)
        assert target_call.rtp is not None
        target_call.rtp.play_tone(1500)
        await until(lambda: call.rtp is not None and call.rtp.destination == target_call.rtp.local_address,
                    what="the customer's stream moved to the target")
        since, until_ = await listen(customer, 0.8)
        assert target_call.rtp.heard(since, until_).share(1000, tolerance=3) >= 0.8
        assert call.rtp.heard(since, until_).share(1500, tolerance=3) >= 0.8
        assert call.rtp.heard(since, until_).share(500) == 0.0  # the first agent is gone
        await call.hangup()
    finally:
        await customer.close()
        await agent.close()
        if target is not None:
            await target.close()
        await node.close()
