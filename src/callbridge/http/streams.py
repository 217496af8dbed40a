"""`GET /v2/events`: the event log as NDJSON over plain HTTP, or as a WebSocket (`openapi.json`, `x-websocket`).

HTTP: `200 application/x-ndjson`, `Callbridge-Last-Seq` = the operation's last seq when the response began; the
kept events with seq > `after` first, then live ones; the response ends `wait` seconds after it began or after
`limit` events; a blank line every 15 s of silence. `after` absent: only what happens from now on.

WebSocket: the same URL with an upgrade, subprotocol `callbridge.events.v2`; the token in `Authorization: Bearer`
or, from a browser, as the offered subprotocol `bearer.<token>`. A refused token answers the upgrade with the
problem (401/403) and no upgrade. One Event per text frame; a ping every 20 s (uvicorn's default `ws_ping_interval`,
kept by `callbridge serve`; a peer silent 20 s more is dropped); close 4410 when the consumer's cursor falls out
of retention, 1001 at shutdown, 1012 (RFC 6455 §7.4 registry: "service restart") when this node no longer owns the
operation in a cluster (handed over, or its lease lost): the consumer reconnects, to any node, with `after` = the
last seq it read, and reads on from the new owner (an HTTP stream ends then as well).

After a restart a stream resumes from the durable log: `after=N` answers the kept events with seq > N, read from
memory when recent, from the database otherwise (`EventLog.read`); only committed events are sent.

Streams count toward neither the token's concurrency limit nor its 60 s limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from callbridge.http import contract
from callbridge.http.auth import Principal, Refused, TokenGate
from callbridge.http.events import EventLog
from callbridge.http.native import Problem, problem_response, refusal_problem
from callbridge.http.request_log import note

SUBPROTOCOL: Final = "callbridge.events.v2"
KEEPALIVE_S: Final = 15.0
EVENT_TYPES: Final = frozenset({
    "call.offered", "call.answered", "call.held", "call.ended", "call.media_direct", "call.dtmf",
    "call.monitor_started", "call.monitor_ended",
    "transfer.created",
    "transfer.ringing",
    "transfer.answered", "transfer.completed", "transfer.failed", "transfer.cancelled", "agent.state_changed",
    "agent.display_changed",
})
CLOSE_EXPIRED: Final = 4410
CLOSE_GOING_AWAY: Final = 1001
CLOSE_MOVED: Final = 1012


class StreamQuery:
    __slots__ = ("after", "limit", "types", "wait")

    def __init__(self, after: int | None, wait: float, limit: int | None, types: frozenset[str] | None) -> None:
        self.after = after
        self.wait = wait
        self.limit = limit
        self.types = types


def parse_query(conn: HTTPConnection) -> StreamQuery:
    q = conn.query_params
    after: int | None = None
    if "after" in q:
        if not q["after"].isdigit():
            raise Problem("INVALID_PARAMETER", parameter="after")
        after = int(q["after"])
    try:
        wait = float(q.get("wait", "30"))
    except ValueError:
        raise Problem("INVALID_PARAMETER", parameter="wait") from None
    if not 0 <= wait <= 300:
        raise Problem("INVALID_PARAMETER", parameter="wait")
    limit: int | None = None
    if "limit" in q:
        if not q["limit"].isdigit() or not 1 <= int(q["limit"]) <= 10000:
            raise Problem("INVALID_PARAMETER", parameter="limit")
        limit = int(q["limit"])
    types: frozenset[str] | None = None
    if q.get("types"):
        types = frozenset(t.strip() for t in q["types"].split(","))
        if not types <= EVENT_TYPES:
            raise Problem("INVALID_PARAMETER", parameter="types")
    return StreamQuery(after, wait, limit, types)


def _token_from_subprotocols(offered: list[str]) -> str | None:
    for name in offered:
        if name.startswith("bearer."):
            return name[len("bearer."):]
    return None


class EventStreams:
    def __init__(self, gate: TokenGate, events: EventLog, *, keepalive: float = KEEPALIVE_S) -> None:
        self._gate = gate
        self._events = events
        # In a cluster, whether this node owns an operation (ClusterMember.owns): a stream of an operation it no
        # longer owns ends, since its events are numbered elsewhere now. One node owns everything.
        self.owns: Callable[[str], bool] = lambda _operation_id: True
        self._keepalive = keepalive
        self._closing = asyncio.Event()
        self.open_streams = 0  # NDJSON responses and WebSockets
        self.open_websockets = 0

    def shutdown(self) -> None:
        """Ends every stream at once: HTTP responses finish, WebSockets close with 1001 (their waits are woken)."""
        self._closing.set()
        self._events.wake_all()

    def _authenticate(self, conn: HTTPConnection, token: str | None) -> Principal:
        try:
            principal = self._gate.authenticate(token, conn.headers.get(contract.SERVER_HEADER))
        except Refused as refused:
            raise refusal_problem(refused) from None
        note(conn.scope, operation=principal.operation_id)
        return principal

    def _start(self, principal: Principal, query: StreamQuery) -> int:
        """The cursor to start from; Problem(EVENTS_EXPIRED) when `after` is no longer kept."""
        op = principal.operation_id
        if query.after is None:
            return self._events.committed_seq(op)
        if self._events.expired(op, query.after):
            raise Problem("EVENTS_EXPIRED", oldest_seq=self._events.oldest_seq(op))
        return query.after

    async def http(self, request: Request) -> Response:
        try:
            token = request.headers.get("authorization", "")
            scheme, _, value = token.partition(" ")
            bearer = value.strip() if scheme.lower() == "bearer" else None
            principal = self._authenticate(request, bearer or request.headers.get(contract.TOKEN_HEADER))
            query = parse_query(request)
            cursor = self._start(principal, query)
        except Problem as problem:
            return problem_response(problem)
        last = self._events.committed_seq(principal.operation_id)
        return StreamingResponse(self._lines(principal.operation_id, cursor, query),
                                 media_type="application/x-ndjson",
                                 headers={"callbridge-last-seq": str(last), "cache-control": "no-store"})

    async def _lines(self, op: str, cursor: int, query: StreamQuery) -> AsyncIterator[bytes]:
        deadline = time.monotonic() + query.wait
        sent = 0
        self.open_streams += 1
        try:
            while True:
                for wire in await self._events.read(op, cursor):
                    cursor = wire.seq
                    if query.types is not None and wire.type not in query.types:
                        continue
                    yield wire.line + b"\n"
                    sent += 1
                    if query.limit is not None and sent >= query.limit:
                        return
                left = deadline - time.monotonic()
                if left <= 0 or self._closing.is_set():
                    return
                if self._events.expired(op, cursor):
                    return  # fell out of retention: the consumer reconnects and learns it from the 410
                if not self.owns(op):
                    return  # moved to another node: the consumer reconnects and reads on from the new owner
                woken = await self._events.wait(op, cursor, min(left, self._keepalive))
                if not woken and deadline - time.monotonic() > 0:
                    yield b"\n"
        finally:
            self.open_streams -= 1

    async def websocket(self, ws: WebSocket) -> None:
        offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        auth = ws.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" and value.strip() else _token_from_subprotocols(offered)
        try:
            principal = self._authenticate(ws, token)
            query = parse_query(ws)
            cursor = self._start(principal, query)
        except Problem as problem:
            if "websocket.http.response" in ws.scope.get("extensions", {}):
                await ws.send_denial_response(problem_response(problem))
            else:  # a server without the denial extension: refuse the upgrade the only way left
                await ws.close(1008)
            return
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        op = principal.operation_id
        self.open_streams += 1
        self.open_websockets += 1
        receiver = asyncio.create_task(self._drain(ws))
        try:
            while not receiver.done():
                for wire in await self._events.read(op, cursor):
                    cursor = wire.seq
                    if query.types is None or wire.type in query.types:
                        await ws.send_text(wire.line.decode("utf-8"))
                if self._closing.is_set():
                    await ws.close(CLOSE_GOING_AWAY)
                    return
                if self._events.expired(op, cursor):
                    await ws.close(CLOSE_EXPIRED)
                    return
                if not self.owns(op):
                    await ws.close(CLOSE_MOVED)
                    return
                await self._events.wait(op, cursor, 1.0)
        except WebSocketDisconnect:
            pass
        finally:
            self.open_streams -= 1
            self.open_websockets -= 1
            receiver.cancel()

    @staticmethod
    async def _drain(ws: WebSocket) -> None:
        """The server ignores what the client sends; this notices the close."""
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
        except (WebSocketDisconnect, RuntimeError):
            return
