"""Transfers made on the agent's phone, on real calls: REFER (blind) with NOTIFY sipfrag progress, a failed REFER
that gives the customer back to the agent, REFER with Replaces after a consultation call, and REFERs refused
without anything moving."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentbox_world import DOMAIN, OP, AgentboxNode, until

from callbridge.phone import (
    CallEnded,
    CallError,
    Established,
    Held,
    IncomingCall,
    ReInviteReceived,
    Resumed,
    TransferDone,
    TransferProgress,
)

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]


async def test_blind_refer_from_the_agent_phone(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        target = await world.agent("1002", answer="auto", ring_delay=0.3)
        customer, call, agent_call = await world.talking(agent)
        conn_id = world.conn_id()

        assert await agent_call.refer(f"sip:1002@{DOMAIN}") == 202
        progress = [(await agent.wait_for(TransferProgress, call=agent_call, timeout=5)).status for _ in range(3)]
        assert progress == [100, 180, 200]
        assert (await agent.wait_for(TransferDone, call=agent_call, timeout=5)).succeeded
        assert (await customer.wait_for(Held, call=call, timeout=5)).direction == "sendonly"
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await target.wait_for(Established, call=target_call, timeout=5)
        ended = await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        assert ended.by == "remote"  # the engine released the agent after the target answered
        await until(lambda: call.remote_sdp is not None and call.remote_sdp.media[0].port == target.rtp_port,
                    what="customer re-INVITEd toward the target")
        assert call.remote_sdp is not None and call.remote_sdp.direction() == "sendrecv"
        assert target_call.remote_sdp is not None and target_call.remote_sdp.media[0].port == customer.rtp_port
        view = world.service.get_call(OP, conn_id)
        assert (view.agent, view.transfer_count, world.state("1002")) == ("1002", 1, "on_call")
        [record] = world.transfers(conn_id)
        assert (record.kind, record.target, record.outcome) == ("blind", "1002", "completed")
        assert world.node.switch.refers.stats["accepted"] == 1 and len(world.node.switch.refers) == 0
        await call.hangup()
        await until(lambda: world.node.live_legs == 0, what="legs released")


async def test_refer_to_a_busy_target_gives_the_customer_back(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        await world.agent("1002", answer="auto", auto_answer_status=486)
        customer, call, agent_call = await world.talking(agent)
        await agent_call.refer(f"sip:1002@{DOMAIN}")
        statuses = [(await agent.wait_for(TransferProgress, call=agent_call, timeout=5)).status for _ in range(2)]
        assert statuses == [100, 486]
        done = await agent.wait_for(TransferDone, call=agent_call, timeout=5)
        assert (done.status, done.succeeded) == (486, False)
        await customer.wait_for(Held, call=call, timeout=5)
        resumed = await customer.wait_for(Resumed, call=call, timeout=5)
        assert resumed.direction == "sendrecv"
        assert call.remote_sdp is not None and call.remote_sdp.media[0].port == agent.rtp_port
        assert not agent_call.ended and not call.ended and world.state("1001") == "on_call"
        await call.hangup()
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)


async def test_consultation_then_refer_with_replaces(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        target = await world.agent("1002", answer="auto")
        customer, call, agent_call = await world.talking(agent)
        conn_id = world.conn_id()
        host, port = world.node.sip_address
        await agent_call.hold()  # the phone holds the customer itself before consulting
        await customer.wait_for(Held, call=call, timeout=5)
        consult = await agent.call(f"sip:1002@{host}:{port}", timeout=5)
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await target.wait_for(Established, call=target_call, timeout=5)
        assert world.state("1002") == "on_call" and world.state("1001") == "on_call"

        assert await agent_call.refer(f"sip:1002@{DOMAIN}", replaces=consult) == 202
        done = await agent.wait_for(TransferDone, call=agent_call, timeout=5)
        assert done.succeeded
        ends = {(await agent.wait_for(CallEnded, timeout=5)).call for _ in range(2)}
        assert ends == {agent_call, consult}  # both of the agent's dialogs are released
        await target.wait_for(ReInviteReceived, call=target_call, timeout=5)
        await until(lambda: call.remote_sdp is not None and call.remote_sdp.media[0].port == target.rtp_port,
                    what="customer bridged with the consulted agent")
        await until(lambda: target_call.remote_sdp is not None
                    and target_call.remote_sdp.media[0].port == customer.rtp_port, what="target sees the customer")
        assert not target_call.ended and not call.ended
        view = world.service.get_call(OP, conn_id)
        assert (view.agent, view.transfer_count) == ("1002", 1)
        assert world.state("1002") == "on_call"
        await until(lambda: world.state("1001") == "ready", what="agent 1001 after the transfer")
        await target_call.hangup()
        await customer.wait_for(CallEnded, call=call, timeout=5)
        await until(lambda: world.node.live_legs == 0, what="legs released")


async def test_refers_refused_move_nothing(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        await world.agent("1003", ready=False)
        customer, call, agent_call = await world.talking(agent)
        sent = world.node.runtime.metrics()
        cases = [(f"sip:1003@{DOMAIN}", 480),  # logged in? registered but not ready: not available
                 (f"sip:1009@{DOMAIN}", 403),  # neither an agent nor a number the dial plan allows
                 ("sip:1002@192.0.2.10", 403),  # a foreign host: nothing is ever sent there
                 ("tel:+13105550199", 416)]
        for target, status in cases:
            with pytest.raises(CallError) as refused:
                await agent_call.refer(target)
            assert refused.value.status == status, target
        assert world.node.switch.refers.stats == {"accepted": 0, "refused": 4, "foreign_refer_to": 1}
        assert world.service.get_call(OP, world.conn_id()).state == "connected"
        assert world.transfers(world.conn_id()) == []
        after = world.node.runtime.metrics()
        assert after["policy_refused_total"] == sent["policy_refused_total"]
        with pytest.raises(TimeoutError):
            await customer.wait_for(Held, call=call, timeout=0.3)
        await call.hangup()
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
