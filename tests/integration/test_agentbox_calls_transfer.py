"""api=transfer and the native transfer resources on real calls: to an agent and to an outside number (the trunk's
gateway on 127.0.0.3); a target that is busy, rejects, is unreachable or does not answer gives the customer back
to the agent (re-INVITE sendrecv, both dialogs live); the customer or the agent hanging up mid-transfer; attended
transfers completed and cancelled through /v2/transfers; the transfer errors, which send no SIP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agentbox_world import OP, AgentboxNode, envelope, until

from callbridge.phone import (
    Call,
    CallEnded,
    DtmfReceived,
    Established,
    Held,
    IncomingCall,
    Phone,
    ReInviteReceived,
    Resumed,
)
from peers.ports import free_port

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]
GATEWAY_NUMBER = "3105550199"


async def talking_to(world: AgentboxNode, call: Call, phone: Phone) -> None:
    await until(lambda: call.remote_sdp is not None and call.remote_sdp.media[0].port == phone.rtp_port
                and call.remote_sdp.direction() == "sendrecv", what=f"customer talking to {phone.name}")


async def assert_back_with_agent(world: AgentboxNode, customer: Phone, call: Call, agent_call: Call,
                                 agent: Phone) -> None:
    """The customer was held, then re-INVITEd sendrecv toward the agent again, and both dialogs still work."""
    assert (await customer.wait_for(Held, call=call, timeout=5)).direction == "sendonly"
    assert (await customer.wait_for(Resumed, call=call, timeout=8)).direction == "sendrecv"
    await talking_to(world, call, agent)
    assert not call.ended and not agent_call.ended
    assert world.state("1001") == "on_call"
    response = await world.box("dtmf", agent_id="1001", tones="5")  # the customer's dialog is live
    assert envelope(response)[:2] == (200, "200")
    assert (await customer.wait_for(DtmfReceived, call=call, timeout=5)).digit == "5"
    await agent_call.hold()  # and so is the agent's: its re-INVITE is relayed to the customer
    await customer.wait_for(Held, call=call, timeout=5)


async def test_transfer_to_an_agent(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        target = await world.agent("1002", answer="auto", ring_delay=0.2)
        _customer, call, agent_call = await world.talking(agent)
        conn_id = world.conn_id()
        response = await world.box("transfer", agent_id="1001", customer_phone="1002")
        assert envelope(response) == (200, "200", None, "Call has been transfer to 1002 number",
                                       {"conn_id": conn_id})
        incoming = await target.wait_for(IncomingCall, timeout=5)
        assert incoming.request.body == b""  # RFC 3725 flow I: the target makes the offer
        assert incoming.request.from_.uri.user == "3105550000"  # the customer's number, the trunk's default
        assert "1001" in (incoming.request.headers.get("Diversion") or "")
        await target.wait_for(Established, call=incoming.call, timeout=5)
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        await talking_to(world, call, target)
        [record] = world.transfers(conn_id)
        assert (record.state, record.outcome, record.target_kind) == ("completed", "completed", "agent")
        assert world.event_types(conn_id)[-4:] == ["transfer.created", "transfer.ringing", "transfer.answered",
                                                   "transfer.completed"]
        await until(lambda: world.state("1001") == "ready" and world.state("1002") == "on_call")
        await call.hangup()
        await target.wait_for(CallEnded, call=incoming.call, timeout=5)


async def test_transfer_to_an_outside_number(tmp_path: Path) -> None:
    port = free_port("127.0.0.3")
    async with AgentboxNode.start(tmp_path, gateway_port=port) as world:
        gateway = await world.gateway(port, answer="auto")
        agent = await world.agent("1001", answer="auto")
        customer, call, agent_call = await world.talking(agent)
        response = await world.box("transfer", agent_id="1001", customer_phone=GATEWAY_NUMBER)
        assert envelope(response)[:4] == (200, "200", None, f"Call has been transfer to {GATEWAY_NUMBER} number")
        incoming = await gateway.wait_for(IncomingCall, timeout=5)
        assert incoming.request.uri.user == GATEWAY_NUMBER and incoming.request.uri.host == "127.0.0.3"
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        await talking_to(world, call, gateway)
        [record] = world.transfers(world.service.get_call(OP, response.json()["data"]["conn_id"]).conn_id)
        assert (record.state, record.target_kind, record.dialled) == ("completed", "number", GATEWAY_NUMBER)
        await gateway.wait_for(Established, call=incoming.call, timeout=5)
        await incoming.call.hangup()
        await customer.wait_for(CallEnded, call=call, timeout=5)


FAILURES = [
    pytest.param("agent", {"auto_answer_status": 486}, 486, "busy", id="busy-486"),
    pytest.param("agent", {"auto_answer_status": 603}, 603, "rejected", id="rejecting-603"),
    pytest.param("number", {"auto_answer_status": 503}, 503, "unreachable", id="unreachable-503"),
    pytest.param("number", {"auto_answer_status": 408}, 408, "unreachable", id="unreachable-408"),
    pytest.param("agent", {"ring_delay": 30.0}, 408, "no_answer", id="no-answer"),
]


@pytest.mark.parametrize(("kind", "behaviour", "cause", "outcome"), FAILURES)
async def test_failed_transfer_gives_the_customer_back(tmp_path: Path, kind: str, behaviour: dict[str, Any],
                                                       cause: int, outcome: str) -> None:
    port = free_port("127.0.0.3")
    async with AgentboxNode.start(tmp_path, gateway_port=port, transfer_timeout=2.0) as world:
        agent = await world.agent("1001", answer="auto")
        if kind == "agent":
            target = await world.agent("1002", answer="auto", **behaviour)
        else:
            target = await world.gateway(port, answer="auto", **behaviour)
        customer, call, agent_call = await world.talking(agent)
        conn_id = world.conn_id()
        number = "1002" if kind == "agent" else GATEWAY_NUMBER
        assert envelope(await world.box("transfer", agent_id="1001", customer_phone=number))[:2] == (200, "200")
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await assert_back_with_agent(world, customer, call, agent_call, agent)
        ended = await target.wait_for(CallEnded, call=target_call, timeout=5)
        assert ended.reason in ("rejected", "cancelled")
        [record] = world.transfers(conn_id)
        assert (record.state, record.outcome, record.sip_cause) == ("failed", outcome, cause)
        assert world.event_types(conn_id)[-1] == "transfer.failed"
        if kind == "agent":
            await until(lambda: world.state("1002") == "ready", what="the target free again")
        await call.hangup()
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)


async def test_customer_hangs_up_mid_transfer(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        target = await world.agent("1002")  # rings, never answers
        customer, call, agent_call = await world.talking(agent)
        conn_id = world.conn_id()
        await world.box("transfer", agent_id="1001", customer_phone="1002")
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await target_call.ring()
        await customer.wait_for(Held, call=call, timeout=5)
        await call.hangup()
        assert (await target.wait_for(CallEnded, call=target_call, timeout=5)).reason == "cancelled"
        assert (await agent.wait_for(CallEnded, call=agent_call, timeout=5)).by == "remote"
        [record] = world.transfers(conn_id)
        assert (record.state, record.outcome) == ("failed", "customer_hangup")
        await until(lambda: world.node.live_legs == 0 and world.node.endpoint.dialog_count == 0)
        assert world.state("1001") == "ready" and world.state("1002") == "ready"
        view = world.service.get_call(OP, conn_id)
        assert view.state == "ended" and view.history[-1][1:] == ("ended", "customer")


async def test_agent_hangs_up_mid_transfer_and_the_transfer_goes_on(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        target = await world.agent("1002")
        _customer, call, agent_call = await world.talking(agent)
        await world.box("transfer", agent_id="1001", customer_phone="1002")
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await agent_call.hangup()  # the agent's phone leaves while the target rings
        await until(lambda: world.state("1001") == "ready", what="the agent freed")
        await target_call.answer()
        await talking_to(world, call, target)
        assert not call.ended
        [record] = world.transfers(world.service.get_agent(OP, "1002").conn_id)
        assert (record.state, record.outcome) == ("completed", "completed")
        await call.hangup()


async def test_agent_hangs_up_then_the_transfer_fails_the_customer_is_requeued(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        await world.agent("1002", answer="auto", auto_answer_status=486, ring_delay=1.0)
        customer, call, agent_call = await world.talking(agent)
        conn_id = world.conn_id()
        await world.box("transfer", agent_id="1001", customer_phone="1002")
        response = await world.box("hang", agent_id="1001")  # releases the agent's own leg only
        assert envelope(response)[:4] == (200, "200", None, "Call has been hung up")
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        # the queue offers the customer again: 1001, free since its hang, has been idle longest
        rescued = (await agent.wait_for(IncomingCall, timeout=8)).call
        assert rescued is not agent_call
        await until(lambda: [h[1] for h in world.service.get_call(OP, conn_id).history][-4:] == [
            "transfer_failed", "queued", "offered", "answered"], what="answered from the queue")
        await customer.wait_for(Resumed, call=call, timeout=5)
        await talking_to(world, call, agent)
        assert not call.ended and not rescued.ended
        [record] = world.transfers(conn_id)
        assert (record.state, record.outcome, record.customer_requeued) == ("failed", "busy", True)
        await call.hangup()


async def native(world: AgentboxNode, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"authorization": f"Bearer {world.tokens[OP][1]}"}
    return await world.client.request(method, path, headers=headers, **kwargs)


@pytest.mark.parametrize("finish", ["complete", "cancel"])
async def test_attended_transfer_through_the_native_api(tmp_path: Path, finish: str) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        target = await world.agent("1002", answer="auto")
        customer, call, agent_call = await world.talking(agent)
        created = await native(world, "POST", "/v2/transfers",
                               json={"agent_id": "1001", "target": "1002", "kind": "attended"})
        assert created.status_code == 201, created.text
        tid = created.json()["id"]
        await customer.wait_for(Held, call=call, timeout=5)
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await until(lambda: world.service.get_transfer(OP, tid).state == "consulting", what="consulting")
        await agent.wait_for(ReInviteReceived, call=agent_call, timeout=5)  # the agent now talks to the target
        await talking_to(world, agent_call, target)
        if finish == "complete":
            done = await native(world, "PUT", f"/v2/transfers/{tid}/complete")
            assert done.status_code == 200, done.text
            await agent.wait_for(CallEnded, call=agent_call, timeout=5)
            await talking_to(world, call, target)
            await talking_to(world, target_call, customer)
            assert (await native(world, "GET", f"/v2/transfers/{tid}")).json()["state"] == "completed"
            await call.hangup()
            await target.wait_for(CallEnded, call=target_call, timeout=5)
        else:
            done = await native(world, "DELETE", f"/v2/transfers/{tid}")
            assert done.status_code == 200, done.text
            await target.wait_for(CallEnded, call=target_call, timeout=5)
            await talking_to(world, call, agent)
            await talking_to(world, agent_call, customer)
            assert world.service.get_transfer(OP, tid).state == "cancelled"
            assert not call.ended and not agent_call.ended
            await call.hangup()
            await agent.wait_for(CallEnded, call=agent_call, timeout=5)


async def test_transfer_errors_send_no_sip(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        await world.agent("1003", ready=False)
        response = await world.box("transfer", agent_id="1001", customer_phone="1003")
        assert envelope(response)[:4] == (409, "409", "CONFLICT", "AGENT HAS NO ACTIVE CALL")
        target = await world.agent("1002")  # rings and never answers: the first transfer stays running
        _customer, call, agent_call = await world.talking(agent)
        before = world.node.runtime.metrics()
        cases = [
            ({"customer_phone": "1003"}, (409, "409", "CONFLICT", "TRANSFER TARGET IS NOT AVAILABLE")),
            ({"customer_phone": "12"}, (400, "400", "BAD REQUEST", "INVALID PARAMETER: customer_phone")),
            ({"customer_phone": "sip:1002@192.0.2.1"}, (400, "400", "BAD REQUEST",
                                                        "INVALID PARAMETER: customer_phone")),
            ({"customer_phone": "1002\r\nX: y"}, (400, "400", "BAD REQUEST", "INVALID PARAMETER: customer_phone")),
            ({"agent_id": "1009", "customer_phone": "1002"}, (404, "404", "NOT FOUND", "AGENT DOES NOT EXIST")),
        ]
        for params, expected in cases:
            response = await world.box("transfer", **{"agent_id": "1001", **params})
            assert envelope(response)[:4] == expected, params
        assert world.node.runtime.metrics()["datagrams_out"] == before["datagrams_out"]
        assert world.transfers(world.conn_id()) == []
        assert envelope(await world.box("transfer", agent_id="1001", customer_phone="1002"))[0] == 200
        await target.wait_for(IncomingCall, timeout=5)
        response = await world.box("transfer", agent_id="1001", customer_phone="1002")
        assert envelope(response)[:4] == (409, "409", "CONFLICT", "A TRANSFER IS ALREADY IN PROGRESS")
        for api in ("hold", "mute", "dtmf"):
            response = await world.box(api, agent_id="1001", tones="1")
            assert envelope(response)[:4] == (409, "409", "CONFLICT", "A TRANSFER IS ALREADY IN PROGRESS"), api
        await call.hangup()
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
