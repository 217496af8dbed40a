"""Trunk calls through callbridge on loopback: a customer's phone behind the trunk calls a DID, the queue offers the
call to the agent idle longest, and the call is answered, held and hung up from either side; the agent's state
history and the CDR are checked in the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from callnode import (
    OP,
    agent_phone,
    cdrs,
    customer_phone,
    dialog_rows,
    did_uri,
    legs_of,
    start_node,
    state_history,
    until,
)

from callbridge.phone import CallEnded, DtmfReceived, Established, Held, IncomingCall, Resumed, Ringing

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]


@pytest.mark.parametrize("hangup_by", ["customer", "agent"])
async def test_trunk_call_answered_held_and_hung_up(tmp_path: Path, hangup_by: str) -> None:
    node = await start_node(tmp_path)
    agent = await agent_phone(node, "1001")
    customer = await customer_phone()
    try:
        call = await customer.call(did_uri(node), wait_answer=False)
        offered = await agent.wait_for(IncomingCall, timeout=5)
        assert offered.request.from_.uri.user == "3105550000"
        assert offered.request.headers.get("Session-Expires") is not None
        await offered.call.ring()
        ringing = await customer.wait_for(Ringing, call=call, timeout=5)
        assert ringing.status == 180
        assert node.service.get_agent(OP, "1001").state == "ringing"
        await offered.call.answer()
        await call.wait_answered(5)
        await agent.wait_for(Established, call=offered.call, timeout=5)
        # SDP passed through: each side sees the other's media port
        assert call.remote_sdp is not None and offered.call.remote_sdp is not None
        assert call.remote_sdp.media[0].port == agent.rtp_port
        assert offered.call.remote_sdp.media[0].port == customer.rtp_port
        await until(lambda: node.service.get_agent(OP, "1001").state == "on_call", what="on_call")
        conn_id = node.service.get_agent(OP, "1001").conn_id
        assert conn_id is not None
        assert dialog_rows(node) == 2
        first_origin = call.remote_sdp.origin

        # the agent's phone holds: the re-INVITE is relayed to the customer, then resumed
        await offered.call.hold()
        held = await customer.wait_for(Held, call=call, timeout=5)
        assert held.direction == "sendonly"  # what the agent offered, relayed
        await offered.call.resume()
        await customer.wait_for(Resumed, call=call, timeout=5)
        # the customer-facing o= keeps its session id across the relayed offers
        assert call.remote_sdp.origin.sess_id == first_origin.sess_id
        assert call.remote_sdp.origin.sess_version > first_origin.sess_version

        hanging, other, other_phone = ((call, offered.call, agent) if hangup_by == "customer"
                                       else (offered.call, call, customer))
        await hanging.hangup()
        ended = await other_phone.wait_for(CallEnded, call=other, timeout=5)
        assert (ended.reason, ended.by) == ("bye", "remote")
        await until(lambda: node.service.get_agent(OP, "1001").state == "ready", what="agent ready again")
        await until(lambda: node.endpoint.dialog_count == 0 and node.live_legs == 0, what="tables empty")
    finally:
        await customer.close()
        await agent.close()
        await node.close()
    history = state_history(node, "1001")
    assert [state for state, _ in history] == ["ready", "ringing", "on_call", "acw", "ready"]
    [cdr] = cdrs(node)
    assert cdr["conn_id"] == conn_id and cdr["direction"] == "inbound"
    assert cdr["customer_number"] == "3105550000" and cdr["queue"] == "support"
    assert cdr["agents"] == ["1001"] and cdr["hangup_by"] == hangup_by and cdr["answered_at"] is not None
    legs = legs_of(node, conn_id)
    assert [(leg["role"], leg["state"]) for leg in legs] == [("customer", "ended"), ("agent", "ended")]
    assert dialog_rows(node) == 0



async def test_agentbox_verbs_on_a_live_call(tmp_path: Path) -> None:
    """hold, mute, dtmf and a blind transfer to another agent (RFC 3725 flow I), driven through the domain."""
    node = await start_node(tmp_path)
    agent = await agent_phone(node, "1001", answer="auto")
    customer = await customer_phone()
    try:
        call = await customer.call(did_uri(node), timeout=5)
        agent_call = (await agent.wait_for(IncomingCall, timeout=5)).call
        await until(lambda: node.service.get_agent(OP, "1001").state == "on_call")
        target = await agent_phone(node, "1002", answer="auto")

        async def outcome(ticket_id: str) -> bool:
            await until(lambda: node.service.action_outcome(ticket_id) is not None, what="action outcome")
            result = node.service.action_outcome(ticket_id)
            return type(result).__name__ == "ActionCompleted"

        assert await outcome(node.service.hold(OP, "1001").action_id)
        assert (await customer.wait_for(Held, call=call, timeout=5)).direction == "sendonly"
        assert await outcome(node.service.hold(OP, "1001").action_id)  # toggles back
        await customer.wait_for(Resumed, call=call, timeout=5)
        assert await outcome(node.service.mute(OP, "1001").action_id)
        await agent.wait_for(Held, call=agent_call, timeout=5)  # the agent's phone stops sending
        assert await outcome(node.service.mute(OP, "1001").action_id)
        await agent.wait_for(Resumed, call=agent_call, timeout=5)
        assert await outcome(node.service.dtmf(OP, "1001", "12#").action_id)
        digits = [(await customer.wait_for(DtmfReceived, call=call, timeout=5)).digit for _ in range(3)]
        assert digits == ["1", "2", "#"]

        node.service.transfer(OP, "1001", "1002")
        target_call = (await target.wait_for(IncomingCall, timeout=5)).call
        assert target_call.remote_sdp is None or not target_call.remote_sdp.media  # offer-less INVITE
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        await until(lambda: node.service.get_agent(OP, "1002").state == "on_call", what="target on call")
        await until(lambda: call.remote_sdp is not None and call.remote_sdp.media[0].port == target.rtp_port,
                    what="customer re-INVITEd toward the target")
        await target.wait_for(Established, call=target_call, timeout=5)  # the ACK carried the customer's answer
        assert target_call.remote_sdp is not None and target_call.remote_sdp.media[0].port == customer.rtp_port
        await call.hangup()
        await target.wait_for(CallEnded, call=target_call, timeout=5)
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0)
        await target.close()
    finally:
        await customer.close()
        await agent.close()
        await node.close()
    [cdr] = cdrs(node)
    assert cdr["agents"] == ["1001", "1002"] and cdr["transfer_count"] == 1 and cdr["hangup_by"] == "customer"
