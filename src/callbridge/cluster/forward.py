"""Any node answers the API (docs/cluster.md, "Any node answers the API"): a request for an operation another node
owns is forwarded to that node and answered with what it answered.

Rules
- Forwarded: the agentbox endpoint (`POST /api/v2/agentbox.php`) and the native API's live reads and actions
  (`/v2/transfers...`, `/v2/agents...`, `/v2/calls...`), all of which the owner answers from its memory, and the
  event stream over HTTP (`GET /v2/events`): the owner numbers the operation's events and is woken by their
  commits, so a consumer reads one sequence whatever node it reached; the owner's answer is relayed as it comes
  (chunk by chunk, its keep-alive lines included) until it ends or the consumer leaves; and the event stream as a
  WebSocket, relayed frame by frame both ways over a WebSocket of this node's to the owner (the consumer's offered
  subprotocols and token go along; the owner's choice, refusal or close code comes back). An owner that dies under
  a relayed WebSocket closes it 1012, as an owner that hands the operation over does: the consumer reconnects with
  its cursor and reaches the new owner. Not forwarded: `/v2/cdrs` (read from the database, the same on every node),
  the pages, `/health`, `/metrics`.
- The operation is the token's (`TokenGate.authenticate`, with `wolkvox_server` checked as the API checks it). A
  request whose token is missing or refused is answered here: every node answers those the same way.
- This node holds the operation's lease: answered here. Another live node holds it: the request (method, path,
  query, headers but `host`, body) goes to that node's `http_url` with `callbridge-forwarded-by: <this node>`, and
  its answer (status, headers, body) comes back unchanged. A request that arrives forwarded for an operation this
  node does not hold is not forwarded again (no loops): 503.
- No live node holds the lease, or its owner does not answer: 503 with the contract's message, `CALL CONTROL IS
  NOT AVAILABLE` (the agentbox envelope, or the native API's problem `CALL_CONTROL_UNAVAILABLE`), at once.
- The same 503 from the owner in a handover's two gaps (`ClusterMember.serves`): from taking the lease until the
  operation's calls, agents and registrations are adopted, and from forgetting them in a handover until the lease
  is released. Answered from memory there, a request would see an operation without its calls (an agent
  `logout`, `AGENT PHONE IS NOT REGISTERED`): an answer the owner would not give a moment later.
- The owner's per-token concurrency limit applies to forwarded requests (they hold a slot there); this node's
  own limit does not count them. So the limit counts a token's requests in flight on every node together, and so
  does its daily quota (counted in PostgreSQL by the owner: storage/token_usage.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
import websockets
from sqlalchemy import Engine, text
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from callbridge.cluster.member import ClusterMember
from callbridge.http import contract
from callbridge.http.agentbox import row_response
from callbridge.http.auth import Refused, TokenGate
from callbridge.http.native import Problem, problem_response

log = logging.getLogger(__name__)

FORWARDED_BY = "callbridge-forwarded-by"
_NATIVE = ("/v2/transfers", "/v2/agents", "/v2/calls")
_EVENTS = "/v2/events"
_STREAM_READ_TIMEOUT_S = 40.0  # streams.KEEPALIVE_S (15 s) twice, and some
_CLOSE_MOVED = 1012  # streams.CLOSE_MOVED: "service restart", reconnect
_CLOSE_POLICY = 1008
_HOP_BY_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length",
               "proxy-connection"}
_OWNER = text("""
SELECT n.http_url FROM cluster_leases l JOIN cluster_nodes n ON n.node_id = l.node_id
WHERE l.operation_id = :op AND l.expires_at > now()
  AND n.heartbeat_at > now() - make_interval(secs => CAST(:seconds AS double precision))
