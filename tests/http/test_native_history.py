"""/v2/calls?state=ended and /v2/cdrs over a node's records (SQLite): cursor pages give every record once in the
documented order, `from` is inclusive and `to` exclusive, a malformed time, cursor or limit answers 400
INVALID_PARAMETER naming it, another operation's token sees nothing; the async client iterates over every page."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from http_world import validate_response

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))

from agentbox_world import main_doc, other_doc  # noqa: E402
from callnode import load  # noqa: E402

from callbridge.bootstrap import Node, bootstrap  # noqa: E402
from callbridge.callcontrol.model import TransferRecord  # noqa: E402
from callbridge.client import AsyncNativeClient  # noqa: E402
from callbridge.client import InvalidParameter as ClientInvalidParameter  # noqa: E402
from callbridge.config import Settings  # noqa: E402
from callbridge.http.resources import rfc3339  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
from test_storage_history import STARTS, T0, call, cdr  # noqa: E402

ORDER = sorted(STARTS, key=lambda c: (STARTS[c], c))


class World:
    def __init__(self, node: Node, token: str, other: str) -> None:
        self.node, self.token, self.other = node, token, other
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app), base_url="http://callbridge.test")

    async def get(self, url: str, path: str, token: str | None = None) -> httpx.Response:
        response = await self.http.get(url, headers={"authorization": f"Bearer {token or self.token}"})
        validate_response(path, "get", response)
        return response

    async def pages(self, url: str, path: str) -> tuple[list[str], int]:
        ids: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            body = (await self.get(url + (f"&cursor={cursor}" if cursor else ""), path)).json()
            ids.extend(item["conn_id"] for item in body["items"])
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                return ids, pages


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    token = (await asyncio.to_thread(load, url, main_doc()))[0]
    other = (await asyncio.to_thread(load, url, other_doc()))[0]
    node = await bootstrap(Settings(sip_host="127.0.0.1", sip_port=0, http_port=0, database_url=url,
                                    node_id="node-1"))
    for conn_id in STARTS:
        record = call(conn_id)
        node.storage.calls.save_call(record)
        node.storage.calls.save_cdr(cdr(record))
    await node.storage.writer.aflush()
    w = World(node, token, other)
    try:
        yield w
    finally:
        await w.http.aclose()
        await node.close()


async def test_ended_calls_and_cdrs_page_each_record_once(world: World) -> None:
    ids, pages = await world.pages("/v2/calls?state=ended&limit=3", "/v2/calls")
    assert (ids, pages) == (list(reversed(ORDER)), 3)
    ids, pages = await world.pages("/v2/cdrs?limit=2", "/v2/cdrs")
    assert (ids, pages) == (ORDER, 4)
    ids, pages = await world.pages("/v2/calls?state=all&limit=7", "/v2/calls")
    assert (ids, pages) == (list(reversed(ORDER)), 1)
    first = (await world.get("/v2/calls?state=ended&limit=1", "/v2/calls")).json()
    one = (await world.get("/v2/calls/c6", "/v2/calls/{conn_id}")).json()
    assert {k: v for k, v in one.items() if k not in ("legs", "history")} == first["items"][0]


async def test_from_is_inclusive_to_exclusive(world: World) -> None:
    since, until = rfc3339(T0 + 10), rfc3339(T0 + 40.5)
    ids, _ = await world.pages(f"/v2/cdrs?from={since}&to={until}", "/v2/cdrs")
    assert ids == ["c1", "c2", "c3", "c4"]
    ids, _ = await world.pages(f"/v2/calls?state=ended&from={since}&to={until}&limit=2", "/v2/calls")
    assert ids == ["c4", "c3", "c2", "c1"]
    shifted = datetime.fromtimestamp(T0 + 10, UTC).astimezone(timezone(timedelta(hours=2))).isoformat()
    params = {"from": shifted, "limit": "100"}
    body = (await world.http.get("/v2/cdrs", params=params, headers={"authorization": f"Bearer {world.token}"})).json()
    assert [c["conn_id"] for c in body["items"]] == ORDER[1:]


@pytest.mark.parametrize("path", ["/v2/calls?state=ended&", "/v2/cdrs?"])
async def test_malformed_parameters_are_named(world: World, path: str) -> None:
    documented = path.split("?")[0]
    cdr_cursor = (await world.get("/v2/cdrs?limit=1", "/v2/cdrs")).json()["next_cursor"]
    calls_cursor = (await world.get("/v2/calls?state=ended&limit=1", "/v2/calls")).json()["next_cursor"]
    foreign_cursor = calls_cursor if documented == "/v2/cdrs" else cdr_cursor
    for query, parameter in (("from=yesterday", "from"), ("from=2026-01-01T00:00:00", "from"),
                             ("to=2026-02-30T00:00:00Z", "to"), ("to=2026-01-01", "to"),
                             ("cursor=not-a-cursor", "cursor"), ("cursor=", "cursor"),
                             (f"cursor={foreign_cursor}", "cursor"), ("limit=0", "limit"), ("limit=1001", "limit"),
                             ("limit=abc", "limit")):
        response = await world.get(path + query, documented)
        assert response.status_code == 400, query
        body = response.json()
        assert (body["error"], body["parameter"]) == ("INVALID_PARAMETER", parameter), query


async def test_another_operation_sees_nothing(world: World) -> None:
    assert (await world.get("/v2/cdrs", "/v2/cdrs", world.other)).json() == {"items": [], "next_cursor": None}
    assert (await world.get("/v2/calls?state=all", "/v2/calls", world.other)).json()["items"] == []
    foreign = await world.get("/v2/calls/c1", "/v2/calls/{conn_id}", world.other)
    unknown = await world.get("/v2/calls/nope", "/v2/calls/{conn_id}", world.other)
    assert foreign.status_code == 404 and foreign.content == unknown.content


async def test_the_async_client_iterates_over_every_page(world: World) -> None:
    transport = httpx.ASGITransport(app=world.node.app)
    async with AsyncNativeClient("http://callbridge.test", token=world.token, transport=transport) as client:
        assert [c.conn_id async for c in client.cdrs(page_size=3)] == ORDER
        since = datetime.fromtimestamp(T0 + 10, UTC)
        page = await client.list_cdrs(since=since, until=rfc3339(T0 + 40.5), limit=3)
        assert [c.conn_id for c in page.items] == ["c1", "c2", "c3"] and page.next_cursor is not None
        rest = await client.list_cdrs(since=since, until=rfc3339(T0 + 40.5), limit=3, cursor=page.next_cursor)
        assert ([c.conn_id for c in rest.items], rest.next_cursor) == (["c4"], None)
        assert rest.items[0].agents == ("1001",) and rest.items[0].duration == 5.0
        with pytest.raises(ClientInvalidParameter):
            await client.list_cdrs(cursor="garbage")


async def test_a_transfer_only_the_records_know_has_finished(world: World) -> None:
    world.node.storage.calls.save_transfer(TransferRecord(
        id="t-old", conn_id="c1", operation_id="0042", kind="attended", agent="1001", target="1002",
        target_kind="agent", state="cancelled", created_at=T0 + 11, updated_at=T0 + 12, outcome="cancelled",
        ended_at=T0 + 12, timeout=30.0))
    await world.node.storage.writer.aflush()
    body = (await world.get("/v2/transfers/t-old", "/v2/transfers/{transfer_id}")).json()
    assert (body["id"], body["state"], body["outcome"], body["kind"]) == ("t-old", "cancelled", "back_with_agent",
                                                                         "attended")
    headers = {"authorization": f"Bearer {world.token}"}
    for method, url, path in (("PUT", "/v2/transfers/t-old/complete", "/v2/transfers/{transfer_id}/complete"),
                              ("DELETE", "/v2/transfers/t-old", "/v2/transfers/{transfer_id}")):
        response = await world.http.request(method, url, headers=headers)
        validate_response(path, method.lower(), response)
        assert (response.status_code, response.json()["error"]) == (409, "TRANSFER_FINISHED")
    foreign = await world.get("/v2/transfers/t-old", "/v2/transfers/{transfer_id}", world.other)
    assert foreign.json()["error"] == "TRANSFER_NOT_FOUND"
