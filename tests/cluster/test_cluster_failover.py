"""A dead node's live calls adopted (docs/cluster.md, "Failover"): two `callbridge serve --cluster` processes on
127.0.0.11 and 127.0.0.12 on one real PostgreSQL, agents as `callbridge.phone` registered to the first, a customer
calling the operation's DID on it; the first is killed with SIGKILL. The second takes the operation over within
the lease's bound and adopts the connected call: through the second node's agentbox API the call is hung up, or
transferred to another agent and then hung up, and the phones see each step (the BYEs, the transfer target's
INVITE, the customer's re-INVITE). The records end complete: the call closed by the right party, its CDR written
by the adopting node, no dialog left. A call still ringing at the death is ended with a BYE to the customer and
recorded as ended by "system".

Any node answers the API: an agentbox or native request sent to the node that does not hold the operation is
answered exactly as the owner answers it (successes and errors, byte for byte); with the owner dead and its lease
not yet expired, 503 CALL CONTROL IS NOT AVAILABLE at once, then the new owner answers itself.

A node stopped with SIGSTOP past its lease, then resumed, acts no more for the operation it lost: it re-syncs,
forwards the API's requests to the new owner, and its writes (a phone's refreshed registration) are refused."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

CLUSTER = Path(__file__).resolve().parent
if str(CLUSTER) not in sys.path:
    sys.path.insert(0, str(CLUSTER))

from cluster_nodes import Serve  # noqa: E402
from cluster_world import (  # noqa: E402
    AGENTBOX,
    CUSTOMER,
    DID,
    LEASE,
    NODE_A,
    NODE_B,
    OP,
    World,
    connected_call,
    kill_and_wait_for_adoption,
    until,
)

from callbridge.phone import CallEnded, Held, IncomingCall, Phone, RegistrationError, Resumed  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]


async def hang_up_through(world: World, node: Serve, customer: Phone, call: Any, agent: Phone,
                          agent_call: Any) -> None:
    """`api=hang` of 1001 through `node`: both parties get the BYE, and the call's CDR is written."""
    async with world.api(node) as api:
        await api.hang("1001")
    ended_customer = await customer.wait_for(CallEnded, call=call, timeout=5)
    ended_agent = await agent.wait_for(CallEnded, call=agent_call, timeout=5)
    assert (ended_customer.reason, ended_customer.by) == ("bye", "remote")
    assert (ended_agent.reason, ended_agent.by) == ("bye", "remote")
    await until(lambda: world.rows("SELECT count(*) FROM cdrs") == [(1,)], "the CDR")


async def test_a_killed_nodes_call_is_adopted_and_hung_up_through_the_other_nodes_api(world: World) -> None:
    a = world.node("a", NODE_A)
    assert world.owner() == "a"
    b = world.node("b", NODE_B)
    agent = await world.agent("1001", a)
    customer, call, agent_call, conn_id = await connected_call(world, a)

    took = await kill_and_wait_for_adoption(world, a, conn_id)
    assert took <= LEASE * 4 / 3 + 2  # the lease's bound plus a round's slack
    assert call.ended is False and agent_call.ended is False
    await hang_up_through(world, b, customer, call, agent, agent_call)
    assert world.rows("SELECT state, hangup_by, node_id FROM calls") == [("ended", "agent", "b")]
    assert world.rows("SELECT hangup_by, agents, node_id FROM cdrs") == [("agent", ["1001"], "b")]
    await until(lambda: world.rows("SELECT count(*) FROM dialogs") == [(0,)], "no dialog left")
    # the agent stayed logged in on node b: registered (its registration adopted) and no longer on the call
    await until(lambda: world.rows(
        "SELECT state, node_id FROM agent_state_history WHERE extension = '1001' ORDER BY id DESC LIMIT 1")
        == [("ready", "b")], "agent 1001 ready again on node b")
    assert world.rows("SELECT node_id FROM registrations WHERE extension = '1001'") == [("b",)]
    assert "took operation 0042 over from a: 1 calls adopted, 0 ended" in b.output()
    # node a's id starts again: what b took over is b's, so a's start-up reconciliation leaves it alone
    rows_of_a = world.rows("SELECT count(*) FROM agent_state_history WHERE node_id = 'a'")
    world.node("a", NODE_A)
    await asyncio.sleep(1.0)
    assert world.rows("SELECT count(*) FROM agent_state_history WHERE node_id = 'a'") == rows_of_a
    assert world.rows("SELECT state, node_id FROM agent_state_history WHERE extension = '1001' "
                      "ORDER BY id DESC LIMIT 1") == [("ready", "b")]
    assert world.rows("SELECT state, hangup_by, node_id FROM calls") == [("ended", "agent", "b")]
    assert world.rows("SELECT node_id FROM registrations WHERE extension = '1001'") == [("b",)]


