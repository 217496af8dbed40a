"""Events in a cluster (issue #15, "events come from the durable log with one sequence per cluster"): an operation's
events are numbered by whichever node owns it, and a consumer sees one sequence whatever node it asks and across a
failover.

- Webhooks are delivered by the operation's owner only: a second node running beside it delivers nothing of it
  (each event acknowledged once, though that node reads the same database and log), and after `kill -9` of the
  owner the node that takes the operation over resumes each target from its stored cursor: the events the receiver
  missed while it was down, then the new ones, in order, the sequence going on.
- `GET /v2/events` asked of a node that does not own the operation is answered by the owner (forwarded, as the
  live API is), so the stream a consumer reads does not depend on the node it reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS, TESTS / "storage"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from cluster_nodes import Serve, loaded_database  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402

from callbridge.storage.database import make_engine  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

NODE_A, NODE_B = "127.0.0.11", "127.0.0.12"
OP, DOMAIN, SECRET = "0042", "a.test", "s" * 32
LEASE = 3.0
AGENTBOX = "/api/v2/agentbox.php"


def operation_doc(hook_url: str) -> dict[str, Any]:
    return {
        "operation": {"id": OP, "sip_domain": DOMAIN, "acw_seconds": 0},
        "agents": [{"extension": "1001", "password": "secret-1001"}],
        "webhooks": [{"url": hook_url, "secret": SECRET}],
        "tokens": [{"label": "tests"}],
    }


async def until(condition: Any, what: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what() if callable(what) else what}"
        await asyncio.sleep(0.05)


async def display_changes(node: Serve, token: str, count: int) -> None:
    """`count` events (agent.display_changed: a state-only verb, no phone needed) through `node`'s API."""
    async with httpx.AsyncClient(base_url=node.http, timeout=10, trust_env=False) as client:
        for i in range(count):
            answer = await client.post(AGENTBOX, params={
                "api": "agent_display", "agent_id": "1001", "display": "hide" if i % 2 == 0 else "show",
                "button": "dial"}, headers={"wolkvox-token": token, "wolkvox_server": OP})
            assert answer.status_code == 200, answer.text


