"""`callbridge calls cdrs` as a subprocess against a live node on loopback (tests/integration's agentbox world:
SQLite, SIP, uvicorn, an agent and customers as `callbridge.phone`s): real calls end, their CDRs are written, and
the command prints exactly what `GET /v2/cdrs` lists for the range, following the cursor page after page; --limit
stops early; a bad time is one line and exit 2."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentbox_world import OP, AgentboxNode, until

from callbridge.phone import CallEnded
from test_cli_live_node import cli, native

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]

CALLS = 3


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def ended_calls(world: AgentboxNode, count: int) -> list[str]:
    """`count` trunk calls answered by agent 1001 and hung up by the customer, one after the other: their conn_ids."""
    agent = await world.agent("1001", answer="auto")
    conn_ids = []
    for _ in range(count):
        _customer, call, agent_call = await world.talking(agent)
        conn_ids.append(world.conn_id())
        await call.hangup()
        await agent.wait_for(CallEnded, call=agent_call, timeout=5)
        await until(lambda: world.service.get_agent(OP, "1001").state == "ready", what="agent ready again")
    world.node.storage.writer.flush()  # the CDRs are written behind; the listing reads the database
    return conn_ids


async def all_cdrs(world: AgentboxNode, since: str, to: str) -> list[Any]:
    listed = await native(world, "/v2/cdrs", **{"from": since, "to": to, "limit": 1000})
    assert listed["next_cursor"] is None
    return list(listed["items"])


async def test_cdrs_follow_every_page_of_the_range(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        before = datetime.now(UTC) - timedelta(seconds=1)
        conn_ids = await ended_calls(world, CALLS)
        since, to = rfc3339(before), rfc3339(datetime.now(UTC) + timedelta(seconds=1))
        expected = await all_cdrs(world, since, to)
        assert [c["conn_id"] for c in expected] == conn_ids  # oldest first
        auth = ["--url", world.http.url, "--token", world.tokens[OP][0]]

        # two CDRs a page: three requests, every CDR once, as the API sends it
        code, out, err = await cli("calls", "cdrs", "--from", since, "--to", to, "--page-size", "2", "--json", *auth)
        assert (code, err) == (0, "")
        assert [json.loads(line) for line in out.splitlines()] == expected

        code, out, err = await cli("calls", "cdrs", "--from", since, "--to", to, "--page-size", "1", "--limit", "2",
                                   "--json", *auth)
        assert (code, err) == (0, "")
        assert [json.loads(line) for line in out.splitlines()] == expected[:2]

        # the range is on started_at, to exclusive: from the second call's start on, two CDRs
        second = expected[1]["started_at"]
        code, out, err = await cli("calls", "cdrs", "--from", second, "--to", to, "--json", *auth)
        assert [json.loads(line)["conn_id"] for line in out.splitlines()] == conn_ids[1:]
        code, out, err = await cli("calls", "cdrs", "--from", since, "--to", second, "--json", *auth)
        assert [json.loads(line)["conn_id"] for line in out.splitlines()] == conn_ids[:1]

        # --url and --token before `cdrs` (the group's flags) reach it as well
        code, out, err = await cli("calls", *auth, "cdrs", "--from", since, "--to", to, "--page-size", "2")
        assert (code, err) == (0, "")
        assert out.splitlines()[0].rstrip() == f"CDRs ({CALLS})"
        rows = [line for line in out.splitlines() if any(c in line for c in conn_ids)]
        assert [next(c for c in conn_ids if c in row) for row in rows] == conn_ids
        assert all("3105550000" in row and "1001" in row and "customer" in row for row in rows)


async def test_a_bad_range_or_token_is_one_line(tmp_path: Path) -> None:
    async with AgentboxNode.start(tmp_path) as world:
        auth = ["--url", world.http.url, "--token", world.tokens[OP][0]]
        code, out, err = await cli("calls", "cdrs", "--from", "2026-12-01 00:00", "--to", "2026-12-02T00:00:00Z",
                                   *auth)
        assert (code, out) == (2, "")
        assert err.startswith("error: 400 ") and err.endswith("INVALID PARAMETER: from\n") and err.count("\n") == 1
        code, out, err = await cli("calls", "cdrs", "--from", "2026-12-01T00:00:00Z", "--to", "2026-12-02T00:00:00Z",
                                   "--url", world.http.url, "--token", "not-a-token")
        assert (code, out) == (4, "")
        assert err == "error: 403 PLEASE VALIDATE TOKEN\n"
        code, out, err = await cli("calls", "cdrs", "--from", "2026-12-01T00:00:00Z", "--to", "2026-12-02T00:00:00Z",
                                   "--json", *auth)
        assert (code, out, err) == (0, "", "")  # nothing in the range


def test_the_table_says_why_callbridge_ended_a_call() -> None:
    import io

    from rich.console import Console

    from callbridge.cli.cdrs import cdrs_table
    from callbridge.client.models import Cdr

    out = io.StringIO()
    Console(file=out, width=200).print(cdrs_table([Cdr(conn_id="c1", hangup_by="system", end_reason="media_timeout"),
                                                    Cdr(conn_id="c2", hangup_by="customer")]))
    rows = {line.split()[1]: line for line in out.getvalue().splitlines() if line.split()[1:2] in (["c1"], ["c2"])}
    assert "system (media_timeout)" in rows["c1"]
    assert "customer" in rows["c2"] and "(" not in rows["c2"]
