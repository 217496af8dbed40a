"""The event log and `/v2/events`: per-operation seq without gaps, the Event schema, resume from a seq, 410 past
retention, NDJSON streaming live on a real uvicorn, and the WebSocket (header and subprotocol authentication)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import websockets
from http_world import BEARER, DOC, OP, OTHER_OP, OTHER_TOKEN, TOKEN, LiveServer, World, validate_against_document
from websockets.exceptions import InvalidStatus

from callbridge.callcontrol.events import CallAnswered, CallMuted, CallOffered
from callbridge.http.events import EventLog
from callbridge.http.resources import rfc3339
from callbridge.storage.event_log import StoredEvent

EVENT = {"$ref": "#/components/schemas/Event"}


def check_events(lines: list[dict[str, object]]) -> None:
    for event in lines:
        validate_against_document(EVENT, event)


async def stream(client: httpx.AsyncClient, query: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.get(f"/v2/events?{query}", headers=BEARER if headers is None else headers)


def lines_of(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in response.text.split("\n") if line.strip()]


async def test_wire_events_have_their_operations_seq_without_gaps(client: httpx.AsyncClient, world: World) -> None:
    world.login("1001", "1002")
    world.login("2001", op=OTHER_OP)
    world.service.agent_display(OP, "1001", "hide", "hungup")
    conn_id, customer, _ = world.connected_call("1001")
    await client.post("/api/v2/agentbox.php", params={"api": "hold", "agent_id": "1001"},
                      headers={"wolkvox-token": TOKEN})
    await client.post("/api/v2/agentbox.php", params={"api": "mute", "agent_id": "1001"},  # no wire type
                      headers={"wolkvox-token": TOKEN})
    await client.post("/api/v2/agentbox.php", params={"api": "transfer", "agent_id": "1001",
                                                      "customer_phone": "1002"}, headers={"wolkvox-token": TOKEN})
    world.service.on_leg_answered(world.signalling.last_originate("1002").leg_id)
    world.service.on_leg_ended(customer)
    response = await stream(client, "after=0&wait=0")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    events = lines_of(response)
    check_events(events)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert int(response.headers["callbridge-last-seq"]) == len(events)
    assert {e["operation"] for e in events} == {OP}
    types = [e["type"] for e in events]
    assert types[:5] == ["agent.state_changed"] * 2 + ["agent.display_changed", "agent.state_changed",
                                                        "call.offered"]
    assert "transfer.created" in types and "transfer.completed" in types and types[-1] != "call.muted"
    answered = next(e for e in events if e["type"] == "transfer.answered")
    assert answered["data"]["state"] == "answered"  # type: ignore[index]
    other = lines_of(await stream(client, "after=0&wait=0", {"authorization": f"Bearer {OTHER_TOKEN}"}))
    assert [e["seq"] for e in other] == [1] and {e["operation"] for e in other} == {OTHER_OP}
    resumed = lines_of(await stream(client, "after=5&wait=0&limit=3"))
    assert [e["seq"] for e in resumed] == [6, 7, 8]
    only = lines_of(await stream(client, "after=0&wait=0&types=call.held,call.ended"))
    assert [e["type"] for e in only] == ["call.held", "call.ended"]
    assert only[1]["data"]["conn_id"] == conn_id  # type: ignore[index]
    assert lines_of(await stream(client, "wait=0")) == []  # no after: only what happens from now on


@pytest.mark.parametrize("query", ["after=-1", "after=x", "wait=301", "limit=0", "types=call.exploded"])
async def test_bad_stream_parameters(client: httpx.AsyncClient, query: str) -> None:
    response = await stream(client, query)
    assert response.status_code == 400 and response.json()["error"] == "INVALID_PARAMETER"


async def test_410_after_retention_with_the_oldest_kept_seq() -> None:
    later = time.time() + 1000.0  # the log's clock: every event is older than its 10 s
    world = World(events=EventLog(retention_s=10.0, retention_count=2, clock=lambda: later))
    world.service.on_registration_changed(OP, "1001", True)
    for status in ("ready", "2", "ready", "2"):
        world.service.change_status(OP, "1001", status)
    assert world.events.oldest_seq(OP) == 3
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://t") as client:
        gone = await stream(client, "after=1&wait=0")
        assert gone.status_code == 410
        body = gone.json()
        validate_against_document(DOC["paths"]["/v2/events"]["get"]["responses"]["410"]["content"]
                                  ["application/problem+json"]["schema"], body)
        assert (body["error"], body["oldest_seq"]) == ("EVENTS_EXPIRED", 3)
        assert [e["seq"] for e in lines_of(await stream(client, "after=2&wait=0"))] == [3, 4]


async def test_a_wait_cancelled_in_the_loop_turn_that_wakes_it_ends_cancelled() -> None:
    """A webhook task cancelled at stop in the very loop turn an event (or the shutdown) wakes its wait: the
    cancellation goes through (Python 3.11's wait_for would swallow it, and `stop` would wait on the task for
    ever), and the wait leaves no waiter behind."""
    log = EventLog()
    waiting = asyncio.create_task(log.wait(OP, 0, 30.0))
    await asyncio.sleep(0)  # it waits
    log.wake_all()
    waiting.cancel()
    done, _ = await asyncio.wait((waiting,), timeout=5)
    assert done == {waiting} and waiting.cancelled()
    woken = asyncio.create_task(log.wait(OP, 0, 30.0))
    await asyncio.sleep(0)
    log.wake_all()
    assert await woken is True
    assert await log.wait(OP, 0, 0.01) is False


class _Writer:
    def __init__(self) -> None:
        self.on_done: Any = None


class _Store:
    """A durable store in memory: what EventLog asks of `storage.event_log.EventStore`, reads counted."""

    def __init__(self) -> None:
        self.writer = _Writer()
        self.rows: list[StoredEvent] = []
        self.reads: list[tuple[str, str, float, float | None]] = []

    def append(self, operation_id: str, seq: int, kind: str, at: float, conn_id: str | None, line: bytes) -> int:
        self.rows.append(StoredEvent(operation_id, seq, kind, at, conn_id, line))
        return len(self.rows)

    def read(self, operation_id: str, after: int, limit: int) -> list[StoredEvent]:
        return [r for r in self.rows if r.operation_id == operation_id and r.seq > after][:limit]

    def of_call(self, operation_id: str, conn_id: str, since: float, until: float | None) -> list[StoredEvent]:
        self.reads.append((operation_id, conn_id, since, until))
        return [r for r in self.rows if (r.operation_id, r.conn_id) == (operation_id, conn_id)]


async def test_durable_call_history_is_read_from_the_store_once_the_ring_moved_past_the_call() -> None:
    """A call's history from memory while memory has all of it; once its first event left the ring (or after a
    restart), from the store, within the call's lifetime, whole, and a later event of that call does not make
    memory's partial list the answer again."""
    store = _Store()
    log = EventLog(store=store, ring=3)  # type: ignore[arg-type]
    log.bind(asyncio.get_running_loop())

    def offered(conn_id: str, at: float) -> None:
        log.publish(CallOffered(operation_id=OP, conn_id=conn_id, agent="1001", leg_id="l1",
                                customer_number="3105550000", at=at))

    def answered(conn_id: str, at: float) -> None:
        log.publish(CallAnswered(operation_id=OP, conn_id=conn_id, agent="1001", leg_id="l1", at=at))

    offered("c1", 100.0)
    answered("c1", 101.0)
    log._committed(len(store.rows))  # the writer's report (on the loop, as `_report` schedules it)
    assert [w.seq for w in await log.call_history(OP, "c1", 100.0, None)] == [1, 2]
    assert store.reads == []  # from memory
    offered("c2", 102.0)
    answered("c2", 103.0)  # the ring (3) drops c1's first event: memory no longer has c1 whole
    log._committed(len(store.rows))
    assert [(w.seq, w.type) for w in await log.call_history(OP, "c1", 100.0, 101.5)] == [
        (1, "call.offered"), (2, "call.answered")]
    assert store.reads == [(OP, "c1", 100.0, 101.5)]
    answered("c1", 104.0)  # the call goes on: still read whole from the store
    log._committed(len(store.rows))
    assert [w.seq for w in await log.call_history(OP, "c1", 100.0, None)] == [1, 2, 5]
    assert [w.seq for w in await log.call_history(OP, "c2", 102.0, None)] == [3, 4]  # c2 from memory
    assert len(store.reads) == 2
    assert await log.call_history("0077", "c1", 100.0, None) == []  # another operation's: none