async def test_an_adopted_call_is_transferred_to_another_agent_then_hung_up(world: World) -> None:
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    agent = await world.agent("1001", a)
    target = await world.agent("1002", a)
    customer, call, agent_call, conn_id = await connected_call(world, a)
    async with world.api(a) as api:
        await api.change_status("1002", "ready")  # after the call was offered: it went to 1001
    await until(lambda: world.rows(
        "SELECT state FROM agent_state_history WHERE extension = '1002' ORDER BY id DESC LIMIT 1") == [("ready",)],
        "1002 ready recorded")

    await kill_and_wait_for_adoption(world, a, conn_id)
    async with world.api(b) as api:
        await api.transfer("1001", "1002")
        offered = await target.wait_for(IncomingCall, timeout=10)
        ended_agent = await agent.wait_for(CallEnded, call=agent_call, timeout=10)
        assert (ended_agent.reason, ended_agent.by) == ("bye", "remote")
        await offered.call.wait_answered(10)
        await until(lambda: world.rows(f"SELECT extension, transfer_count FROM calls WHERE conn_id = '{conn_id}'")
                    == [("1002", 1)], "the call now with 1002")
        assert call.ended is False
        await api.hang("1002")
    ended_customer = await customer.wait_for(CallEnded, call=call, timeout=5)
    ended_target = await target.wait_for(CallEnded, call=offered.call, timeout=5)
    assert (ended_customer.reason, ended_customer.by) == ("bye", "remote")
    assert (ended_target.reason, ended_target.by) == ("bye", "remote")
    await until(lambda: world.rows("SELECT count(*) FROM cdrs") == [(1,)], "the CDR")
    assert world.rows("SELECT hangup_by, agents, transfer_count, node_id FROM cdrs") == [
        ("agent", ["1001", "1002"], 1, "b")]
    # the dialogs' deletes are written after the CDR, in a later batch
    await until(lambda: world.rows("SELECT count(*) FROM dialogs") == [(0,)], "no dialog left")


async def connected_with_1002_ready(world: World) -> tuple[Serve, Serve, Phone, Phone, Phone, Any, Any, str]:
    """Nodes a and b; on a, a customer's call connected to 1001, and 1002 registered and ready (recorded):
    (a, b, 1001's phone, 1002's phone, the customer's phone, its call, 1001's call, conn_id)."""
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    agent = await world.agent("1001", a)
    target = await world.agent("1002", a)
    customer, call, agent_call, conn_id = await connected_call(world, a)
    async with world.api(a) as api:
        await api.change_status("1002", "ready")
    await until(lambda: world.rows(
        "SELECT state FROM agent_state_history WHERE extension = '1002' ORDER BY id DESC LIMIT 1") == [("ready",)],
        "1002 ready recorded")
    return a, b, agent, target, customer, call, agent_call, conn_id


