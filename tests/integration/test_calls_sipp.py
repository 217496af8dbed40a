"""SIPp's built-in uac as the carrier (from 127.0.0.2, the trunk's inbound network) calling a DID through
callbridge; three agents' phones answer. On SQLite and on PostgreSQL (Debian's, started by tests/pg.py): every call
completes, every CDR is written, the agents end ready, and the node's tables are empty afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from callnode import CUSTOMER_HOST, OP, agent_phone, cdrs, start_node, state_history, until

from callbridge.phone import Phone
from peers.sipp import Sipp
from pg import PostgresUnavailable, postgres_server

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]
CALLS = 12


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'callbridge.db'}"
    return str(request.getfixturevalue("postgres_url"))


async def test_sipp_uac_trunk_calls_reach_the_agents(tmp_path: Path, db_url: str) -> None:
    node = await start_node(tmp_path, db_url=db_url)
    agents: list[Phone] = [await agent_phone(node, ext, answer="auto", history=0)
                           for ext in ("1001", "1002", "1003")]
    try:
        uac = Sipp("uac", remote=node.sip_address, host=CUSTOMER_HOST, service="6000", calls=CALLS, rate=4,
                   limit=3, timeout=40, workdir=tmp_path / "uac")
        result = await uac.run_async()
        assert result.returncode == 0, result.summary()
        assert (result.created, result.successful, result.failed) == (CALLS, CALLS, 0), result.summary()
        await until(lambda: node.live_legs == 0 and node.endpoint.dialog_count == 0, timeout=10)
        await until(lambda: all(node.service.get_agent(OP, e).state == "ready" for e in ("1001", "1002", "1003")))
    finally:
        for phone in agents:
            await phone.close()
        await node.close()
    rows = await asyncio.to_thread(cdrs, node)
    assert len(rows) == CALLS
    assert {row["hangup_by"] for row in rows} == {"customer"}
    assert all(row["answered_at"] is not None and len(row["agents"]) == 1 for row in rows)
    answered = sum(1 for ext in ("1001", "1002", "1003") for s, _ in state_history(node, ext) if s == "on_call")
    assert answered == CALLS
