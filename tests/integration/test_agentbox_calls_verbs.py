"""The agentbox verbs other than transfer, through the endpoint on uvicorn, on real calls: each success path with
what the phones see, and each verb's errors on a live node."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from agentbox_world import AUX, OP, AgentboxNode, envelope, until

from callbridge.callcontrol.events import Dispositioned, DomainEvent, RecallDue
from callbridge.phone import CallEnded, DtmfReceived, Held, IncomingCall, Phone, Resumed
from callbridge.sip.events import RequestReceived
from peers.ports import free_port

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]
NUMBER = "3105550199"

NOT_LOGGED_IN = (409, "409", "CONFLICT", "AGENT IS NOT LOGGED IN")
NO_CALL = (409, "409", "CONFLICT", "AGENT HAS NO ACTIVE CALL")
ON_A_CALL = (409, "409", "CONFLICT", "AGENT ALREADY HAS AN ACTIVE CALL")


def ok(response: Any, msg: str, data: Any = None) -> None:
    assert envelope(response) == (200, "200", None, msg, data), response.text


def refused(response: Any, expected: tuple[int, str, str, str]) -> None:
    assert envelope(response)[:4] == expected, response.text


def record_requests(phone: Phone) -> list[Any]:
    """Every request the phone receives, as it arrives (the phone still handles it)."""
    seen: list[Any] = []
    handle = phone._handlers[RequestReceived]

    def spy(event: Any) -> None:
        seen.append(event.request)
        handle(event)

    phone._handlers[RequestReceived] = spy
    return seen


async def test_hold_mute_dtmf_and_hang(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        customer = await world.customer()
        received = record_requests(customer)
        customer, call, agent_call = await world.talking(agent, customer=customer)
        ok(await world.box("hold", agent_id="1001"), "Call has been put on hold")
        assert (await customer.wait_for(Held, call=call, timeout=1)).direction == "sendonly"
        ok(await world.box("hold", agent_id="1001"), "Call has been taken off hold")
        assert (await customer.wait_for(Resumed, call=call, timeout=1)).direction == "sendrecv"
        ok(await world.box("mute", agent_id="1001"), "Microphone has been muted")
        await agent.wait_for(Held, call=agent_call, timeout=1)  # the agent's phone is told to stop sending
        ok(await world.box("mute", agent_id="1001"), "Microphone has been unmuted")
        await agent.wait_for(Resumed, call=agent_call, timeout=1)

        ok(await world.box("dtmf", agent_id="1001", tones="12#*"), "Tones have been sent", {"tones": "12#*"})
        digits = [(await customer.wait_for(DtmfReceived, call=call, timeout=1)).digit for _ in range(4)]
        assert digits == ["1", "2", "#", "*"]
        infos = [r for r in received if r.method == "INFO"]
        assert [(r.content_type, r.body) for r in infos] == [
            ("application/dtmf-relay", f"Signal={d}\r\nDuration=160\r\n".encode()) for d in "12#*"]
        refused(await world.box("dtmf", agent_id="1001", tones="12x"), (400, "400", "BAD REQUEST",
                                                                        "INVALID PARAMETER: tones"))
        refused(await world.box("dial", agent_id="1001", customer_phone=NUMBER), ON_A_CALL)
        refused(await world.box("change_status", agent_id="1001", status="ready"), ON_A_CALL)

        ok(await world.box("hang", agent_id="1001"), "Call has been hung up")
        assert (await customer.wait_for(CallEnded, call=call, timeout=5)).by == "remote"
        assert (await agent.wait_for(CallEnded, call=agent_call, timeout=5)).by == "remote"
        for api in ("hang", "hold", "mute"):
            refused(await world.box(api, agent_id="1001"), NO_CALL)
        refused(await world.box("dtmf", agent_id="1001", tones="1"), NO_CALL)
        refused(await world.box("hang_type_ready", agent_id="1001", cod_act="SALE"), NO_CALL)
        await until(lambda: world.node.live_legs == 0)


async def test_a_phone_that_does_not_answer_leaves_the_toggle_unchanged(tmp_path: Path) -> None:
    """Three requests in parallel on one token (limit 2): the third is refused at once and does nothing; the two
    that wait on a customer phone that stopped answering end 409 CALL COULD NOT BE UPDATED, toggles unchanged."""
    async with AgentboxNode.start(tmp_path) as world:
        agent = await world.agent("1001", answer="auto")
        await world.agent("1002", answer="auto")
        customer, _call, _agent_call = await world.talking(agent)
        conn_id = world.conn_id()
        await customer.runtime.close()  # the customer's phone vanishes without a BYE
        import asyncio

        slow = [asyncio.create_task(world.box("hold", agent_id="1001")),
                asyncio.create_task(world.box("dtmf", agent_id="1001", tones="9"))]
        await until(lambda: world.node.signalling is not None and len(world.service._actions) == 2,
                    what="two requests in flight")
        third = await world.box("change_status", agent_id="1002", status=AUX)
        refused(third, (403, "403", "FORBIDDEN", "EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (2)"))
        assert world.state("1002") == "ready"  # the refused request did nothing
        other_token = await world.box("change_status", token=world.tokens[OP][1], agent_id="1002", status=AUX)
        ok(other_token, f"Agent status has been changed to {AUX}")  # the limit is per token
        for response in await asyncio.gather(*slow):
            refused(response, (409, "409", "CONFLICT", "CALL COULD NOT BE UPDATED"))
        view = world.service.get_call(OP, conn_id)
        assert (view.held, view.state) == (False, "connected")


async def test_change_status_type_and_hang_type_ready(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        seen: list[DomainEvent] = []
        world.node.events.add_listener(seen.append)
        unregistered = await world.box("change_status", agent_id="1003", status="ready")
        refused(unregistered, (409, "409", "CONFLICT", "AGENT PHONE IS NOT REGISTERED"))
        refused(await world.box("hang", agent_id="1003"), NOT_LOGGED_IN)
        agent = await world.agent("1001", answer="auto", ready=False)
        refused(await world.box("change_status", agent_id="1001", status="9"),
                (400, "400", "BAD REQUEST", "INVALID PARAMETER: status"))
        for status, state in ((AUX, f"aux:{AUX}"), ("logout", "logout"), ("ready", "ready")):
            ok(await world.box("change_status", agent_id="1001", status=status),
               f"Agent status has been changed to {status}")
            assert world.state("1001") == state
        refused(await world.box("type", agent_id="1001", cod_act="SALE", cod_act_2="NEW"),
                (409, "409", "CONFLICT", "NO CALL TO TYPE"))
        customer, call, agent_call = await world.talking(agent)
        first = world.conn_id()
        await call.hangup()
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        refused(await world.box("type", agent_id="1001", cod_act="NOPE", cod_act_2="NEW"),
                (400, "400", "BAD REQUEST", "INVALID PARAMETER: cod_act"))
        ok(await world.box("type", agent_id="1001", cod_act="SALE", cod_act_2="NEW", comments="called back"),
           "Call has been typed")
        refused(await world.box("type", agent_id="1001", cod_act="SALE", cod_act_2="NEW"),
                (409, "409", "CONFLICT", "NO CALL TO TYPE"))

        customer, call, agent_call = await world.talking(agent, customer=customer)
        second = world.conn_id()
        ok(await world.box("hang_type_ready", agent_id="1001", cod_act="SALE"),
           "Call has been hung up, typed and agent is ready")
        await customer.wait_for(CallEnded, call=call, timeout=5)
        await until(lambda: world.state("1001") == "ready")
        typed = [(e.conn_id, e.cod_act, e.cod_act_2) for e in seen if isinstance(e, Dispositioned)]
        assert typed == [(first, "SALE", "NEW"), (second, "SALE", "")]


async def test_dial_and_aux_call(tmp_path: Path) -> None:
    port = free_port("127.0.0.3")
    async with AgentboxNode.start(tmp_path, gateway_port=port) as world:
        gateway = await world.gateway(port, answer="auto")
        agent = await world.agent("1001", answer="auto")
        refused(await world.box("aux_call", agent_id="1001", customer_phone=NUMBER),
                (409, "409", "CONFLICT", "NO RECENT CALL"))
        refused(await world.box("dial", agent_id="1001", customer_phone="12"),
                (400, "400", "BAD REQUEST", "INVALID PARAMETER: customer_phone"))
        refused(await world.box("dial", agent_id="1003", customer_phone=NUMBER), NOT_LOGGED_IN)

        response = await world.box("dial", agent_id="1001", customer_phone=NUMBER, customer_name="Ana")
        conn_id = response.json()["data"]["conn_id"]
        ok(response, f"Call has been dialed to {NUMBER}", {"conn_id": conn_id})
        ring = await agent.wait_for(IncomingCall, timeout=5)  # the agent's phone first, asked to answer by itself
        assert ring.request.headers.get("Call-Info") == "<sip:callbridge>;answer-after=0"
        assert ring.request.body == b""
        out = await gateway.wait_for(IncomingCall, timeout=5)  # then the customer through the trunk
        assert out.request.uri.user == NUMBER
        assert out.request.body and str(agent.rtp_port).encode() in out.request.body  # the agent's offer
        await until(lambda: ring.call.remote_sdp is not None and ring.call.remote_sdp.media[0].port == gateway.rtp_port,
                    what="the agent bridged with the customer")
        assert world.service.get_call(OP, conn_id).state == "connected"
        await out.call.hangup()
        await agent.wait_for(CallEnded, call=ring.call, timeout=5)
        await until(lambda: world.state("1001") == "ready")

        response = await world.box("aux_call", agent_id="1001", customer_phone="3105550123")
        aux_conn = response.json()["data"]["conn_id"]
        ok(response, "Auxiliary call has been dialed to 3105550123", {"conn_id": aux_conn})
        ring = await agent.wait_for(IncomingCall, timeout=5)
        out = await gateway.wait_for(IncomingCall, timeout=5)
        assert out.request.uri.user == "3105550123"
        await until(lambda: world.service.get_call(OP, aux_conn).state == "connected")
        await ring.call.hangup()
        await gateway.wait_for(CallEnded, call=out.call, timeout=5)


async def test_agent_display_and_recall(tmp_path: Path) -> None:
    port = free_port("127.0.0.3")
    async with AgentboxNode.start(tmp_path, gateway_port=port) as world:
        gateway = await world.gateway(port, answer="auto")
        seen: list[DomainEvent] = []
        world.node.events.add_listener(seen.append)
        ok(await world.box("agent_display", agent_id="1002", display="hide", button="dial"),
           "Display has been updated")
        refused(await world.box("agent_display", agent_id="1002", display="blink", button="dial"),
                (400, "400", "BAD REQUEST", "INVALID PARAMETER: display"))
        assert dict(world.service.get_agent(OP, "1002").display) == {"dial": False}
        changed = [e for e in world.node.events.since(OP, 0) if e.type == "agent.display_changed"]
        assert len(changed) == 1

        agent = await world.agent("1001", answer="auto", ready=False)
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
        stamp = soon.strftime("%Y%m%d%H%M%S")
        refused(await world.box("recall", agent_id="1001", customer_phone=NUMBER, date="2024011", type_recall="auto"),
                (400, "400", "BAD REQUEST", "INVALID PARAMETER: date"))
        ok(await world.box("recall", agent_id="1001", customer_phone="3105550777", date=stamp, type_recall="manual"),
           "Recall has been scheduled")
        ok(await world.box("recall", agent_id="1001", customer_phone=NUMBER, date=stamp, type_recall="auto"),
           "Recall has been scheduled")
        await until(lambda: len([e for e in seen if isinstance(e, RecallDue)]) == 2, timeout=6, what="recalls due")
        with pytest.raises(TimeoutError):  # due, but the agent is not ready: nothing is dialled
            await agent.wait_for(IncomingCall, timeout=0.5)
        ok(await world.box("change_status", agent_id="1001", status="ready"), "Agent status has been changed to ready")
        ring = await agent.wait_for(IncomingCall, timeout=5)  # the auto recall dials once the agent is ready
        assert ring.request.headers.get("Call-Info") == "<sip:callbridge>;answer-after=0"
        out = await gateway.wait_for(IncomingCall, timeout=5)
        assert out.request.uri.user == NUMBER  # the manual one only notified the agent
        await out.call.hangup()
        await agent.wait_for(CallEnded, call=ring.call, timeout=5)