async def blind_transfer_ringing(world: World) -> tuple[Serve, Serve, Phone, Phone, Any, Any, str]:
    """Nodes a and b; on a, a customer's call connected to 1001, then 1001's blind transfer to 1002, whose phone
    rings and is never answered (the customer held): (a, b, agent 1001, customer, its call, 1001's call,
    conn_id)."""
    a, b, agent, target, customer, call, agent_call, conn_id = await connected_with_1002_ready(world)
    target.answer_mode = "manual"
    async with world.api(a) as api:
        await api.transfer("1001", "1002")
    await customer.wait_for(Held, call=call, timeout=10)
    await target.wait_for(IncomingCall, timeout=10)
    return a, b, agent, customer, call, agent_call, conn_id


async def test_a_blind_transfer_still_ringing_at_the_death_fails_and_the_customer_is_back_with_its_agent(
        world: World) -> None:
    """Node a rings agent 1002 for 1001's blind transfer (the customer on hold) when it is killed. The INVITE to
    1002 dies with it; node b adopts the call in its transfer and fails the transfer through the table: the
    customer is taken off hold, back with 1001 (a failed transfer never drops the customer), the transfer is
    recorded failed by b with its event, and the call ends through b's API like any adopted call."""
    a, b, agent, customer, call, agent_call, conn_id = await blind_transfer_ringing(world)
    await until(lambda: world.rows("SELECT state, node_id FROM transfers") in ([("trying", "a")], [("ringing", "a")]),
                f"the transfer written by a (transfers: {world.rows('SELECT * FROM transfers')})")

    await kill_and_wait_for_adoption(world, a, conn_id)
    resumed = await customer.wait_for(Resumed, call=call, timeout=10)
    assert resumed.direction == "sendrecv"
    await until(lambda: world.rows("SELECT state, outcome, node_id FROM transfers") == [("failed", "unreachable", "b")],
                "the transfer failed by b")
    assert "took operation 0042 over from a: 1 calls adopted, 0 ended" in b.output()
    assert world.rows(f"SELECT state, transfer_count FROM calls WHERE conn_id = '{conn_id}'") == [("connected", 0)]
    types = [t for (t,) in world.rows("SELECT type FROM events WHERE type LIKE 'transfer.%' ORDER BY seq")]
    assert types[0] == "transfer.created" and types[-1] == "transfer.failed" and set(types[1:-1]) <= {
        "transfer.ringing"}, types
    [(line,)] = world.rows("SELECT line FROM events WHERE type = 'transfer.failed'")
    failed = json.loads(line)
    assert (failed["data"]["state"], failed["data"]["failure"], failed["data"]["sip_cause"]) == (
        "failed", "unreachable", None), failed
    # 1002, rung by the dead node, is ready again on b (the restart rule); 1001 is still on the call
    assert world.rows("SELECT extension, state, node_id FROM agent_state_history WHERE id IN (SELECT max(id) FROM "
                      "agent_state_history GROUP BY extension) ORDER BY extension") == [
        ("1001", "on_call", "a"), ("1002", "ready", "b")]
    assert not call.ended and not agent_call.ended
    await hang_up_through(world, b, customer, call, agent, agent_call)
    assert world.rows("SELECT hangup_by, agents, transfer_count, node_id FROM cdrs") == [("agent", ["1001"], 0, "b")]
    assert world.rows("SELECT count(*) FROM legs WHERE ended_at IS NULL") == [(0,)]  # the target's leg too
    await until(lambda: world.rows("SELECT count(*) FROM dialogs") == [(0,)], "no dialog left")


