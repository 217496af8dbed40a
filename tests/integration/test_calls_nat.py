"""NAT: an agent's phone whose Contact names an address it cannot be reached at (a private one behind NAT) is
reached where its REGISTER and its requests came from: the INVITE, the ACK, re-INVITEs and the BYE all go to that
source address (RFC 3581; `Endpoint.set_destination`). The Contact here names 192.0.2.55:5999, a documentation
address: the destination policy refuses anything sent there, and the spy shows nothing was even tried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from callnode import DOMAIN, OP, agent_phone, customer_phone, did_uri, start_node, until

from callbridge.bootstrap import Node
from callbridge.phone import CallEnded, Established, Held, IncomingCall, Phone, Resumed

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]
PRIVATE = ("192.0.2.55", 5999)


class SendSpy:
    """Every send the node's transport is asked to make (before the destination policy), by address."""

    def __init__(self, node: Node) -> None:
        self.attempts: list[tuple[tuple[str, int], str]] = []
        runtime = node.runtime
        original = runtime.send

        def send(data: bytes, addr: Any, transport: str = "udp") -> bool:
            self.attempts.append(((addr[0], addr[1]), data.split(b"\r\n", 1)[0].decode("latin-1")))
            return original(data, addr, transport)

        runtime.send = send  # type: ignore[method-assign]

    def to_host(self, host: str) -> list[str]:
        return [line for (h, _), line in self.attempts if h == host]

    def methods_to(self, addr: tuple[str, int]) -> list[str]:
        return [line.split()[0] for a, line in self.attempts if a == addr and not line.startswith("SIP/2.0")]


def behind_nat(phone: Phone, host: str, port: int) -> None:
    """The phone believes it is at host:port (its Contact and Via say so); packets still leave from its socket."""
    endpoint = phone.endpoint
    endpoint.host, endpoint.port = host, port
    endpoint._hostport = f"{host}:{port}"


async def nat_agent(node: Node, extension: str) -> Phone:
    phone = await Phone.start(host="127.0.0.1", user=extension, domain=DOMAIN, password=f"secret-{extension}",
                              name=f"agent-{extension}")
    behind_nat(phone, *PRIVATE)
    await phone.register(node.sip_address, expires=300)
    await until(lambda: node.service.get_agent(OP, extension).registered, what=f"{extension} registered")
    return phone


def refused(node: Node) -> int:
    return node.runtime.metrics()["policy_refused_total"]


async def test_trunk_call_to_an_agent_behind_nat_answered_held_and_hung_up(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    spy = SendSpy(node)
    agent = await nat_agent(node, "1001")
    customer = await customer_phone()
    try:
        [binding] = node.switch.registrar.contacts_for(OP, "1001", node.switch.wall())
        assert binding.contact_uri == "sip:1001@192.0.2.55:5999"
        assert binding.destination == agent.address and binding.behind_nat
        node.service.change_status(OP, "1001", "ready")
        call = await customer.call(did_uri(node), wait_answer=False)
        offered = await agent.wait_for(IncomingCall, timeout=5)
        assert str(offered.request.uri) == "sip:1001@192.0.2.55:5999"  # addressed to the Contact, sent to the source
        await offered.call.answer()
        await call.wait_answered(5)
        await agent.wait_for(Established, call=offered.call, timeout=5)  # our ACK reached it
        await until(lambda: node.service.get_agent(OP, "1001").state == "on_call", what="on_call")

        # re-INVITEs toward the agent's phone (mute is a re-INVITE on the agent's leg), then from it (hold)
        for toggled in (Held, Resumed):
            ticket = node.service.mute(OP, "1001")
            await agent.wait_for(toggled, call=offered.call, timeout=5)
            await until(lambda t=ticket: node.service.action_outcome(t.action_id) is not None, what="mute done")
            assert type(node.service.action_outcome(ticket.action_id)).__name__ == "ActionCompleted"
        await offered.call.hold()
        await customer.wait_for(Held, call=call, timeout=5)

        await call.hangup()
        ended = await agent.wait_for(CallEnded, call=offered.call, timeout=5)
        assert (ended.reason, ended.by) == ("bye", "remote")
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0, what="tables empty")
        assert spy.methods_to(agent.address) == ["INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "BYE"]
        assert spy.to_host(PRIVATE[0]) == [] and refused(node) == 0
        # and had anything been sent there, the policy would have refused it before any socket call
        assert node.runtime.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n", PRIVATE) is False
        assert node.runtime.metrics()["policy_refused_network_not_allowed"] == 1
    finally:
        await customer.close()
        await agent.close()
        await node.close()


async def test_an_agent_behind_nat_calling_out_is_answered_at_its_source(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    spy = SendSpy(node)
    caller = await nat_agent(node, "1001")
    callee = await agent_phone(node, "1002", answer="auto")
    try:
        node.service.change_status(OP, "1001", "ready")
        call = await caller.call(f"sip:1002@{DOMAIN}", dest=node.sip_address, timeout=5)
        callee_call = (await callee.wait_for(IncomingCall, timeout=5)).call
        await callee.wait_for(Established, call=callee_call, timeout=5)
        await callee_call.hold()  # relayed as a re-INVITE to the NAT'd caller
        await caller.wait_for(Held, call=call, timeout=5)
        await callee_call.hangup()
        ended = await caller.wait_for(CallEnded, call=call, timeout=5)
        assert (ended.reason, ended.by) == ("bye", "remote")
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0, what="tables empty")
        assert spy.methods_to(caller.address) == ["INVITE", "ACK", "BYE"]
        assert spy.to_host(PRIVATE[0]) == [] and refused(node) == 0
    finally:
        await callee.close()
        await caller.close()
        await node.close()
