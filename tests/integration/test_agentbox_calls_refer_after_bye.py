"""A blind transfer made on the agent's phone, which hangs up at once (the usual way): the REFER's subscription
outlives the agent's BYE (RFC 5057 §5.5, RFC 6665 §4.5.3), so the phone still receives the final NOTIFY with the
transfer's outcome, and the dialog's state is released after it: nothing stays in the switch's or the endpoint's
tables. callbridge.phone forgets its dialog with its BYE and answers that NOTIFY 481, which callbridge takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agentbox_world import DOMAIN, OP, AgentboxNode, until

from callbridge.phone import CallEnded, IncomingCall, Phone, Resumed
from callbridge.sip import Request, Response, parse

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]


@dataclass(frozen=True)
class Seen:
    direction: str  # "in" (received by the phone) or "out" (sent by it)
    message: Request | Response


class PhoneWire:
    """Every SIP message the phone's socket receives and sends, in order (a tap on its endpoint)."""

    def __init__(self, phone: Phone) -> None:
        self.seen: list[Seen] = []
        endpoint = phone.endpoint
        receive, drain = endpoint.receive_datagram, endpoint.datagrams_to_send

        def received(data: bytes, addr: Any, now: float, transport: str = "udp") -> None:
            self.seen.append(Seen("in", parse(data)))
            receive(data, addr, now, transport)

        def sent() -> list[tuple[bytes, Any, str]]:
            out = drain()
            self.seen.extend(Seen("out", parse(data)) for data, _, _ in out)
            return out

        endpoint.receive_datagram = received  # type: ignore[method-assign]
        endpoint.datagrams_to_send = sent  # type: ignore[method-assign]

    def index(self, direction: str, method: str, call_id: str) -> list[int]:
        return [i for i, s in enumerate(self.seen) if s.direction == direction and isinstance(s.message, Request)
                and s.message.method == method and s.message.call_id == call_id]

    def answers(self, direction: str, method: str, call_id: str) -> list[tuple[int, int]]:
        """(position, status) of the responses to `method` in the call."""
        return [(i, s.message.status) for i, s in enumerate(self.seen)
                if s.direction == direction and isinstance(s.message, Response)
                and s.message.cseq.method == method and s.message.call_id == call_id]

    def notifies(self, call_id: str) -> list[tuple[int, Request]]:
        out = []
        for i in self.index("in", "NOTIFY", call_id):
            message = self.seen[i].message
            assert isinstance(message, Request)
            out.append((i, message))
        return out


def agent_dialogs(world: AgentboxNode, call_id: str) -> list[Any]:
    return [d for d in world.node.endpoint._dialogs.values() if d.call_id == call_id]


async def refer_then_hang_up(world: AgentboxNode, agent: Phone, wire: PhoneWire) -> tuple[Any, Any, str]:
    customer, call, agent_call = await world.talking(agent)
    call_id = agent_call.dialog.call_id
    assert await agent_call.refer(f"sip:1002@{DOMAIN}") == 202
    await agent_call.hangup()  # at once: the target has not answered yet
    ended = await agent.wait_for(CallEnded, call=agent_call, timeout=5)
    assert ended.by == "local"
    await until(lambda: wire.answers("in", "BYE", call_id) != [], what="the BYE answered")
    assert [status for _, status in wire.answers("in", "BYE", call_id)] == [200]
    return customer, call, call_id


async def final_notify(world: AgentboxNode, wire: PhoneWire, call_id: str) -> Request:
    await until(lambda: any("terminated" in (n.headers.get("Subscription-State") or "")
                            for _, n in wire.notifies(call_id)), what="the final NOTIFY")
    [bye] = wire.index("out", "BYE", call_id)
    notifies = wire.notifies(call_id)
    first, final = notifies[0][1], notifies[-1]
    assert (first.body, first.headers.get("Subscription-State")) == (b"SIP/2.0 100 Trying\r\n", "active;expires=60")
    assert [n.headers.get("Event") for _, n in notifies] == [first.headers.get("Event")] * len(notifies)
    assert final[0] > bye  # the final NOTIFY came after the phone's BYE, in the same dialog
    assert final[1].headers.get("Subscription-State") == "terminated;reason=noresource"
    assert final[1].content_type == "message/sipfrag"
    # the phone had forgotten the dialog: 481, which releases callbridge's hold on it
    await until(lambda: any(i > final[0] for i, _ in wire.answers("out", "NOTIFY", call_id)), what="NOTIFY answered")
    assert [s for i, s in wire.answers("out", "NOTIFY", call_id) if i > final[0]] == [481]
    await until(lambda: agent_dialogs(world, call_id) == [], what="the agent's dialog released")
    return final[1]


