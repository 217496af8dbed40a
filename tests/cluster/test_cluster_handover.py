"""Moves and drains carry calls (docs/cluster.md, "Moving and draining"): two `callbridge serve --cluster`
processes on 127.0.0.11 and 127.0.0.12 on one real PostgreSQL, agents and a customer as `callbridge.phone` with
RTP tone endpoints (the media goes between the phones, never through a node). A connected call on node a stays up
while `callbridge admin cluster move` or `drain` hands its operation to node b: a lets it go (nothing sent to the
phones), b adopts it from the records; each party still hears the other's tone, b's API transfers and hangs it
up, and the CDR is complete, written by b. A call still ringing when the move is asked for is waited for: it
connects on a, then goes over with the operation; meanwhile a refuses new calls for the operation (503)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CLUSTER = Path(__file__).resolve().parent
if str(CLUSTER) not in sys.path:
    sys.path.insert(0, str(CLUSTER))

from cluster_nodes import CALLBRIDGE, Serve  # noqa: E402
from cluster_world import CUSTOMER, DID, LEASE, NODE_A, NODE_B, OP, World, connected_call, until  # noqa: E402

from callbridge.phone import CallEnded, CallFailed, IncomingCall, Phone  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

CUSTOMER_HZ, AGENT_HZ, TARGET_HZ = 1000.0, 700.0, 500.0


async def admin(world: World, *args: str) -> str:
    """`callbridge admin --database-url ... cluster ARGS` as a process; its output (exit status 0 asserted)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    done = await asyncio.to_thread(subprocess.run, [*CALLBRIDGE, "admin", "--database-url", world.url, "cluster",
                                                    *args, "--lease-seconds", str(LEASE)],
                                   capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def hears(phone: Phone, call: Any, hz: float, seconds: float = 1.0) -> float:
    """The share of the next `seconds` in which `call` heard `hz` (the phone's tone endpoint)."""
    start = phone.now()
    await asyncio.sleep(seconds)
    share: float = call.rtp.heard(start, phone.now()).share(hz, tolerance=5)
    return share


async def adopted_by_b(world: World, a: Serve, b: Serve, conn_id: str, ended: int = 0) -> None:
    await until(lambda: world.owner() == "b", "node b holding the operation", timeout=4 * LEASE)
    await until(lambda: world.rows(f"SELECT node_id FROM calls WHERE conn_id = '{conn_id}'") == [("b",)],
                "the call re-owned by node b", timeout=5)
    await until(lambda: f"took operation {OP} over from a: 1 calls adopted, 0 ended" in b.output(),
                "node b's takeover", timeout=5)
    assert f"handed operation {OP} over: 1 calls left to the new owner, {ended} ended (unsettled)" in a.output()


async def test_a_move_carries_a_connected_call_which_b_then_transfers_and_hangs_up(world: World) -> None:
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    agent = await world.agent("1001", a, media=True)
    target = await world.agent("1002", a, media=True)
    customer, call, agent_call, conn_id = await connected_call(world, a, media=True)
    async with world.api(a) as api:
        await api.change_status("1002", "ready")  # after the call was offered: it went to 1001
    await until(lambda: world.rows(
        "SELECT state FROM agent_state_history WHERE extension = '1002' ORDER BY id DESC LIMIT 1") == [("ready",)],
        "1002 ready recorded")
    call.rtp.play_tone(CUSTOMER_HZ)
    agent_call.rtp.play_tone(AGENT_HZ)
    assert await hears(agent, agent_call, CUSTOMER_HZ, 0.6) >= 0.8

    said = await admin(world, "move", OP, "b")
    assert said.startswith(f"operation {OP} moves to node b")
    await adopted_by_b(world, a, b, conn_id)
    # the call stayed up through the handover: nobody was sent a BYE, each still hears the other
    assert call.ended is False and agent_call.ended is False
    assert await hears(agent, agent_call, CUSTOMER_HZ) >= 0.9
    assert await hears(customer, call, AGENT_HZ) >= 0.9

    async with world.api(b) as api:
        await api.transfer("1001", "1002")
        offered = await target.wait_for(IncomingCall, timeout=10)
        ended_agent = await agent.wait_for(CallEnded, call=agent_call, timeout=10)
        assert (ended_agent.reason, ended_agent.by) == ("bye", "remote")
        await offered.call.wait_answered(10)
        offered.call.rtp.play_tone(TARGET_HZ)
        await until(lambda: world.rows(f"SELECT extension, transfer_count FROM calls WHERE conn_id = '{conn_id}'")
                    == [("1002", 1)], "the call now with 1002")
        await asyncio.sleep(0.3)  # the customer's re-INVITE with the target's SDP
        assert await hears(customer, call, TARGET_HZ) >= 0.9
        assert await hears(target, offered.call, CUSTOMER_HZ) >= 0.9
        await api.hang("1002")
    ended_customer = await customer.wait_for(CallEnded, call=call, timeout=5)
    assert (ended_customer.reason, ended_customer.by) == ("bye", "remote")
    await until(lambda: world.rows("SELECT count(*) FROM cdrs") == [(1,)], "the CDR")
    assert world.rows("SELECT hangup_by, agents, transfer_count, node_id FROM cdrs") == [
        ("agent", ["1001", "1002"], 1, "b")]
    assert world.rows("SELECT state, hangup_by, node_id FROM calls") == [("ended", "agent", "b")]
    # the dialogs' deletes are written after the CDR, in a later batch
    await until(lambda: world.rows("SELECT count(*) FROM dialogs") == [(0,)], "no dialog left")
    # node a wrote nothing for the operation after it let go (no refused write), and sent no BYE of its own
    assert "storage write refused by the cluster fence" not in a.output()


async def test_a_drain_carries_the_call_and_the_drained_node_stops_without_dropping_it(world: World) -> None:
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    agent = await world.agent("1001", a, media=True)
    customer, call, agent_call, conn_id = await connected_call(world, a, media=True)
    call.rtp.play_tone(CUSTOMER_HZ)
    agent_call.rtp.play_tone(AGENT_HZ)

    said = await admin(world, "drain", "a")
    assert said.startswith("node a drains: it releases 1 operations (0042)")
    await adopted_by_b(world, a, b, conn_id)
    await asyncio.to_thread(a.stop)  # SIGTERM: nothing left to end on a (off the loop: the phones' media goes on)
    assert a.proc.returncode == 0
    assert "legs still live at the end of the drain" not in a.output()  # the drain found nothing to end
    assert call.ended is False and agent_call.ended is False
    assert await hears(agent, agent_call, CUSTOMER_HZ) >= 0.9
    assert await hears(customer, call, AGENT_HZ) >= 0.9
    # the agent stays logged in, on the call, now on node b
    assert world.rows("SELECT node_id FROM registrations WHERE extension = '1001'") == [("b",)]
    async with world.api(b) as api:
        await api.hang("1001")
    ended_customer = await customer.wait_for(CallEnded, call=call, timeout=5)
    ended_agent = await agent.wait_for(CallEnded, call=agent_call, timeout=5)
    assert (ended_customer.by, ended_agent.by) == ("remote", "remote")
    await until(lambda: world.rows("SELECT count(*) FROM cdrs") == [(1,)], "the CDR")
    assert world.rows("SELECT hangup_by, agents, transfer_count, node_id FROM cdrs") == [
        ("agent", ["1001"], 0, "b")]
    await until(lambda: world.rows(
        "SELECT state, node_id FROM agent_state_history WHERE extension = '1001' ORDER BY id DESC LIMIT 1")
        == [("ready", "b")], "agent 1001 ready again on node b")


async def test_a_move_waits_for_a_ringing_call_to_connect_and_refuses_new_calls_meanwhile(world: World) -> None:
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    agent = await world.agent("1001", a)
    agent.answer_mode = "manual"
    async with world.api(a) as api:
        await api.change_status("1001", "ready")
    customer = await Phone.start(host=CUSTOMER, user="3105550000", name="customer")
    world.phones["customer"] = customer
    call = await customer.call(f"sip:{DID}@{NODE_A}:{a.port}", wait_answer=False)
    offered = await agent.wait_for(IncomingCall, timeout=10)

    await admin(world, "move", OP, "b")
    await until(lambda: f"handing operation {OP} over: no new calls for it here" in a.output(), "the handover begun",
                timeout=2 * LEASE)
    late = await Phone.start(host=CUSTOMER, user="3105550001", name="late-customer")  # the carrier
    world.phones["late"] = late
    refused = await late.call(f"sip:{DID}@{NODE_A}:{a.port}", wait_answer=False)
    failed = await late.wait_for(CallFailed, call=refused, timeout=5)
    assert failed.status == 503
    assert world.owner() == "a"  # a keeps the lease while the call rings
    await offered.call.answer()
    await call.wait_answered(5)
    await until(lambda: world.rows("SELECT count(*) FROM dialogs") == [(2,)], "both dialogs written through")
    [(conn_id,)] = world.rows("SELECT conn_id FROM calls WHERE ended_at IS NULL")
    await adopted_by_b(world, a, b, conn_id)
    assert call.ended is False and offered.call.ended is False
    async with world.api(b) as api:
        await api.hang("1001")
    await customer.wait_for(CallEnded, call=call, timeout=5)
    await until(lambda: world.rows("SELECT hangup_by, node_id FROM cdrs") == [("agent", "b")], "the CDR")


async def test_a_bye_sent_to_the_old_node_after_a_move_is_handed_on_to_the_new_owner(world: World) -> None:
    """Without Kamailio the customer's phone sends its BYE to the Contact of node a, which set the call up: a
    forgot the dialog in the handover and hands the request on, unchanged, to b, which answers the customer
    directly (its Via) and ends the call: the agent gets b's BYE, the CDR says the customer hung up."""
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    agent = await world.agent("1001", a)
    _customer, call, agent_call, conn_id = await connected_call(world, a)
    await admin(world, "move", OP, "b")
    await adopted_by_b(world, a, b, conn_id)
    await asyncio.sleep(2 * LEASE / 3)  # a's next round reads who holds the operation now
    await call.hangup()
    ended = await agent.wait_for(CallEnded, call=agent_call, timeout=5)
    assert (ended.reason, ended.by) == ("bye", "remote")
    await until(lambda: world.rows("SELECT hangup_by, node_id FROM cdrs") == [("customer", "b")], "b's CDR")
    await until(lambda: world.rows("SELECT count(*) FROM dialogs") == [(0,)], "no dialog left")