def _owner(engine: Engine) -> str | None:
    """The node holding the operation's lease now (None: nobody)."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT node_id FROM cluster_leases WHERE operation_id = :op "
                                "AND expires_at > now()"), {"op": OP}).first()
    return None if row is None else str(row[0])


async def stream_seqs(node: Serve, token: str, after: int = 0) -> tuple[int, list[int]]:
    """`GET /v2/events?after=&wait=0` at `node`: (Callbridge-Last-Seq, the seqs of the lines)."""
    async with httpx.AsyncClient(base_url=node.http, timeout=10, trust_env=False) as client:
        answer = await client.get("/v2/events", params={"after": str(after), "wait": "0"},
                                  headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    seqs = [int(line.split(b'"seq":')[1].split(b",")[0]) for line in answer.content.splitlines() if line]
    return int(answer.headers["callbridge-last-seq"]), seqs



async def a_then_b(nodes: list[Serve], url: str, tmp_path: Path,
                   owner: Callable[[], str | None]) -> tuple[Serve, Serve]:
    """Node a started and holding the operation, then node b started (both in `nodes`, stopped by the caller)."""
    a = Serve("a", NODE_A, url, tmp_path, lease_seconds=LEASE)
    nodes.append(a)
    a.wait_ready()
    await until(lambda: owner() == "a", "node a holding the operation")
    b = Serve("b", NODE_B, url, tmp_path, lease_seconds=LEASE)
    nodes.append(b)
    b.wait_ready()
    return a, b

async def test_webhooks_come_from_the_owner_only_and_resume_on_the_node_that_takes_the_operation_over(
        postgres_url: str, tmp_path: Path) -> None:
    receiver = await Receiver(SECRET).start()
    nodes: list[Serve] = []
    try:
        with loaded_database(postgres_url, operation_doc(receiver.url)) as (url, [token]):
            engine = make_engine(url)

            owner = partial(_owner, engine)

            def stored() -> list[int]:
                with engine.connect() as conn:
                    return [int(r[0]) for r in conn.execute(text("SELECT seq FROM events WHERE operation_id = :op "
                                                                 "ORDER BY seq"), {"op": OP})]

            try:
                a, b = await a_then_b(nodes, url, tmp_path, owner)

                await display_changes(a, token, 4)
                await receiver.wait_for_seq(4)
                # the same stream whichever node is asked: b forwards to the owner
                assert await stream_seqs(a, token) == (4, [1, 2, 3, 4])
                assert await stream_seqs(b, token) == (4, [1, 2, 3, 4])

                receiver.mode = "fail"  # down across the failover: a backlog in the database
                await display_changes(a, token, 3)
                # committed (the API answers before the writer's commit: a kill -9 in between would lose them)
                await until(lambda: stored() == list(range(1, 8)), "a's seven events in the database")
                await until(lambda: receiver.requests >= 5, "a trying seq 5")
                a.kill()
                await until(lambda: owner() == "b", "node b holding the operation", timeout=LEASE * 4 / 3 + 5)
                receiver.mode = "ok"
                await display_changes(b, token, 2)  # numbered after a's: 8 and 9
                await until(lambda: receiver.last_seq() >= 9, lambda: f"seq 9 at the receiver: {receiver.seqs()}",
                            timeout=30)
                assert await stream_seqs(b, token) == (9, list(range(1, 10)))
                await asyncio.sleep(1.5)  # anything delivered twice would have arrived by now

                got = receiver.seqs()
                assert got == list(range(1, 10)), got  # each once, in order: b delivered nothing while a owned it
                assert receiver.bad_signatures == 0
                with engine.connect() as conn:
                    assert conn.execute(text("SELECT last_seq FROM webhook_cursors")).scalar_one() == 9
            finally:
                for node in nodes:
                    node.stop()
                engine.dispose()
    finally:
        await receiver.stop()


async def _ws(node: Serve, token: str, after: int, *, browser: bool = False) -> Any:
    """A WebSocket event stream at `node` from `after` (the token as a bearer header, or as a browser offers it)."""
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    url = f"ws://{node.host}:{node.http_port}/v2/events?after={after}"
    if browser:
        return await connect(url, subprotocols=[Subprotocol("callbridge.events.v2"), Subprotocol(f"bearer.{token}")],
                             open_timeout=5)
    return await connect(url, additional_headers={"authorization": f"Bearer {token}"},
                         subprotocols=[Subprotocol("callbridge.events.v2")], open_timeout=5)


async def _ws_once_served(node: Serve, token: str, after: int, timeout: float) -> Any:
    """`_ws`, asked again while the answer is 503 (no owner yet, or the owner still adopting the operation)."""
    from websockets.exceptions import InvalidStatus

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await _ws(node, token, after)
        except InvalidStatus as status:
            assert status.response.status_code == 503, status.response.status_code
            assert time.monotonic() < deadline, "the stream never served again"
            await asyncio.sleep(0.3)


async def _read_seqs(ws: Any, count: int) -> list[int]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 10))["seq"] for _ in range(count)]


async def _closed_with(ws: Any) -> int | None:
    from websockets.exceptions import ConnectionClosed

    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 15)
    return ws.close_code  # type: ignore[no-any-return]


async def test_a_websocket_stream_asked_of_any_node_follows_the_operation_to_its_owner(
        postgres_url: str, tmp_path: Path) -> None:
    """The event stream as a WebSocket, asked of a node that does not own the operation, is the owner's, relayed
    frame by frame (the token as a header or as a browser's subprotocol; a refused token is answered 403 there, as
    the owner would). When the operation moves (`move`, then `kill -9` of the new owner) every stream of it closes 1012,
    relayed or not,
    and a consumer that reconnects to any node with its last seq reads on from the new owner without a gap."""
    from websockets.exceptions import InvalidStatus

    from callbridge.cluster import leases

    doc = {**operation_doc("http://127.0.0.1:9/"), "webhooks": []}
    nodes: list[Serve] = []
    with loaded_database(postgres_url, doc) as (url, [token]):
        engine = make_engine(url)

        owner = partial(_owner, engine)
        try:
            a, b = await a_then_b(nodes, url, tmp_path, owner)

            with pytest.raises(InvalidStatus) as refused:
                await _ws(b, "not-a-token", 0)
            assert refused.value.response.status_code == 403
            assert json.loads(refused.value.response.body or b"{}")["error"] == "INVALID_TOKEN"
            relayed, browser, direct = await _ws(b, token, 0), await _ws(b, token, 0, browser=True), await _ws(
                a, token, 0)
            assert relayed.subprotocol == browser.subprotocol == direct.subprotocol == "callbridge.events.v2"
            await display_changes(a, token, 3)
            for ws in (relayed, browser, direct):
                assert await _read_seqs(ws, 3) == [1, 2, 3]

            with engine.begin() as conn:
                assert leases.request_move(conn, OP, "b")
            for ws in (relayed, browser, direct):
                assert await _closed_with(ws) == 1012
            await until(lambda: owner() == "b", "b holding the operation")
            follower = await _ws_once_served(a, token, 3, timeout=10)  # a asked now: relayed to b
            await display_changes(a, token, 2)
            assert await _read_seqs(follower, 2) == [4, 5]

            b.kill()
            assert await _closed_with(follower) == 1012  # the owner vanished under the relay
            follower = await _ws_once_served(a, token, 5, timeout=4 * LEASE + 10)  # a holds it again
            await display_changes(a, token, 1)
            assert await _read_seqs(follower, 1) == [6]
            await follower.close()
        finally:
            for node in nodes:
                if node.proc.poll() is None:
                    node.stop()
            engine.dispose()