async def tables_empty(world: AgentboxNode) -> None:
    sw = world.node.switch
    await until(lambda: world.node.live_legs == 0 and world.node.endpoint.dialog_count == 0,
                what="legs and dialogs released")
    assert len(sw.refers) == 0 and sw.refers._by_target == {}


async def test_agent_hangs_up_after_refer_and_gets_the_final_200_notify(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        target = await world.agent("1002", answer="auto", ring_delay=0.8)
        wire = PhoneWire(agent)
        _customer, call, call_id = await refer_then_hang_up(world, agent, wire)
        # while the target rings, callbridge still holds the agent's dialog for its subscription
        [held] = agent_dialogs(world, call_id)
        assert held.terminated and held.usages == 1
        assert all(leg.dialog is not held for leg in world.node.switch.legs)  # the leg itself is gone
        final = await final_notify(world, wire, call_id)
        assert final.body == b"SIP/2.0 200 OK\r\n"
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await until(lambda: call.remote_sdp is not None and call.remote_sdp.media[0].port == target.rtp_port,
                    what="customer re-INVITEd toward the target")
        [record] = world.transfers(world.service.get_agent(OP, "1002").conn_id)
        assert (record.kind, record.state, record.outcome) == ("blind", "completed", "completed")
        assert world.node.endpoint.dialog_count == 2  # the customer's and the target's: nothing of the agent's
        await call.hangup()
        await target.wait_for(CallEnded, call=target_call, timeout=5)
        await tables_empty(world)


async def test_agent_hangs_up_after_refer_to_a_busy_target_customer_requeued(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        await world.agent("1002", answer="auto", auto_answer_status=486, ring_delay=0.8)
        wire = PhoneWire(agent)
        customer, call, call_id = await refer_then_hang_up(world, agent, wire)
        final = await final_notify(world, wire, call_id)
        assert final.body == b"SIP/2.0 486 Busy Here\r\n"
        # the engine's failure path with the agent gone: the customer goes to the call's queue, and 1001 (free
        # since its hang-up, idle longest) is offered the call again
        rescued = (await agent.wait_for(IncomingCall, timeout=8)).call
        await customer.wait_for(Resumed, call=call, timeout=8)
        conn_id = world.conn_id("1001")
        history = [h[1] for h in world.service.get_call(OP, conn_id).history]
        assert history[-4:] == ["transfer_failed", "queued", "offered", "answered"]
        [record] = world.transfers(conn_id)
        assert (record.state, record.outcome, record.customer_requeued) == ("failed", "busy", True)
        assert not call.ended and not rescued.ended
        await call.hangup()
        await agent.wait_for(CallEnded, call=rescued, timeout=5)
        await tables_empty(world)


async def test_a_subscription_that_expires_before_the_outcome_ends_with_its_last_status(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        world.node.switch.refers.expires = 1  # the target rings for longer than the subscription lasts
        agent = await world.agent("1001", answer="auto")
        target = await world.agent("1002", answer="auto", ring_delay=2.0)
        wire = PhoneWire(agent)
        _customer, call, call_id = await refer_then_hang_up(world, agent, wire)
        await until(lambda: any("terminated" in (n.headers.get("Subscription-State") or "")
                                for _, n in wire.notifies(call_id)), what="the NOTIFY of the expiry")
        notifies = [n for _, n in wire.notifies(call_id)]
        assert [(n.body, n.headers.get("Subscription-State")) for n in notifies] == [
            (b"SIP/2.0 100 Trying\r\n", "active;expires=1"), (b"SIP/2.0 180 Ringing\r\n", "active;expires=1"),
            (b"SIP/2.0 180 Ringing\r\n", "terminated;reason=timeout")]
        await until(lambda: agent_dialogs(world, call_id) == [], what="the agent's dialog released")
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await until(lambda: call.remote_sdp is not None and call.remote_sdp.media[0].port == target.rtp_port,
                    timeout=8, what="the transfer completed all the same")
        assert len(wire.notifies(call_id)) == 3  # nothing after the subscription ended
        await call.hangup()
        await target.wait_for(CallEnded, call=target_call, timeout=5)
        await tables_empty(world)