def test_domain_events_without_a_wire_type_are_not_numbered() -> None:
    log = EventLog()
    seen: list[str] = []
    log.add_listener(lambda e: seen.append(e.name))
    log.publish(CallMuted(operation_id=OP, conn_id="c1", muted=True, seq=1, at=1.0))
    assert (seen, log.last_seq(OP)) == (["call_muted"], 0)


async def test_ndjson_streams_live_events_and_resumes_on_a_real_server() -> None:
    world = World()
    world.login("1001")
    async with LiveServer(world.app) as server, httpx.AsyncClient(base_url=server.url) as client:
        got: list[dict[str, object]] = []

        async def consume(after: int) -> None:
            async with client.stream("GET", "/v2/events", params={"after": after, "wait": 5, "limit": 2},
                                     headers=BEARER) as response:
                assert response.headers["callbridge-last-seq"] == "1"
                async for line in response.aiter_lines():
                    if line.strip():
                        got.append(json.loads(line))

        task = asyncio.create_task(consume(1))
        await asyncio.sleep(0.2)
        assert got == []
        world.service.change_status(OP, "1001", "2")
        world.service.agent_display(OP, "1001", "hide", "dial")
        await asyncio.wait_for(task, 5)
        check_events(got)
        assert [(e["seq"], e["type"]) for e in got] == [(2, "agent.state_changed"), (3, "agent.display_changed")]