""")


class ForwardToOwner:
    """ASGI middleware; `app.add_middleware(ForwardToOwner, gate=..., member=..., engine=...)`."""

    def __init__(self, app: ASGIApp, *, gate: TokenGate, member: ClusterMember, engine: Engine,
                 timeout: float = contract.REQUEST_TIMEOUT_S + 5) -> None:
        self.app = app
        self.gate = gate
        self.member = member
        self.engine = engine
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self.forwarded = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not _forwardable(scope):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            principal = self.gate.authenticate(_token(headers) or _subprotocol_token(headers),
                                               headers.get(contract.SERVER_HEADER))
        except Refused:
            await self.app(scope, receive, send)  # answered here, as every node answers it
            return
        operation_id = principal.operation_id
        if self.member.owns(operation_id):
            if self.member.serves(operation_id):
                await self.app(scope, receive, send)
            else:  # held, but its calls are being adopted here, or were handed over already: not here yet or now
                await _unavailable(scope, receive, send)
            return
        owner = None if FORWARDED_BY in headers else await asyncio.to_thread(self._owner, operation_id)
        if owner is None:
            await _unavailable(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self._relay_websocket(scope, receive, send, owner, operation_id)
            return
        body = await _body(receive)
        if scope["path"] == _EVENTS:
            await self._relay_stream(scope, receive, send, owner, operation_id)
            return
        try:
            answer = await self._forward(scope, owner, body)
        except httpx.HTTPError as exc:
            log.warning("cluster: the owner of operation %s at %s did not answer: %s", operation_id, owner, exc)
            await _unavailable(scope, receive, send)
            return
        self.forwarded += 1
        await send({"type": "http.response.start", "status": answer.status_code,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.multi_items()
                                if k.lower() not in _HOP_BY_HOP]
                    + [(b"content-length", str(len(answer.content)).encode())]})
        await send({"type": "http.response.body", "body": answer.content})

    async def _relay_stream(self, scope: Scope, receive: Receive, send: Send, owner: str, operation_id: str) -> None:
        """The owner's event stream, relayed as it comes; ended when the owner ends it or the consumer leaves."""
        client = self._client_for()
        method, url, headers = self._request_parts(scope, owner)
        # a stream is silent up to its keep-alive interval (a blank line every 15 s): read longer than that
        timeout = httpx.Timeout(self.timeout, read=_STREAM_READ_TIMEOUT_S)
        try:
            upstream = await client.send(client.build_request(method, url, headers=headers, timeout=timeout),
                                         stream=True)
        except httpx.HTTPError as exc:
            log.warning("cluster: the owner of operation %s at %s did not answer: %s", operation_id, owner, exc)
            await _unavailable(scope, receive, send)
            return
        self.forwarded += 1

        async def relay() -> None:
            await send({"type": "http.response.start", "status": upstream.status_code,
                        "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                                    for k, v in upstream.headers.multi_items() if k.lower() not in _HOP_BY_HOP]})
            with contextlib.suppress(httpx.HTTPError):  # the owner went away: the stream ends here too
                async for chunk in upstream.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        async def consumer_left() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        relaying = asyncio.ensure_future(relay())
        watching = asyncio.ensure_future(consumer_left())
        try:
            await asyncio.wait((relaying, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relaying, watching):
                task.cancel()
            await asyncio.gather(relaying, watching, return_exceptions=True)
            await upstream.aclose()
        if relaying.done() and not relaying.cancelled():
            relaying.result()  # what the relay raised, if anything

    async def _relay_websocket(self, scope: Scope, receive: Receive, send: Send, owner: str,
                               operation_id: str) -> None:
        """The owner's WebSocket event stream, relayed frame by frame until either side closes."""
        _, url, headers = self._request_parts(scope, owner)
        url = "ws" + url[len("http"):]
        offered = [Subprotocol(p.strip()) for p in dict(headers).get("sec-websocket-protocol", "").split(",")
                   if p.strip()]
        passed = [(k, v) for k, v in headers if not k.lower().startswith("sec-websocket-")]
        try:
            upstream = await connect(url, additional_headers=passed, subprotocols=offered or None,
                                                open_timeout=self.timeout, ping_interval=None, max_size=None,
                                                user_agent_header=None)
        except websockets.InvalidStatus as refused:  # the owner's refusal (a 410 for an expired cursor): as it was
            answer = refused.response
            await _deny(scope, receive, send, answer.status_code,
                        [(k, v) for k, v in answer.headers.raw_items() if k.lower() not in _HOP_BY_HOP],
                        bytes(answer.body or b""))
            return
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            log.warning("cluster: the owner of operation %s at %s did not answer: %s", operation_id, owner, exc)
            await _unavailable(scope, receive, send)
            return
        self.forwarded += 1
        if (await receive())["type"] != "websocket.connect":
            await upstream.close()
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
        downward = asyncio.ensure_future(_downward(upstream, send))
        upward = asyncio.ensure_future(_upward(upstream, receive))
        try:
            await asyncio.wait((downward, upward), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (downward, upward):
                task.cancel()
            await asyncio.gather(downward, upward, return_exceptions=True)
            await upstream.close()

    def _owner(self, operation_id: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(_OWNER, {"op": operation_id, "seconds": self.member.lease_seconds}).first()
        return None if row is None or not row[0] else str(row[0])

    def _client_for(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, trust_env=False)
        return self._client

    def _request_parts(self, scope: Scope, owner: str) -> tuple[str, str, list[tuple[str, str]]]:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                   if k.decode("latin-1").lower() not in _HOP_BY_HOP]
        headers.append((FORWARDED_BY, self.member.node_id))
        query = scope.get("query_string", b"").decode("latin-1")
        url = owner.rstrip("/") + scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0]
        return scope.get("method", "GET"), url + (f"?{query}" if query else ""), headers

    async def _forward(self, scope: Scope, owner: str, body: bytes) -> httpx.Response:
        method, url, headers = self._request_parts(scope, owner)
        return await self._client_for().request(method, url, headers=headers, content=body)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _forwardable(scope: Scope) -> bool:
    path: str = scope["path"]
    if scope["type"] == "websocket":
        return path == _EVENTS
    if path == contract.ENDPOINT_PATH:
        return bool(scope["method"] == "POST")
    if path == _EVENTS:
        return bool(scope["method"] == "GET")
    return any(path == prefix or path.startswith(prefix + "/") for prefix in _NATIVE)


def _token(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization")
    if value is not None:
        scheme, _, token = value.strip().partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return headers.get(contract.TOKEN_HEADER)


def _subprotocol_token(headers: dict[str, str]) -> str | None:
    """A browser's token, offered as the subprotocol `bearer.<token>` (http/streams.py)."""
    for name in headers.get("sec-websocket-protocol", "").split(","):
        if name.strip().startswith("bearer."):
            return name.strip()[len("bearer."):]
    return None


async def _downward(upstream: ClientConnection, send: Send) -> None:
    """The owner's frames to the consumer; the owner's close code after them (1012 when the owner vanished)."""
    try:
        async for frame in upstream:
            if isinstance(frame, str):
                await send({"type": "websocket.send", "text": frame})
            else:
                await send({"type": "websocket.send", "bytes": frame})
    except websockets.ConnectionClosed:
        pass
    code = upstream.close_code
    await send({"type": "websocket.close",
                "code": code if code is not None and code not in (1005, 1006) else _CLOSE_MOVED})


async def _upward(upstream: ClientConnection, receive: Receive) -> None:
    """The consumer's frames to the owner (which ignores them) until the consumer leaves."""
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["type"] == "websocket.receive":
            data = message.get("text") if message.get("text") is not None else message.get("bytes")
            if data is not None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await upstream.send(data)


async def _deny(scope: Scope, receive: Receive, send: Send, status: int, headers: list[tuple[str, str]],
                body: bytes) -> None:
    """Refuse a WebSocket upgrade with an HTTP answer (the ASGI denial extension), else close 1008."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": _CLOSE_POLICY})
        return
    await send({"type": "websocket.http.response.start", "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
                + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "websocket.http.response.body", "body": body})


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    row = contract.ERRORS["CALL_CONTROL_UNAVAILABLE"]
    if scope["type"] == "websocket":
        problem = problem_response(Problem("CALL_CONTROL_UNAVAILABLE"))
        await _deny(scope, receive, send, problem.status_code,
                    [(k.decode("latin-1"), v.decode("latin-1")) for k, v in problem.raw_headers
                     if k.decode("latin-1").lower() != "content-length"], bytes(problem.body))
        return
    if scope["path"] == contract.ENDPOINT_PATH:
        response = row_response(row)
    else:
        response = problem_response(Problem("CALL_CONTROL_UNAVAILABLE"))
    await response(scope, receive, send)

