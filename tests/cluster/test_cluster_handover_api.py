"""The API while an operation changes hands (docs/cluster.md, "Any node answers the API"): two `callbridge serve
--cluster` nodes, a call up on node a, and requests of one token sent to both nodes without pause while the
operation is moved to node b. Every answer is either the one the owner gives before and after the move (the agent
`on_call`, the call `connected`, a status change made) or 503 CALL CONTROL IS NOT AVAILABLE, which tells the
client to retry: never a 500, and never an answer from an owner that does not hold the operation's live state
(an agent `logout` or `AGENT PHONE IS NOT REGISTERED` while b adopts the call, or after a forgot it)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

CLUSTER = Path(__file__).resolve().parent
if str(CLUSTER) not in sys.path:
    sys.path.insert(0, str(CLUSTER))

from cluster_nodes import Serve  # noqa: E402
from cluster_world import AGENTBOX, LEASE, NODE_A, NODE_B, OP, World, connected_call, until  # noqa: E402
from test_cluster_handover import admin  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

UNAVAILABLE = {"code": "503", "error": "SERVICE UNAVAILABLE", "msg": "CALL CONTROL IS NOT AVAILABLE"}
READY = {"code": "200", "error": None, "msg": "Agent status has been changed to ready"}


async def test_requests_during_a_move_get_the_owners_answer_or_503_never_a_500_or_a_half_state(
        world: World) -> None:
    a = world.node("a", NODE_A)
    b = world.node("b", NODE_B)
    await world.agent("1001", a)
    await world.agent("1002", a)
    _customer, _call, _agent_call, conn_id = await connected_call(world, a)
    seen: Counter[tuple[str, str, int, str]] = Counter()
    odd: list[str] = []
    stop = asyncio.Event()
    bearer = {"authorization": f"Bearer {world.token}"}

    async def ask(node: Serve) -> None:
        async with httpx.AsyncClient(base_url=node.http, timeout=10, trust_env=False) as client:
            while not stop.is_set():
                for kind, answer in (
                        ("agent", await client.get("/v2/agents/1001", headers=bearer)),
                        ("call", await client.get(f"/v2/calls/{conn_id}", headers=bearer)),
                        ("status", await client.post(AGENTBOX, headers={"wolkvox-token": world.token,
                                                                        "wolkvox_server": OP},
                                                     params={"api": "change_status", "agent_id": "1002",
                                                             "status": "ready"}))):
                    body = answer.json()
                    if answer.status_code == 503:
                        ok = body == UNAVAILABLE if kind == "status" else body["error"] == "CALL_CONTROL_UNAVAILABLE"
                        what = "unavailable"
                    elif kind == "agent":
                        ok, what = answer.status_code == 200 and body["state"] == "on_call", str(body.get("state"))
                    elif kind == "call":
                        ok, what = answer.status_code == 200 and body["state"] == "connected", str(body.get("state"))
                    else:
                        ok, what = answer.status_code == 200 and body == READY, str(body.get("msg"))
                    seen[(node.node, kind, answer.status_code, what)] += 1
                    if not ok:
                        odd.append(f"{time.time():.3f} via {node.node}: {kind} {answer.status_code} {answer.text}")

    askers = [asyncio.create_task(ask(a)), asyncio.create_task(ask(b))]
    try:
        await until(lambda: sum(seen.values()) >= 30, "answers before the move")
        await admin(world, "move", OP, "b")
        await until(lambda: "took operation 0042 over" in b.output(), "the takeover done", timeout=4 * LEASE)
        before = sum(seen.values())
        await until(lambda: sum(seen.values()) >= before + 30, "answers after the move")
    finally:
        stop.set()
        await asyncio.gather(*askers)
    assert odd == [], "\n".join(odd + [f"{n} {k}" for k, n in sorted(seen.items())])
    assert world.owner() == "b"
    # both nodes answered before and after the move, the requests sent to a being forwarded to b after it
    for node in ("a", "b"):
        assert seen[(node, "call", 200, "connected")] >= 10
