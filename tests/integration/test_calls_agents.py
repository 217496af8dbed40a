"""Calls agents make through callbridge (digest-challenged INVITEs): agent to agent by extension, agent to an
outside number through the trunk (the gateway is a phone on 127.0.0.3), and the refusals that change nothing:
407 before any lookup (identical for unknown extensions), 404, 403, 484, 482, 483, 481."""

from __future__ import annotations

from pathlib import Path

import pytest
from callnode import (
    DOMAIN,
    GATEWAY_HOST,
    OP,
    agent_phone,
    cdrs,
    customer_phone,
    did_uri,
    operation_doc,
    start_node,
    state_history,
    until,
)

from callbridge.phone import CallEnded, CallError, IncomingCall, Phone
from callbridge.sip import parse

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]


HISTORY_1001 = ["ready", "ringing", "on_call", "acw", "ready"]  # dialling out is "ringing" in the table


def to(node_address: tuple[str, int], user: str) -> tuple[str, tuple[str, int]]:
    return f"sip:{user}@{DOMAIN}", node_address


async def test_agent_calls_agent(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    caller = await agent_phone(node, "1001")
    callee = await agent_phone(node, "1002")
    try:
        uri, dest = to(node.sip_address, "1002")
        call = await caller.call(uri, dest=dest, wait_answer=False)
        incoming = await callee.wait_for(IncomingCall, timeout=5)
        assert incoming.request.from_.uri.user == "1001"
        await until(lambda: node.service.get_agent(OP, "1002").state == "ringing")
        await incoming.call.answer()
        await call.wait_answered(5)
        assert call.remote_sdp is not None and call.remote_sdp.media[0].port == callee.rtp_port
        await until(lambda: node.service.get_agent(OP, "1001").state == "on_call"
                    and node.service.get_agent(OP, "1002").state == "on_call")
        await incoming.call.hangup()
        await caller.wait_for(CallEnded, call=call, timeout=5)
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0)
    finally:
        await caller.close()
        await callee.close()
        await node.close()
    [cdr] = cdrs(node)
    assert cdr["direction"] == "internal" and cdr["customer_number"] == "1002"
    assert [s for s, _ in state_history(node, "1001")] == HISTORY_1001
    assert [s for s, _ in state_history(node, "1002")] == ["ready", "ringing", "on_call", "acw", "ready"]


async def test_agent_calls_outside_through_the_trunk(tmp_path: Path) -> None:
    gateway = await Phone.start(host=GATEWAY_HOST, user="gateway", name="gateway")
    node = await start_node(tmp_path, doc=operation_doc(gateway_port=gateway.port))
    agent = await agent_phone(node, "1001")
    try:
        uri, dest = to(node.sip_address, "3105551234")
        call = await agent.call(uri, dest=dest, wait_answer=False)
        incoming = await gateway.wait_for(IncomingCall, timeout=5)
        assert incoming.request.uri.user == "3105551234"
        assert incoming.request.uri.host == GATEWAY_HOST
        await incoming.call.answer()
        await call.wait_answered(5)
        await call.hangup()
        await gateway.wait_for(CallEnded, call=incoming.call, timeout=5)
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0)
    finally:
        await agent.close()
        await gateway.close()
        await node.close()
    [cdr] = cdrs(node)
    assert (cdr["direction"], cdr["customer_number"], cdr["hangup_by"]) == ("outbound", "3105551234", "agent")


@pytest.mark.parametrize(("dialled", "status"), [("1999", 484), ("bob", 404)])
async def test_refused_numbers_change_nothing(tmp_path: Path, dialled: str, status: int) -> None:
    node = await start_node(tmp_path)
    agent = await agent_phone(node, "1001")
    try:
        before = state_history(node, "1001")
        uri, dest = to(node.sip_address, dialled)
        with pytest.raises(CallError) as refused:
            await agent.call(uri, dest=dest, timeout=5)
        assert refused.value.status == status
        assert node.service.get_agent(OP, "1001").state == "ready" and node.live_legs == 0
        assert state_history(node, "1001") == before
    finally:
        await agent.close()
        await node.close()
    assert cdrs(node) == []


async def test_unauthenticated_requests(tmp_path: Path) -> None:
    """No credentials: 407, the same for a known and an unknown extension; wrong ones too; loops and unknown
    dialogs; nothing written."""
    node = await start_node(tmp_path)
    intruder = await Phone.start(host="127.0.0.1", user="1001", domain=DOMAIN, name="no-password")
    stranger = await Phone.start(host="127.0.0.1", user="7777", domain=DOMAIN, password="whatever-7777")
    customer = await customer_phone()
    try:
        for phone in (intruder, stranger):
            with pytest.raises(CallError) as refused:
                await phone.call(f"sip:1002@{DOMAIN}", dest=node.sip_address, timeout=5)
            assert refused.value.status == 407
        # a trunk call to an unknown DID
        with pytest.raises(CallError) as unknown:
            await customer.call(did_uri(node, "6999"), timeout=5)
        assert unknown.value.status == 404
        # loops: Max-Forwards 0, and our own Via
        host, port = node.sip_address
        for headers, status in (([("Max-Forwards", "0")], 483),
                                ([("Via", f"SIP/2.0/UDP {host}:{port};branch=z9hG4bKloop")], 482)):
            reply = await raw_invite(customer, node.sip_address, headers)
            assert reply == status
        # an in-dialog request for a dialog that does not exist
        assert await raw_request(customer, node.sip_address, "BYE", to_tag="nosuch") == 481
    finally:
        for phone in (intruder, stranger, customer):
            await phone.close()
        await node.close()
    assert cdrs(node) == []


async def raw_invite(phone: Phone, dest: tuple[str, int], extra: list[tuple[str, str]]) -> int:
    return await raw_request(phone, dest, "INVITE", extra=extra)


async def raw_request(phone: Phone, dest: tuple[str, int], method: str, *, extra: list[tuple[str, str]] = (),
                      to_tag: str | None = None) -> int:
    """Send one hand-made request from a plain UDP socket and return the first final status."""
    import asyncio
    import secrets
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((phone.host, 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    # A branch and a Call-ID of their own: two raw requests in a row may get the same port from the kernel, and the
    # same branch and sent-by would make the second a retransmission of the first (RFC 3261 §17.2.3), the same
    # Call-ID and From tag a merged request (§8.2.2.2): either way not the answer the test asks for.
    vias = [f"SIP/2.0/UDP {phone.host}:{port};branch=z9hG4bKraw{method}{secrets.token_hex(6)};rport"]
    others = []
    for name, value in extra:
        (vias if name == "Via" else others).append(value)
    to = f"<sip:6000@{dest[0]}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} sip:6000@{dest[0]}:{dest[1]} SIP/2.0", *[f"Via: {v}" for v in vias],
             f"From: <sip:3105550000@{phone.host}>;tag=raw1", f"To: {to}",
             f"Call-ID: raw-{method}-{secrets.token_hex(8)}",
             f"CSeq: 1 {method}", f"Contact: <sip:3105550000@{phone.host}:{port}>"]
    if not any(name == "Max-Forwards" for name, _ in extra):
        lines.append("Max-Forwards: 70")
    lines += [f"{n}: {v}" for n, v in extra if n not in ("Via",)]
    data = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendto(sock, data, dest)
        while True:
            packet = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
            message = parse(packet)
            status = getattr(message, "status", 0)
            if status >= 200:
                return int(status)
    finally:
        sock.close()