async def test_a_blind_transfer_its_agent_left_still_ringing_at_the_death_puts_the_customer_back_in_its_queue(
        world: World) -> None:
    """1001 asks a blind transfer to 1002 (which rings, never answered) and hangs up (the transfer goes on without
    it) when node a is killed. Node b adopts the customer's leg alone with the transfer, fails it, and the customer
    goes back to the call's queue (the transfer's failure says `customer_requeued`), where 1001, ready again, gets
    it: the customer talks to 1001 again (taken off hold by the new bridge), and the call ends through b."""
    a, b, agent, customer, call, agent_call, conn_id = await blind_transfer_ringing(world)
    async with world.api(a) as api:
        await api.hang("1001")
    await agent.wait_for(CallEnded, call=agent_call, timeout=10)
    await until(lambda: world.rows("SELECT state FROM legs WHERE role = 'agent'") == [("ended",)]
                and world.rows("SELECT state, node_id FROM transfers") in ([("trying", "a")], [("ringing", "a")]),
                "the agent's leg ended and the transfer going on, written by a")

    await kill_and_wait_for_adoption(world, a, conn_id)
    again = await agent.wait_for(IncomingCall, where=lambda e: e.call is not agent_call, timeout=15)  # offered by b
    await again.call.wait_answered(10)
    resumed = await customer.wait_for(Resumed, call=call, timeout=10)
    assert resumed.direction == "sendrecv" and not call.ended
    await until(lambda: world.rows("SELECT state, outcome, customer_requeued, node_id FROM transfers") == [
        ("failed", "unreachable", True, "b")], "the transfer failed by b, the customer requeued")
    assert "took operation 0042 over from a: 1 calls adopted, 0 ended" in b.output()
    await until(lambda: world.rows(f"SELECT state, extension FROM calls WHERE conn_id = '{conn_id}'") == [
        ("connected", "1001")], "the call connected to 1001 again")
    async with world.api(b) as api:
        await api.hang("1001")
    ended_customer = await customer.wait_for(CallEnded, call=call, timeout=5)
    assert (ended_customer.reason, ended_customer.by) == ("bye", "remote")
    await until(lambda: world.rows("SELECT count(*) FROM cdrs") == [(1,)], "the CDR")
    assert world.rows("SELECT hangup_by, node_id FROM cdrs") == [("agent", "b")]
    assert world.rows("SELECT count(*) FROM legs WHERE ended_at IS NULL") == [(0,)]
    await until(lambda: world.rows("SELECT count(*) FROM dialogs") == [(0,)], "no dialog left")


async def test_an_attended_transfer_consulting_at_the_death_gives_the_customer_back_to_its_agent(
        world: World) -> None:
    """1001 consults 1002 (an attended transfer, answered: the customer held) when node a is killed. Node b adopts
    the call with its transfer, hangs up 1002's dialog, and fails the transfer as for a target that hung up while
    consulting: the customer bridged with 1001 again (re-INVITEd off hold), the transfer failed `target_hangup`."""
    a, b, agent, target, customer, call, agent_call, conn_id = await connected_with_1002_ready(world)
    async with httpx.AsyncClient(base_url=a.http, timeout=10, trust_env=False,
                                 headers={"authorization": f"Bearer {world.token}"}) as client:
        started = await client.post("/v2/transfers", json={"agent_id": "1001", "target": "1002", "kind": "attended"})
        assert started.status_code == 201, started.text
    await customer.wait_for(Held, call=call, timeout=10)
    consulted = (await target.wait_for(IncomingCall, timeout=10)).call
    await consulted.wait_answered(10)
    await until(lambda: world.rows("SELECT state, node_id FROM transfers") == [("consulting", "a")]
                and world.rows("SELECT count(*) FROM dialogs") == [(3,)], "the consultation written by a")

    await kill_and_wait_for_adoption(world, a, conn_id)
    ended_target = await target.wait_for(CallEnded, call=consulted, timeout=10)
    assert (ended_target.reason, ended_target.by) == ("bye", "remote")
    resumed = await customer.wait_for(Resumed, call=call, timeout=10)
    assert resumed.direction == "sendrecv" and not call.ended and not agent_call.ended
    await until(lambda: world.rows("SELECT state, outcome, node_id FROM transfers") == [
        ("failed", "target_hangup", "b")], "the transfer failed by b")
    assert "took operation 0042 over from a: 1 calls adopted, 0 ended" in b.output()
    await hang_up_through(world, b, customer, call, agent, agent_call)
    assert world.rows("SELECT hangup_by, agents, transfer_count, node_id FROM cdrs") == [("agent", ["1001"], 0, "b")]
    assert world.rows("SELECT count(*) FROM legs WHERE ended_at IS NULL") == [(0,)]
    await until(lambda: world.rows("SELECT count(*) FROM dialogs") == [(0,)], "no dialog left")