async def test_websocket_with_header_and_with_subprotocol_token() -> None:
    world = World()
    world.login("1001")
    async with LiveServer(world.app) as server:
        url = f"ws://127.0.0.1:{server.port}/v2/events?after=0"
        async with websockets.connect(url, additional_headers=BEARER,
                                      subprotocols=["callbridge.events.v2"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "callbridge.events.v2"
            first = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert (first["seq"], first["type"]) == (1, "agent.state_changed")
            world.service.change_status(OP, "1001", "2")
            live = json.loads(await asyncio.wait_for(ws.recv(), 5))
            check_events([first, live])
            assert live["seq"] == 2
        protocols = ["callbridge.events.v2", f"bearer.{TOKEN}"]
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/v2/events?after=1",
                                      subprotocols=protocols) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == "callbridge.events.v2"
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["seq"] == 2
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(url, additional_headers={"authorization": "Bearer nope"}):
                pass
        assert info.value.response.status_code == 403
        assert json.loads(info.value.response.body or b"{}")["error"] == "INVALID_TOKEN"


def test_a_wire_event_is_serialised_on_first_read_from_its_state_at_publication() -> None:
    world = World()
    world.service.on_registration_changed(OP, "1001", True)
    world.service.change_status(OP, "1001", "ready")
    (wire,) = world.events.since(OP, 0)
    world.service.on_registration_changed(OP, "1001", False)  # after publication: not in the event
    line = wire.line
    assert json.loads(line) == {
        "seq": 1, "type": "agent.state_changed", "at": rfc3339(wire.at), "operation": OP,
        "data": {"agent_id": "1001", "state": "ready", "previous_state": "logout", "aux_state": None,
                 "registered": True, "reason": "api"}}
    assert line == json.dumps(wire.to_json(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert wire.line is line  # serialised once, then shared


async def test_an_operation_taken_back_over_reads_on_without_the_gap_its_old_events_would_leave() -> None:
    """A cluster node held an operation (seq 1-3), handed it over, and takes it back after the other node numbered
    4 and 5 (in the shared database): its log goes on at 6, and a reader from any seq gets a run without gaps: 6
    alone after 5, 1 to 6 from the database from 0. Memory kept 1-3 before: `since` counted 6 at index 5 of
    [1, 2, 3, 6] and returned nothing, and the stream from 0 skipped 4 and 5."""
    from callbridge.storage.event_log import Bounds

    store = _Store()
    log = EventLog(store=store)  # type: ignore[arg-type]
    log.bind(asyncio.get_running_loop())

    def offered(conn_id: str, at: float) -> None:
        log.publish(CallOffered(operation_id=OP, conn_id=conn_id, agent="1001", leg_id="l1",
                                customer_number="3105550000", at=at))

    for i in range(3):
        offered(f"c{i}", 100.0 + i)
    log._committed(len(store.rows))
    for seq in (4, 5):  # the other node's, meanwhile
        store.append(OP, seq, "call.offered", 110.0 + seq, f"x{seq}", f'{{"seq":{seq},"data":{{}}}}'.encode())
    log.restore({OP: Bounds(1, 5)})
    offered("c9", 120.0)
    log._committed(len(store.rows))
    assert log.last_seq(OP) == log.committed_seq(OP) == 6
    assert [w.seq for w in await log.read(OP, 5)] == [6]
    assert [w.seq for w in await log.read(OP, 0)] == [1, 2, 3, 4, 5, 6]
    assert [w.seq for w in await log.read(OP, 3)] == [4, 5, 6]
