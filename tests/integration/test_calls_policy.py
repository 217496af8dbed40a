"""Addresses that SIP messages name are never trusted as destinations (docs/design.md, "What the server sends, and
where"). On a running node: an agent whose registered Contact names 192.0.2.10 is rung only where its REGISTER
came from (here: nowhere any more, so the caller gets a final failure and nothing is left behind); a customer whose
Contact names 192.0.2.10 gets its BYE refused by the destination policy before any socket call, counted on
/metrics; a request whose top Via names 192.0.2.20 without rport is answered at its source address (RFC 3261
§18.2.2, received=). A spy on the transport shows nothing was ever handed to a socket for 192.0.2.x."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from callnode import DOMAIN, OP, agent_phone, cdrs, customer_phone, dialog_rows, did_uri, start_node, until
from rawsip import RawSip
from test_calls_nat import SendSpy, behind_nat

from callbridge.bootstrap import Node
from callbridge.phone import CallFailed, IncomingCall, Phone
from callbridge.sip.timers import TimerConfig

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]


async def refusals(node: Node) -> dict[str, float]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app), base_url="http://node") as client:
        text = (await client.get("/metrics")).text
    out = {}
    for line in text.splitlines():
        if line.startswith('callbridge_transport_total{counter="policy_refused'):
            name, value = line.rsplit(" ", 1)
            out[name.split('"')[1]] = float(value)
    return out


def socket_sends(spy: SendSpy, node: Node, host: str) -> list[str]:
    """Attempts toward `host` that the policy let through to a socket (none may exist)."""
    return [line for (h, port), line in spy.attempts if h == host and node.runtime.policy.allows((h, port))]


FAST = TimerConfig(t1=0.05, t2=0.4, t4=0.5)  # Timers B and F in 3.2 s: what a silent peer leaves ends soon


async def test_a_registered_contact_naming_another_host_gets_nothing(tmp_path: Path) -> None:
    node = await start_node(tmp_path, timers=FAST)
    spy = SendSpy(node)
    customer = await customer_phone()
    try:
        agent = await Phone.start(host="127.0.0.1", user="1001", domain=DOMAIN, password="secret-1001")
        behind_nat(agent, "192.0.2.10", 5060)
        await agent.register(node.sip_address, expires=300)
        await until(lambda: node.service.get_agent(OP, "1001").registered, what="registered")
        node.service.change_status(OP, "1001", "ready")
        source = agent.address
        await agent.runtime.close()  # the phone is gone; its binding (and its Contact) stay
        call = await customer.call(did_uri(node), wait_answer=False)
        failed = await customer.wait_for(CallFailed, call=call, timeout=15)
        assert failed.status == 480
        assert spy.to_host("192.0.2.10") == []
        assert spy.methods_to(source)[:1] == ["INVITE"]  # rung where the REGISTER came from, and only there
        # the leg rung last was released with the 480, before its INVITE's Timer B (3.2 s after it was sent)
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0, timeout=1.0,
                    what="legs and dialogs gone")
        await until(lambda: node.endpoint.transaction_count == 0, timeout=10, what="transactions gone")
        assert (await refusals(node))["policy_refused_total"] == 0  # nothing even tried
        await agent.close()
    finally:
        await customer.close()
        await node.close()
    [cdr] = cdrs(node)
    assert cdr["answered_at"] is None and dialog_rows(node) == 0


async def test_a_customer_contact_naming_another_host_is_refused_by_the_policy(tmp_path: Path) -> None:
    node = await start_node(tmp_path, timers=FAST)
    spy = SendSpy(node)
    agent = await agent_phone(node, "1001")
    customer = await customer_phone()
    behind_nat(customer, "192.0.2.10", 5060)
    try:
        call = await customer.call(did_uri(node), wait_answer=False)
        offered = await agent.wait_for(IncomingCall, timeout=5)
        await offered.call.answer()
        await call.wait_answered(5)
        assert (await refusals(node))["policy_refused_total"] == 0
        await offered.call.hangup()  # callbridge's BYE to the customer would go to its Contact: 192.0.2.10
        await until(lambda: node.live_legs == 0, what="legs released")
        await until(lambda: node.endpoint.transaction_count == 0, timeout=10, what="the BYE given up")
        counted = await refusals(node)
        assert counted["policy_refused_network_not_allowed"] >= 1
        assert counted["policy_refused_total"] == counted["policy_refused_network_not_allowed"]
        tried = [line.split()[0] for line in spy.to_host("192.0.2.10")]
        assert tried == ["BYE"] * int(counted["policy_refused_total"])
        assert socket_sends(spy, node, "192.0.2.10") == []
    finally:
        await customer.close()
        await agent.close()
        await node.close()
    [cdr] = cdrs(node)
    assert cdr["hangup_by"] == "agent" and dialog_rows(node) == 0


async def test_a_via_naming_another_host_without_rport_is_answered_at_the_source(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    spy = SendSpy(node)
    probe = RawSip("127.0.0.8", node.sip_address)
    try:
        # no rport: §18.2.2 sends to the sent-by port, at the source IP (received=), never to the Via's host
        response = await probe.ask("OPTIONS", via=f"Via: SIP/2.0/UDP 192.0.2.20:{probe.port};branch=z9hG4bK-via1")
        assert response is not None and response.status == 200
        assert response.via.params.get("received") == "127.0.0.8"
        assert spy.to_host("192.0.2.20") == []
        assert [a for a, _ in spy.attempts] == [("127.0.0.8", probe.port)]
        assert (await refusals(node))["policy_refused_total"] == 0
    finally:
        probe.close()
        await node.close()