async def test_a_call_ringing_at_the_death_is_ended_and_recorded_by_system(world: World) -> None:
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    agent = await world.agent("1001", a)
    agent.answer_mode = "manual"
    async with world.api(a) as api:
        await api.change_status("1001", "ready")
    customer = await Phone.start(host=CUSTOMER, user="3105550000", name="customer")
    world.phones["customer"] = customer
    call = await customer.call(f"sip:{DID}@{NODE_A}:{a.port}", wait_answer=False)
    await agent.wait_for(IncomingCall, timeout=10)
    await until(lambda: world.rows("SELECT state, node_id FROM calls WHERE ended_at IS NULL") == [("queued", "a")],
                "the call recorded (its state is written when it is queued, then when it is answered)")
    a.kill()
    await until(lambda: world.owner() == "b", "node b holding the operation", timeout=LEASE * 4 / 3 + 3)
    await until(lambda: world.rows("SELECT state, hangup_by, node_id FROM calls") == [("ended", "system", "b")],
                "the ringing call closed by node b")
    assert world.rows("SELECT hangup_by, node_id FROM cdrs") == [("system", "a")]
    # the agent was being rung: the restart rule brings it back ready, with reason restart, written by node b
    await until(lambda: world.rows(
        "SELECT state, reason, node_id FROM agent_state_history WHERE extension = '1001' ORDER BY id DESC LIMIT 1")
        == [("ready", "restart", "b")], "agent 1001 ready again")
    assert "took operation 0042 over from a: 0 calls adopted, 1 ended" in b.output()
    assert call.ended is False  # its INVITE was never answered: no dialog to BYE; its transaction died with node a


# --- any node answers the API (docs/cluster.md, "Any node answers the API") ------------------------------------

async def _post(node: Serve, token: str, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.http, timeout=10, trust_env=False) as client:
        return await client.post(AGENTBOX, params=params, headers={"wolkvox-token": token, "wolkvox_server": OP})


async def _get(node: Serve, token: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.http, timeout=10, trust_env=False) as client:
        return await client.get(path, headers={"authorization": f"Bearer {token}"})


async def test_a_request_sent_to_the_wrong_node_is_answered_as_by_the_owner(world: World) -> None:
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    await world.agent("1001", a)
    assert world.owner() == "a"
    ready = await _post(b, world.token, api="change_status", agent_id="1001", status="ready")
    assert (ready.status_code, ready.json()["code"], ready.json()["error"]) == (200, "200", None)
    # node a made the change: its row, and node a's memory, which both nodes' native API now show
    await until(lambda: world.rows("SELECT state, node_id FROM agent_state_history WHERE extension = '1001' "
                                   "ORDER BY id DESC LIMIT 1") == [("ready", "a")], "the change recorded by a")
    via_b, via_a = await _get(b, world.token, "/v2/agents/1001"), await _get(a, world.token, "/v2/agents/1001")
    assert via_b.status_code == via_a.status_code == 200
    assert (via_b.json()["state"], via_b.json()["registered"]) == ("ready", True)
    assert via_b.json() == via_a.json()
    # errors too: the same status, envelope and message from either node
    for params in ({"api": "hang", "agent_id": "1001"}, {"api": "change_status", "agent_id": "9999",
                                                         "status": "ready"}):
        wrong, right = await _post(b, world.token, **params), await _post(a, world.token, **params)
        assert wrong.status_code == right.status_code >= 400
        assert wrong.content == right.content
    missing_b, missing_a = await _get(b, world.token, "/v2/calls/nope"), await _get(a, world.token, "/v2/calls/nope")
    assert (missing_b.status_code, missing_b.content) == (missing_a.status_code, missing_a.content)
    assert missing_b.status_code == 404
    # a token no node knows is refused by the node it reaches, as the owner would
    refused = await _post(b, "not-a-token", api="change_status", agent_id="1001", status="ready")
    assert (refused.status_code, refused.json()["msg"]) == (403, "PLEASE VALIDATE TOKEN")


