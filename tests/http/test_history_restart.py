"""History survives a restart of the node: a real call, transferred to another agent through the native API and
ended, answers /v2/calls?state=ended, /v2/calls/{conn_id} (with its legs), /v2/transfers/{id} and /v2/cdrs after
the node is restarted through bootstrap on the same database (SQLite and PostgreSQL) exactly as before, what the
durable event log knows included: the call's `history` and the transfer's `ringing_at`/`answered_at`. Another
operation's token sees none of it, before or after."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from http_world import validate_response

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
if str(INTEGRATION) not in sys.path:  # callnode / agentbox_world: how the call tests start nodes and phones
    sys.path.insert(0, str(INTEGRATION))

from agentbox_world import main_doc, other_doc  # noqa: E402
from callnode import OP, agent_phone, customer_phone, did_uri, load, until  # noqa: E402

from callbridge.bootstrap import Node, bootstrap  # noqa: E402
from callbridge.config import Settings  # noqa: E402
from callbridge.phone import Established, IncomingCall, Phone  # noqa: E402
from pg import PostgresUnavailable, postgres_server  # noqa: E402

pytestmark = pytest.mark.timeout(90)
@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'callbridge.db'}"
        return
    server: str = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def start(url: str) -> Node:
    return await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                    node_id="node-1"))


async def get(node: Node, token: str, url: str, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=node.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://callbridge.test") as client:
        response = await client.get(url, headers={"authorization": f"Bearer {token}"})
    validate_response(path, "get", response)
    return response


async def snapshot(node: Node, token: str, conn_id: str, tid: str) -> dict[str, Any]:
    return {
        "ended": (await get(node, token, "/v2/calls?state=ended", "/v2/calls")).json(),
        "all": (await get(node, token, "/v2/calls?state=all&limit=5", "/v2/calls")).json(),
        "call": (await get(node, token, f"/v2/calls/{conn_id}", "/v2/calls/{conn_id}")).json(),
        "transfer": (await get(node, token, f"/v2/transfers/{tid}", "/v2/transfers/{transfer_id}")).json(),
        "cdrs": (await get(node, token, "/v2/cdrs", "/v2/cdrs")).json(),
        "complete": (await put(node, token, f"/v2/transfers/{tid}/complete")).json(),  # a finished blind one
    }


async def put(node: Node, token: str, url: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=node.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://callbridge.test") as client:
        response = await client.put(url, headers={"authorization": f"Bearer {token}"})
    validate_response("/v2/transfers/{transfer_id}/complete", "put", response)
    return response


async def foreign_sees_nothing(node: Node, token: str, conn_id: str, tid: str) -> None:
    assert (await get(node, token, "/v2/calls?state=all", "/v2/calls")).json()["items"] == []
    assert (await get(node, token, "/v2/cdrs", "/v2/cdrs")).json() == {"items": [], "next_cursor": None}
    for url, path in ((f"/v2/calls/{conn_id}", "/v2/calls/{conn_id}"), ("/v2/calls/nosuchcall", "/v2/calls/{conn_id}"),
                      (f"/v2/transfers/{tid}", "/v2/transfers/{transfer_id}"),
                      ("/v2/transfers/nosuchtransfer", "/v2/transfers/{transfer_id}")):
        assert (await get(node, token, url, path)).status_code == 404
    pairs = [((await get(node, token, a, p)).content, (await get(node, token, b, p)).content) for a, b, p in (
        (f"/v2/calls/{conn_id}", "/v2/calls/nosuchcall", "/v2/calls/{conn_id}"),
        (f"/v2/transfers/{tid}", "/v2/transfers/nosuchtransfer", "/v2/transfers/{transfer_id}"))]
    assert all(x == y for x, y in pairs)  # exactly as an unknown one


async def transferred_call(node: Node, token: str, phones: list[Phone]) -> tuple[str, str]:
    """A trunk call answered by 1001, transferred blind to 1002 through the native API, hung up by the customer."""
    agent = await agent_phone(node, "1001", answer="auto")
    target = await agent_phone(node, "1002", answer="auto", ring_delay=0.2)
    customer = await customer_phone()
    phones.extend((agent, target, customer))
    call = await customer.call(did_uri(node), timeout=5)
    await agent.wait_for(IncomingCall, timeout=5)
    await until(lambda: node.service.get_agent(OP, "1001").state == "on_call", what="1001 on call")
    conn_id = node.service.get_agent(OP, "1001").conn_id
    assert conn_id is not None
    transport = httpx.ASGITransport(app=node.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://callbridge.test") as client:
        created = await client.post("/v2/transfers", json={"agent_id": "1001", "target": "1002"},
                                    headers={"authorization": f"Bearer {token}"})
    assert created.status_code == 201, created.text
    tid = created.json()["id"]
    incoming = await target.wait_for(IncomingCall, timeout=5)
    await target.wait_for(Established, call=incoming.call, timeout=5)
    await until(lambda: node.service.get_transfer(OP, tid).state == "completed", what="transfer completed")
    await until(lambda: node.service.get_agent(OP, "1002").state == "on_call", what="1002 on call")
    await call.hangup()
    await until(lambda: node.service.get_call(OP, conn_id).state == "ended", what="call ended")
    return conn_id, tid


async def test_history_survives_a_restart(db_url: str) -> None:
    tokens = await asyncio.to_thread(load, db_url, main_doc())
    other = (await asyncio.to_thread(load, db_url, other_doc()))[0]
    token = tokens[0]
    phones: list[Phone] = []
    node = await start(db_url)
    try:
        conn_id, tid = await transferred_call(node, token, phones)
        await node.storage.writer.aflush()
        before = await snapshot(node, token, conn_id, tid)
        await foreign_sees_nothing(node, other, conn_id, tid)
    finally:
        for phone in phones:
            await phone.close()
        await node.close()

    assert [c["conn_id"] for c in before["ended"]["items"]] == [conn_id]
    assert before["all"]["items"] == before["ended"]["items"]
    assert [(leg["role"], leg["party"], leg["state"]) for leg in before["call"]["legs"]] == [
        ("customer", "3105550000", "ended"), ("agent", "1001", "ended"), ("target", "1002", "ended")]
    assert before["call"]["transfers"] == 1 and before["call"]["history"]
    assert (before["transfer"]["state"], before["transfer"]["outcome"]) == ("completed", "connected_to_target")
    assert before["transfer"]["answered_at"] is not None
    [cdr] = before["cdrs"]["items"]
    assert (cdr["conn_id"], cdr["agents"], cdr["hangup_by"], cdr["transfers"]) == (
        conn_id, ["1001", "1002"], "customer", 1)
    assert cdr["legs"] == before["call"]["legs"]

    node = await start(db_url)  # a restart on the same database: nothing of the call is in memory any more
    try:
        with pytest.raises(Exception, match="call does not exist"):
            node.service.get_call(OP, conn_id)
        after = await snapshot(node, token, conn_id, tid)
        await foreign_sees_nothing(node, other, conn_id, tid)
    finally:
        await node.close()

    assert after["ended"] == before["ended"]
    assert after["all"] == before["all"]
    assert after["cdrs"] == before["cdrs"]
    assert after["complete"] == before["complete"] and before["complete"]["error"] == "NOT_ATTENDED"
    assert after["call"] == before["call"]  # its history read back from the event log's table
    assert after["transfer"] == before["transfer"]  # its times from its events there
