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

from callbridge.phone import CallEnded, Established, Held, IncomingCall, Resumed, Ringing

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

