"""A token's limits hold cluster-wide (docs/cluster.md, "Any node answers the API"; agentbox contract, "Limits"):
two `callbridge serve --cluster` processes on one real PostgreSQL, node a owning operation 0042, requests of one
token sent to both nodes.

- Concurrency: every request of the operation is admitted by its owner (node b forwards its share there), so the
  limit counts the requests in flight on all nodes together: with a limit of 2, one slow request through a and one
  through b are both admitted, and a third through either node is refused 403 with the contract's message.
- Daily quota: counted in PostgreSQL (`token_usage`), one count for every node; a `kill -9` of the owner does not
  reset it: the node that takes the operation over refuses exactly when the day's requests reach the quota.
- No node holding the operation (its only node drained it): 503 CALL CONTROL IS NOT AVAILABLE at once, agentbox
  and native, never a hang.

`TokenUsage` itself (the conditional upsert) is checked on the same PostgreSQL: counts to the quota, refuses
without counting, starts again on a later day and never goes back to an older one."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

CLUSTER = Path(__file__).resolve().parent
if str(CLUSTER) not in sys.path:
    sys.path.insert(0, str(CLUSTER))

from cluster_nodes import Serve, loaded_database  # noqa: E402
from cluster_world import AGENTBOX, LEASE, NODE_A, NODE_B, OP, World, connected_call, operation_doc, until  # noqa: E402

from callbridge.cluster import nodes  # noqa: E402
from callbridge.http.auth import Principal, Refused, TokenGate  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402
from callbridge.storage.token_usage import TokenUsage  # noqa: E402
from peers.ports import free_port  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

SIMULTANEOUS = {"code": "403", "error": "FORBIDDEN", "msg": "EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (2)"}
QUOTA = {"code": "403", "error": "FORBIDDEN", "msg": "TOKEN LIMIT EXCEEDED"}
UNAVAILABLE = {"code": "503", "error": "SERVICE UNAVAILABLE", "msg": "CALL CONTROL IS NOT AVAILABLE"}


def _limited_world(postgres_url: str, tmp_path: Path, **token: int):  # type: ignore[no-untyped-def]
    doc = operation_doc()
    doc["tokens"] = [{"label": "limited", **token}]

    async def made() -> AsyncIterator[World]:
        with loaded_database(postgres_url, doc) as (url, [plain]):
            world = World(url, plain, tmp_path)
            try:
                yield world
            finally:
                await world.close()
    return made()


@pytest.fixture
async def two_at_a_time(postgres_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    async for world in _limited_world(postgres_url, tmp_path, concurrency_limit=2):
        yield world


@pytest.fixture
async def five_a_day(postgres_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    async for world in _limited_world(postgres_url, tmp_path, concurrency_limit=4, daily_quota=5):
        yield world


async def _post(node: Serve, token: str, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.http, timeout=20, trust_env=False) as client:
        return await client.post(AGENTBOX, params=params, headers={"wolkvox-token": token, "wolkvox_server": OP})


async def _get(node: Serve, token: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.http, timeout=20, trust_env=False) as client:
        return await client.get(path, headers={"authorization": f"Bearer {token}"})


def _in_flight(node: Serve) -> int:
    """Requests holding a token slot on `node` (its /metrics)."""
    metrics = httpx.get(f"{node.http}/metrics", timeout=5, trust_env=False).text
    [line] = [x for x in metrics.splitlines() if x.startswith("callbridge_http_requests_in_flight ")]
    return int(float(line.split()[1]))


async def test_the_concurrency_limit_counts_the_requests_in_flight_on_every_node(two_at_a_time: World) -> None:
    world = two_at_a_time
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    await world.agent("1001", a)
    await world.agent("1002", a)
    assert world.owner() == "a"
    customer, _call, _agent_call, conn_id = await connected_call(world, a)
    await customer.runtime.close()  # the customer's phone vanishes: hold and dtmf wait for it (5 s), then 409
    first = asyncio.create_task(_post(a, world.token, api="hold", agent_id="1001"))
    await until(lambda: _in_flight(a) == 1, "the first slow request in flight at a")
    # one in flight cluster-wide: b's request is forwarded and admitted by a, the second of two
    second = asyncio.create_task(_post(b, world.token, api="dtmf", agent_id="1001", tones="9"))
    await until(lambda: _in_flight(a) == 2, "the second slow request, sent to b, in flight at a")
    assert _in_flight(b) == 0  # b holds no slot for what it forwards
    # two in flight cluster-wide: a third is refused whichever node it reaches, and does nothing
    history = "SELECT count(*) FROM agent_state_history WHERE extension = '1002'"
    before = world.rows(history)
    for node in (b, a):
        third = await _post(node, world.token, api="change_status", agent_id="1002", status="ready")
        assert (third.status_code, third.json()) == (403, SIMULTANEOUS)
        native = await _get(node, world.token, "/v2/agents/1002")
        assert (native.status_code, native.json()["error"]) == (403, "CONCURRENCY_LIMIT")
    await asyncio.sleep(0.3)  # what a write-through of a change would take
    assert world.rows(history) == before
    for answer in await asyncio.gather(first, second):
        assert (answer.status_code, answer.json()["msg"]) == (409, "CALL COULD NOT BE UPDATED")
    assert world.rows(f"SELECT ended_at IS NULL FROM calls WHERE conn_id = '{conn_id}'") == [(True,)]
    # the slots are back: b's request is admitted again
    again = await _post(b, world.token, api="change_status", agent_id="1002", status="ready")
    assert again.status_code == 200, again.text
    await until(lambda: world.rows(history) != before, "the admitted change recorded")
    assert (_in_flight(a), _in_flight(b)) == (0, 0)


async def test_the_daily_quota_is_one_count_for_every_node_and_survives_a_kill_9_of_the_owner(
        five_a_day: World) -> None:
    world = five_a_day
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    await world.agent("1001", a)
    assert world.owner() == "a"
    [(token_id,)] = world.rows("SELECT id FROM tokens")
    # three requests through both nodes, agentbox and native: one count of 3
    assert (await _post(a, world.token, api="change_status", agent_id="1001", status="ready")).status_code == 200
    assert (await _post(b, world.token, api="change_status", agent_id="1001", status="ready")).status_code == 200
    assert (await _get(b, world.token, "/v2/agents/1001")).status_code == 200
    assert world.rows("SELECT token_id, used FROM token_usage") == [(token_id, 3)]
    # kill -9 of the owner just after a renewal; b takes the operation over and goes on from 3, not from 0
    await until(lambda: world.rows(f"SELECT expires_at > now() + interval '{LEASE - 0.5} seconds' FROM "
                                   f"cluster_leases WHERE operation_id = '{OP}' AND node_id = 'a'") == [(True,)],
                "a fresh renewal by node a", timeout=LEASE)
    a.kill()
    down = await _post(b, world.token, api="change_status", agent_id="1001", status="ready")
    assert (down.status_code, down.json()) == (503, UNAVAILABLE)  # the owner is dead: not counted at all
    assert world.rows("SELECT used FROM token_usage") == [(3,)]
    await until(lambda: world.owner() == "b", "node b holding the operation", timeout=LEASE * 4 / 3 + 3)
    await until(lambda: "took operation 0042 over" in b.output(), "the takeover done", timeout=5)
    assert (await _post(b, world.token, api="change_status", agent_id="1001", status="ready")).status_code == 200
    assert (await _get(b, world.token, "/v2/agents/1001")).status_code == 200
    assert world.rows("SELECT used FROM token_usage") == [(5,)]
    # the sixth of the day is refused, agentbox and native, and not counted
    refused = await _post(b, world.token, api="change_status", agent_id="1001", status="2")
    assert (refused.status_code, refused.json()) == (403, QUOTA)
    problem = await _get(b, world.token, "/v2/agents/1001")
    assert (problem.status_code, problem.json()["error"]) == (403, "TOKEN_LIMIT_EXCEEDED")
    assert world.rows("SELECT used FROM token_usage") == [(5,)]
    assert world.rows("SELECT state FROM agent_state_history WHERE extension = '1001' ORDER BY id DESC LIMIT 1") \
        == [("ready",)]


async def test_a_request_for_an_operation_no_node_holds_answers_503_at_once(world: World) -> None:
    a = world.node("a", NODE_A)
    assert world.owner() == "a"
    with world.engine.begin() as conn:
        assert nodes.request_drain(conn, "a", LEASE)
    await until(lambda: world.rows(f"SELECT node_id FROM cluster_leases WHERE operation_id = '{OP}'") == [(None,)],
                "the lease released by the drained node", timeout=LEASE * 2)
    started = time.monotonic()
    refused = await _post(a, world.token, api="change_status", agent_id="1001", status="ready")
    problem = await _get(a, world.token, "/v2/agents/1001")
    assert time.monotonic() - started < 1.5  # at once, no wait for an owner
    assert (refused.status_code, refused.json()) == (503, UNAVAILABLE)
    assert problem.status_code == 503 and problem.headers["content-type"].startswith("application/problem+json")
    assert (problem.json()["error"], problem.json()["title"]) == ("CALL_CONTROL_UNAVAILABLE",
                                                                  "CALL CONTROL IS NOT AVAILABLE")
    assert world.owner() is None  # nothing took it meanwhile


def test_token_usage_counts_to_the_quota_refuses_without_counting_and_restarts_on_a_later_day(
        cluster_engine: Engine) -> None:
    with cluster_engine.begin() as conn:
        token_id = str(conn.execute(text(
            "INSERT INTO tokens (operation_id, token_sha256) VALUES ('0042', repeat('a', 64)) RETURNING id")).scalar())
    usage = TokenUsage(cluster_engine)
    monday, tuesday = date(2026, 12, 7), date(2026, 12, 8)
    assert [usage.count(token_id, monday, 3) for _ in range(4)] == [1, 2, 3, None]
    assert usage.used(token_id, monday) == 3
    assert usage.count(token_id, tuesday, 3) == 1  # a later day starts again
    assert usage.count(token_id, monday, 3) == 2  # a node whose clock is behind counts into the newer day
    assert (usage.used(token_id, tuesday), usage.used(token_id, monday)) == (2, 0)


async def test_the_gate_counts_in_the_ledger_holds_the_slot_meanwhile_and_gives_it_back_on_a_refusal(
        cluster_engine: Engine) -> None:
    """`TokenGate.enter` with the ledger: concurrency first (nothing counted), then the quota, counted in
    PostgreSQL; a request refused for the quota, or one whose count could not be made (PostgreSQL out of reach:
    503), gives its slot back."""
    with cluster_engine.begin() as conn:
        token_id = str(conn.execute(text(
            "INSERT INTO tokens (operation_id, token_sha256) VALUES ('0042', repeat('b', 64)) RETURNING id")).scalar())
    principal = Principal("h" * 64, token_id, "0042", concurrency_limit=2, daily_quota=3, time_zone="UTC")
    gate = TokenGate(None, ledger=TokenUsage(cluster_engine))  # type: ignore[arg-type]  # enter() reads no directory
    first, second = await gate.enter(principal), await gate.enter(principal)
    with pytest.raises(Refused) as info:
        await gate.enter(principal)
    assert (info.value.key, info.value.limit) == ("CONCURRENCY_LIMIT", 2)
    assert TokenUsage(cluster_engine).used(token_id, datetime.now(UTC).date()) == 2  # the refused one was not counted
    first.release()
    third = await gate.enter(principal)
    second.release()
    third.release()
    with pytest.raises(Refused) as info:
        await gate.enter(principal)
    assert info.value.key == "TOKEN_LIMIT_EXCEEDED"
    assert (gate.in_flight(principal.token_hash), gate.used_today(principal)) == (0, 3)

    unreachable = make_engine(f"postgresql+psycopg://callbridge@127.0.0.1:{free_port('127.0.0.1', udp=False)}/none")
    try:
        down = TokenGate(None, ledger=TokenUsage(unreachable))  # type: ignore[arg-type]
        with pytest.raises(Refused) as info:
            await down.enter(principal)
        assert info.value.key == "CALL_CONTROL_UNAVAILABLE"
        assert down.in_flight(principal.token_hash) == 0
        # a token without a quota never reaches the ledger
        free = dataclasses.replace(principal, daily_quota=None)
        (await down.enter(free)).release()
    finally:
        unreachable.dispose()
