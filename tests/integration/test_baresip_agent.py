"""baresip (Debian's baresip-core, headless, over ctrl_tcp) as a real agent softphone: it registers to callbridge
with digest, answers the customer's call by itself, holds and resumes it (the customer sees sendonly/sendrecv),
is held and muted through the agentbox API, and transfers with its own REFER (`transfer <uri>`): the customer
ends up talking to the target agent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentbox_world import DOMAIN, OP, AgentboxNode, envelope, until

from callbridge.phone import CallEnded, Established, Held, IncomingCall, Resumed
from peers.baresip import Baresip

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[AgentboxNode]:
    # The node's default settings: baresip 1.0.0 (libre 1.x) fails on any challenge that is not MD5, and the default
    # challenge is MD5 alone (config.py, digest_algorithms), so it registers with nothing set.
    async with AgentboxNode.start(tmp_path) as node:
        yield node


async def baresip_agent(world: AgentboxNode, tmp_path: Path, extension: str = "1001") -> Baresip:
    host, port = world.node.sip_address
    account = (f"<sip:{extension}@{DOMAIN}>;auth_pass=secret-{extension};outbound=\"sip:{host}:{port}\""
               f";regint=300;answermode=auto")
    phone = Baresip(user=extension, accounts=[account], workdir=tmp_path / f"baresip-{extension}")
    await phone.start()
    try:
        # it registers from its accounts file at start-up, often before ctrl_tcp has a listener for REGISTER_OK
        await until(lambda: world.service.get_agent(OP, extension).registered, timeout=10, what="baresip registered")
        response = await world.box("change_status", agent_id=extension, status="ready")
        assert envelope(response)[0] == 200
    except BaseException:
        await phone.aclose()
        raise
    return phone


async def test_baresip_answers_holds_and_is_held(world: AgentboxNode, tmp_path: Path) -> None:
    phone = await baresip_agent(world, tmp_path)
    try:
        customer = await world.customer()
        call = await customer.call(f"sip:6000@{world.node.sip_address[0]}:{world.node.sip_address[1]}", timeout=10)
        await phone.wait_event("CALL_ESTABLISHED")
        await until(lambda: world.state("1001") == "on_call", what="on call")

        await phone.command("hold")  # the softphone's hold button: its re-INVITE is relayed to the customer
        assert (await customer.wait_for(Held, call=call, timeout=5)).direction == "sendonly"
        await phone.command("resume")
        assert (await customer.wait_for(Resumed, call=call, timeout=5)).direction == "sendrecv"

        held = await world.box("hold", agent_id="1001")  # hold through the API: callbridge re-INVITEs the customer
        assert envelope(held)[:4] == (200, "200", None, "Call has been put on hold")
        assert (await customer.wait_for(Held, call=call, timeout=5)).direction == "sendonly"
        assert envelope(await world.box("hold", agent_id="1001"))[3] == "Call has been taken off hold"
        await customer.wait_for(Resumed, call=call, timeout=5)
        muted = await world.box("mute", agent_id="1001")  # baresip answers the sendonly offer
        assert envelope(muted)[:4] == (200, "200", None, "Microphone has been muted")
        assert envelope(await world.box("mute", agent_id="1001"))[3] == "Microphone has been unmuted"

        await call.hangup()
        closed = await phone.wait_event("CALL_CLOSED")
        assert closed.get("type") == "CALL_CLOSED"
        await until(lambda: world.node.live_legs == 0, what="legs released")
    finally:
        await phone.aclose()


async def test_baresip_transfers_with_refer(world: AgentboxNode, tmp_path: Path) -> None:
    phone = await baresip_agent(world, tmp_path)
    try:
        target = await world.agent("1002", answer="auto")
        customer = await world.customer()
        call = await customer.call(f"sip:6000@{world.node.sip_address[0]}:{world.node.sip_address[1]}", timeout=10)
        await phone.wait_event("CALL_ESTABLISHED")
        await until(lambda: world.state("1001") == "on_call", what="on call")
        conn_id = world.conn_id()

        response = await phone.command("transfer", f"sip:1002@{DOMAIN}")
        assert response.get("ok") is True, response
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        await target.wait_for(Established, call=target_call, timeout=5)
        await phone.wait_event("CALL_CLOSED")  # NOTIFY 200 reached baresip, its call with callbridge is over
        await until(lambda: call.remote_sdp is not None and call.remote_sdp.media[0].port == target.rtp_port,
                    what="the customer with 1002")
        assert call.remote_sdp is not None and call.remote_sdp.direction() == "sendrecv"
        assert not call.ended and not target_call.ended
        view = world.service.get_call(OP, conn_id)
        assert (view.agent, view.transfer_count) == ("1002", 1)
        [record] = world.transfers(conn_id)
        assert (record.kind, record.target, record.state) == ("blind", "1002", "completed")
        assert world.node.switch.refers.stats["accepted"] == 1
        await call.hangup()
        await target.wait_for(CallEnded, call=target_call, timeout=5)
    finally:
        await phone.aclose()