async def test_a_request_for_an_operation_whose_owner_is_down_answers_503_at_once(world: World) -> None:
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    await world.agent("1001", a)
    await until(lambda: world.rows("SELECT node_id FROM registrations") == [("a",)], "the registration written")
    # kill a just after it renewed: its lease names it for most of a lease more, and b may not take it before
    await until(lambda: world.rows(f"SELECT expires_at > now() + interval '{LEASE - 0.5} seconds' FROM "
                                   f"cluster_leases WHERE operation_id = '{OP}' AND node_id = 'a'") == [(True,)],
                "a fresh renewal by node a", timeout=LEASE)
    a.kill()
    started = time.monotonic()
    refused = await _post(b, world.token, api="change_status", agent_id="1001", status="ready")
    problem = await _get(b, world.token, "/v2/agents/1001")
    assert time.monotonic() - started < 1.5  # at once: no wait for the lease
    assert world.owner() == "a"  # still a's lease: these 503s were the forwarding's, not a missing operation's
    assert refused.status_code == 503
    assert refused.json() == {"code": "503", "error": "SERVICE UNAVAILABLE", "msg": "CALL CONTROL IS NOT AVAILABLE"}
    assert problem.status_code == 503 and problem.headers["content-type"].startswith("application/problem+json")
    assert (problem.json()["error"], problem.json()["title"]) == ("CALL_CONTROL_UNAVAILABLE",
                                                                  "CALL CONTROL IS NOT AVAILABLE")
    # once b took the operation over it answers itself: 1001's registration came with it
    await until(lambda: world.owner() == "b", "node b holding the operation", timeout=LEASE * 4 / 3 + 3)
    await until(lambda: "took operation 0042 over" in b.output(), "the takeover done", timeout=5)
    answered = await _post(b, world.token, api="change_status", agent_id="1001", status="ready")
    assert answered.status_code == 200


async def test_a_node_stopped_past_its_lease_then_resumed_acts_no_more_for_the_operation(world: World) -> None:
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    agent = await world.agent("1001", a)
    await until(lambda: world.rows("SELECT node_id FROM registrations") == [("a",)], "the registration written")
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        await until(lambda: world.owner() == "b", "node b holding the operation", timeout=LEASE * 4 / 3 + 3)
        await until(lambda: "took operation 0042 over from a" in b.output(), "the takeover done", timeout=5)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    await until(lambda: "node a no longer acts for operation 0042" in a.output(), "node a re-synced", timeout=5)
    # a request sent to the resumed node is answered by the owner: a forwards it, b makes the change
    answered = await _post(a, world.token, api="change_status", agent_id="1001", status="ready")
    assert answered.status_code == 200, answered.text
    await until(lambda: world.rows("SELECT state, node_id FROM agent_state_history WHERE extension = '1001' "
                                   "ORDER BY id DESC LIMIT 1") == [("ready", "b")], "the change made by b")
    # the phone refreshing its registration at the old node: a refuses it 503 (the owner registers it), and
    # writes nothing
    with pytest.raises(RegistrationError) as refused:
        await agent.register(a.sip, expires=300, timeout=10)
    assert (refused.value.status, refused.value.reason, refused.value.retry_after) == (503, "Operation Moving", 2)
    await asyncio.sleep(0.5)
    assert world.rows("SELECT node_id FROM registrations WHERE extension = '1001'") == [("b",)]
