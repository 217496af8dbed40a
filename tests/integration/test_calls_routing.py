"""Queue routing through callbridge on loopback: the agent idle longest gets the call, ring-no-answer and busy move
it to the next agent, a CANCEL while ringing is propagated, nobody available ends in 480 with Retry-After, and an
agent with two registered phones is rung on both (first answer wins, the other is cancelled)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from callnode import OP, agent_phone, cdrs, customer_phone, did_uri, start_node, state_history, until

from callbridge.phone import CallEnded, CallFailed, IncomingCall, Phone
from callbridge.sip import Response, parse

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]


def final_responses(phone: Phone) -> list[Response]:
    """Every final response the phone receives from now on, as parsed from the wire."""
    seen: list[Response] = []
    endpoint = phone.endpoint
    original = endpoint.receive_datagram

    def receive(data: bytes, addr: tuple[str, int], now: float, transport: str = "udp") -> None:
        message = parse(data) if data.startswith(b"SIP/2.0 ") else None
        if isinstance(message, Response) and message.status >= 200:
            seen.append(message)
        original(data, addr, now, transport)

    endpoint.receive_datagram = receive  # type: ignore[method-assign]
    return seen


async def test_longest_idle_first_then_ring_no_answer_moves_on(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    first = await agent_phone(node, "1002")  # ready first: idle longest
    await asyncio.sleep(0.05)
    second = await agent_phone(node, "1001")
    customer = await customer_phone()
    try:
        call = await customer.call(did_uri(node), wait_answer=False)
        offered = await first.wait_for(IncomingCall, timeout=5)
        await offered.call.ring()
        # ring timeout (2 s): 1002's phone is cancelled, 1001's rings
        cancelled = await first.wait_for(CallEnded, call=offered.call, timeout=5)
        assert cancelled.reason == "cancelled"
        offered2 = await second.wait_for(IncomingCall, timeout=5)
        await offered2.call.answer()
        await call.wait_answered(5)
        await until(lambda: node.service.get_agent(OP, "1001").state == "on_call")
        await offered2.call.hangup()
        await customer.wait_for(CallEnded, call=call, timeout=5)
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0)
    finally:
        for phone in (customer, first, second):
            await phone.close()
        await node.close()
    assert [s for s, _ in state_history(node, "1002")] == ["ready", "ringing", "ready"]
    assert [s for s, _ in state_history(node, "1001")] == ["ready", "ringing", "on_call", "acw", "ready"]
    [cdr] = cdrs(node)
    assert cdr["agents"] == ["1001"] and cdr["hangup_by"] == "agent"
    assert [(leg["role"], leg["party"], leg["sip_status"]) for leg in cdr["legs"]][1] == ("agent", "1002", 408)


async def test_busy_moves_on_and_cancel_while_ringing_reaches_the_agent(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    busy = await agent_phone(node, "1001", answer="auto", auto_answer_status=486)
    await asyncio.sleep(0.05)
    other = await agent_phone(node, "1002")
    customer = await customer_phone()
    try:
        call = await customer.call(did_uri(node), wait_answer=False)
        offered = await other.wait_for(IncomingCall, timeout=5)  # 1001 answered 486 at once
        await offered.call.ring()
        await until(lambda: node.service.get_agent(OP, "1002").state == "ringing")
        await call.hangup()  # CANCEL while the agent's phone rings
        ended = await other.wait_for(CallEnded, call=offered.call, timeout=5)
        assert ended.reason == "cancelled"
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0)
        await until(lambda: node.service.get_agent(OP, "1002").state == "ready")
    finally:
        for phone in (customer, busy, other):
            await phone.close()
        await node.close()
    [cdr] = cdrs(node)
    assert cdr["hangup_by"] == "customer" and cdr["answered_at"] is None and cdr["agents"] == []
    statuses = {(leg["party"], leg["sip_status"]) for leg in cdr["legs"] if leg["role"] == "agent"}
    assert ("1001", 486) in statuses
    assert [s for s, _ in state_history(node, "1001")][:3] == ["ready", "ringing", "ready"]


async def test_nobody_available_waits_then_480(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    customer = await customer_phone()
    try:
        finals = final_responses(customer)
        started = asyncio.get_running_loop().time()
        call = await customer.call(did_uri(node), wait_answer=False)
        failed = await customer.wait_for(CallFailed, call=call, timeout=10)
        waited = asyncio.get_running_loop().time() - started
        assert failed.status == 480
        [final] = [r for r in finals if r.cseq.method == "INVITE"]
        assert (final.status, final.headers.get("Retry-After")) == (480, "42")  # the queue's retry_after
        assert 2.5 < waited < 6  # the queue's max_wait_seconds is 3
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0)
    finally:
        await customer.close()
        await node.close()
    [cdr] = cdrs(node)
    assert (cdr["hangup_by"], cdr["sip_cause"], cdr["answered_at"]) == ("system", 480, None)


async def test_two_phones_of_one_agent_first_answer_wins(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    desk = await agent_phone(node, "1001")
    mobile = await agent_phone(node, "1001", ready=False)
    customer = await customer_phone()
    try:
        assert len(node.switch.registrar.contacts_for(OP, "1001", node.switch.wall())) == 2
        call = await customer.call(did_uri(node), wait_answer=False)
        on_desk = await desk.wait_for(IncomingCall, timeout=5)
        on_mobile = await mobile.wait_for(IncomingCall, timeout=5)
        await on_desk.call.ring()
        await on_mobile.call.ring()
        await on_mobile.call.answer()
        await call.wait_answered(5)
        cancelled = await desk.wait_for(CallEnded, call=on_desk.call, timeout=5)
        assert cancelled.reason == "cancelled"
        await call.hangup()
        ended = await mobile.wait_for(CallEnded, call=on_mobile.call, timeout=5)
        assert (ended.reason, ended.by) == ("bye", "remote")
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0)
    finally:
        for phone in (customer, desk, mobile):
            await phone.close()
        await node.close()
    [cdr] = cdrs(node)
    assert cdr["agents"] == ["1001"] and cdr["hangup_by"] == "customer"
