"""Call flows through callbridge driven by SIPp custom scenarios (scenarios/b2bua_customer_*.xml) as the trunk's
customer, from the trunk's inbound network: a call answered by the agent, held from callbridge (the re-INVITE must
offer sendonly, checked by SIPp) and ended with the customer's BYE; and a call CANCELled while the agent's phone
rings. The agent's side, the records and the node's tables are checked here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from callnode import CUSTOMER_HOST, DID, OP, agent_phone, cdrs, dialog_rows, start_node, state_history, until

from callbridge.phone import CallEnded, IncomingCall
from peers.sipp import Sipp

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def customer(tmp_path: Path, scenario: str, node_address: tuple[str, int]) -> Sipp:
    return Sipp(SCENARIOS / scenario, remote=node_address, host=CUSTOMER_HOST, service=DID, calls=1, timeout=25,
                workdir=tmp_path / "customer")


async def test_sipp_customer_answered_held_and_hangs_up(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    agent = await agent_phone(node, "1001", answer="auto")
    uac = customer(tmp_path, "b2bua_customer_hold_bye.xml", node.sip_address).start()
    try:
        offered = await agent.wait_for(IncomingCall, timeout=10)
        await until(lambda: node.service.get_agent(OP, "1001").state == "on_call", what="on_call")
        ticket = node.service.hold(OP, "1001")  # callbridge's re-INVITE to the customer
        await until(lambda: node.service.action_outcome(ticket.action_id) is not None, what="hold done")
        assert type(node.service.action_outcome(ticket.action_id)).__name__ == "ActionCompleted"
        ended = await agent.wait_for(CallEnded, call=offered.call, timeout=10)
        assert (ended.reason, ended.by) == ("bye", "remote")
        result = await uac.wait_async()
        assert result.returncode == 0, result.summary()
        assert (result.successful, result.failed) == (1, 0), result.summary()
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0, what="tables empty")
        await until(lambda: node.service.get_agent(OP, "1001").state == "ready", what="agent ready")
    finally:
        uac.stop()
        await agent.close()
        await node.close()
    [cdr] = await asyncio.to_thread(cdrs, node)
    assert (cdr["hangup_by"], cdr["customer_number"], cdr["agents"]) == ("customer", "3105550000", ["1001"])
    assert cdr["answered_at"] is not None and dialog_rows(node) == 0
    assert [s for s, _ in state_history(node, "1001")] == ["ready", "ringing", "on_call", "acw", "ready"]


async def test_sipp_customer_cancels_while_the_agent_rings(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    agent = await agent_phone(node, "1001")
    uac = customer(tmp_path, "b2bua_customer_cancel.xml", node.sip_address).start()
    try:
        offered = await agent.wait_for(IncomingCall, timeout=10)
        await offered.call.ring()  # relayed as 180: SIPp CANCELs on it
        ended = await agent.wait_for(CallEnded, call=offered.call, timeout=10)
        assert (ended.reason, ended.by) == ("cancelled", "remote")
        result = await uac.wait_async()
        assert result.returncode == 0, result.summary()
        assert (result.successful, result.failed) == (1, 0), result.summary()
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0, what="tables empty")
        await until(lambda: node.service.get_agent(OP, "1001").state == "ready", what="agent ready")
    finally:
        uac.stop()
        await agent.close()
        await node.close()
    [cdr] = await asyncio.to_thread(cdrs, node)
    assert (cdr["hangup_by"], cdr["answered_at"]) == ("customer", None)
    assert [s for s, _ in state_history(node, "1001")] == ["ready", "ringing", "ready"]
