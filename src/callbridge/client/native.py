"""Clients of callbridge's native API (``/v2/...``, defined by ``callbridge/http/openapi.json``).

Token as ``Authorization: Bearer``; answers are JSON resources (``callbridge.client.models``) or RFC 9457
problems, which become the same exceptions as the agentbox errors (``callbridge.client.errors``, by the problem's
``error`` key). Requests share the per-token limit of requests in flight with the agentbox clients of the same
server and token, and retry the concurrency refusal the same way (``limits``).

The event stream: ``events(after=seq)`` iterates over ``GET /v2/events?after=<seq>&wait=<s>``, the streaming HTTP
form of the stream (NDJSON: one event per line, blank lines are keep-alives; the server ends each response after
``wait`` seconds). The iterator reconnects whenever a response ends or the connection drops, always from the last
``seq`` it yielded, so a consumer sees every event once and in order. Without ``after`` it starts from the events
that happen from now on (the first response's ``Callbridge-Last-Seq`` header pins where "now" is). A stream older
than the server keeps raises :class:`~callbridge.client.errors.EventsExpired`. The stream does not take a slot of
the in-flight limit (the server does not count it either).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx

from callbridge.client import errors
from callbridge.client.agentbox import wolkvox_url
from callbridge.client.limits import DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT_S, RetryPolicy, loop_slots, thread_slots
from callbridge.client.models import Agent, Call, Cdr, Event, Page, Transfer

EVENTS_PATH = "/v2/events"
LAST_SEQ_HEADER = "callbridge-last-seq"
DEFAULT_RECONNECT = RetryPolicy(attempts=1_000_000, base_delay=0.5, max_delay=15.0)

QueryParams = Mapping[str, str | int | float]
R = TypeVar("R")


def _decode(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer, or the exception a problem (or anything else) stands for (raised)."""
    status = response.status_code
    text = response.content.decode("utf-8", errors="replace")
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        raise errors.UnexpectedResponse(status, text, "the answer is not JSON") from None
    if 200 <= status < 300:
        return body
    if isinstance(body, dict) and ("error" in body or "type" in body or "status" in body):
        raise errors.from_problem(body, status=status)
    raise errors.UnexpectedResponse(status, text, f"HTTP {status} without a problem document")


def _build(factory: Callable[[Any], R], body: Any, status: int) -> R:
    try:
        return factory(body)
    except (KeyError, ValueError, TypeError) as exc:
        raise errors.UnexpectedResponse(status, json.dumps(body), f"unreadable resource: {exc}") from None


def _items(body: Any) -> list[Any]:
    items = body.get("items") if isinstance(body, dict) else body
    return items if isinstance(items, list) else []


def _event_params(after: int | None, wait: float, types: Sequence[str] | None) -> dict[str, str | int | float]:
    params: dict[str, str | int | float] = {"wait": wait}
    if after is not None:
        params["after"] = after
    if types:
        params["types"] = ",".join(types)
    return params


def _parse_line(line: str) -> Event | None:
    """An event from one line; None for a keep-alive or a JSON line that is no event (skipped, as unknown
    things are); ValueError for a line that is not JSON at all: a connection cut mid-line."""
    if not line.strip():
        return None
    value = json.loads(line)
    try:
        return Event.from_json(value)
    except ValueError:
        return None


def _instant(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("a time without a zone: give an aware datetime")
    return value.isoformat()


def _cdr_params(since: datetime | str | None, until: datetime | str | None, limit: int | None,
                cursor: str | None) -> dict[str, str | int | float]:
    params: dict[str, str | int | float] = {}
    for name, value in (("from", since), ("to", until)):
        if value is not None:
            params[name] = _instant(value)
    if limit is not None:
        params["limit"] = limit
    if cursor is not None:
        params["cursor"] = cursor
    return params


def _cdr_page(body: Any) -> Page[Cdr]:
    following = body.get("next_cursor") if isinstance(body, dict) else None
    return Page(tuple(_build(Cdr.from_json, item, 200) for item in _items(body)),
                following if isinstance(following, str) and following else None)


def _seg(value: str) -> str:
    """A path segment: ids are opaque, so nothing in one may change the path."""
    return quote(value, safe="")


def _start_seq(response: httpx.Response) -> int | None:
    value = response.headers.get(LAST_SEQ_HEADER, "")
    return int(value) if value.strip().isdigit() else None


class _Base:
    def __init__(self, base_url: str, *, token: str, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 retry: RetryPolicy | None = None, reconnect: RetryPolicy | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.max_in_flight = max_in_flight
        self.retry = retry or RetryPolicy()
        self.reconnect = reconnect or DEFAULT_RECONNECT
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    @staticmethod
    def _transfer_body(agent_id: str, target: str, kind: str, timeout: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"agent_id": agent_id, "kind": kind, "target": target}
        if timeout is not None:
            body["timeout"] = timeout
        return body


class NativeClient(_Base):
    """Blocking client of the native API."""

    def __init__(self, base_url: str, *, token: str, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 retry: RetryPolicy | None = None, reconnect: RetryPolicy | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, token=token, max_in_flight=max_in_flight, retry=retry, reconnect=reconnect,
                         timeout=timeout)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=httpx.Timeout(timeout),
                                  transport=transport)
        self._slots = thread_slots(self.base_url, token, max_in_flight)

    @classmethod
    def for_wolkvox(cls, server: str, token: str, **kwargs: Any) -> NativeClient:
        return cls(wolkvox_url(server), token=token, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NativeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, params: QueryParams | None = None, json_body: Any = None,
                headers: Mapping[str, str] | None = None) -> Any:
        """One request within the in-flight limit, retrying the concurrency refusal; the decoded JSON."""
        delays = self.retry.delays()
        while True:
            with self._slots:
                response = self._http.request(method, path, params=params, json=json_body, headers=headers)
            try:
                return _decode(response)
            except errors.ConcurrencyLimit:
                delay = next(delays, None)
                if delay is None:
                    raise
            time.sleep(delay)

    def create_transfer(self, agent_id: str, target: str, *, kind: Literal["blind", "attended"] = "blind",
                        timeout: int | None = None, idempotency_key: str | None = None) -> Transfer:
        """Start a transfer; a retry with the same ``idempotency_key`` returns the first result (a fresh key is
        made when none is given, and kept across this call's own retries)."""
        key = idempotency_key or uuid.uuid4().hex
        body = self.request("POST", "/v2/transfers", json_body=self._transfer_body(agent_id, target, kind, timeout),
                            headers={"Idempotency-Key": key})
        return _build(Transfer.from_json, body, 201)

    def get_transfer(self, transfer_id: str) -> Transfer:
        return _build(Transfer.from_json, self.request("GET", f"/v2/transfers/{_seg(transfer_id)}"), 200)

    def complete_transfer(self, transfer_id: str) -> Transfer:
        return _build(Transfer.from_json, self.request("PUT", f"/v2/transfers/{_seg(transfer_id)}/complete"), 200)

    def cancel_transfer(self, transfer_id: str) -> Transfer:
        return _build(Transfer.from_json, self.request("DELETE", f"/v2/transfers/{_seg(transfer_id)}"), 200)

    def list_agents(self, *, state: str | None = None) -> list[Agent]:
        body = self.request("GET", "/v2/agents", params={"state": state} if state else None)
        return [_build(Agent.from_json, item, 200) for item in _items(body)]

    def get_agent(self, agent_id: str) -> Agent:
        return _build(Agent.from_json, self.request("GET", f"/v2/agents/{_seg(agent_id)}"), 200)

    def list_calls(self, *, state: Literal["active", "ended", "all"] = "active", agent_id: str | None = None,
                   limit: int | None = None) -> list[Call]:
        params: dict[str, str | int | float] = {"state": state}
        if agent_id is not None:
            params["agent_id"] = agent_id
        if limit is not None:
            params["limit"] = limit
        return [_build(Call.from_json, item, 200) for item in _items(self.request("GET", "/v2/calls", params=params))]

    def get_call(self, conn_id: str) -> Call:
        return _build(Call.from_json, self.request("GET", f"/v2/calls/{_seg(conn_id)}"), 200)

    def list_cdrs(self, *, since: datetime | str | None = None, until: datetime | str | None = None,
                  limit: int | None = None, cursor: str | None = None) -> Page[Cdr]:
        """One page of ``GET /v2/cdrs``: started in [since, until), oldest first."""
        return _cdr_page(self.request("GET", "/v2/cdrs", params=_cdr_params(since, until, limit, cursor)))

    def cdrs(self, *, since: datetime | str | None = None, until: datetime | str | None = None,
             page_size: int | None = None) -> Iterator[Cdr]:
        """Every CDR started in [since, until), oldest first, page after page (each exactly once)."""
        cursor: str | None = None
        while True:
            page = self.list_cdrs(since=since, until=until, limit=page_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def events(self, after: int | None = None, *, wait: float = 30.0,
               types: Sequence[str] | None = None) -> Iterator[Event]:
        """Every event after ``after``, in order, for ever: see the module's docstring."""
        failures = 0
        while True:
            got = False
            try:
                with self._http.stream("GET", EVENTS_PATH, params=_event_params(after, wait, types),
                                       headers={"Accept": "application/x-ndjson"}) as response:
                    if response.status_code >= 300:
                        response.read()
                        _decode(response)
                    if after is None:
                        after = _start_seq(response)
                    for line in response.iter_lines():
                        event = _parse_line(line)
                        if event is None or (after is not None and event.seq <= after):
                            continue
                        after, got, failures = event.seq, True, 0
                        yield event
            except (httpx.TransportError, ValueError):
                failures += 1
                if failures >= self.reconnect.attempts:
                    raise
                time.sleep(self.reconnect.delay(failures - 1))
                continue
            if not got:
                time.sleep(self.reconnect.base_delay)


class AsyncNativeClient(_Base):
    """asyncio client of the native API: the same methods as :class:`NativeClient`, as coroutines; ``events`` is
    an async iterator."""

    def __init__(self, base_url: str, *, token: str, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 retry: RetryPolicy | None = None, reconnect: RetryPolicy | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, token=token, max_in_flight=max_in_flight, retry=retry, reconnect=reconnect,
                         timeout=timeout)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                       timeout=httpx.Timeout(timeout), transport=transport)

    @classmethod
    def for_wolkvox(cls, server: str, token: str, **kwargs: Any) -> AsyncNativeClient:
        return cls(wolkvox_url(server), token=token, **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncNativeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, *, params: QueryParams | None = None, json_body: Any = None,
                      headers: Mapping[str, str] | None = None) -> Any:
        delays = self.retry.delays()
        slots = loop_slots(self.base_url, self.token, self.max_in_flight)
        while True:
            async with slots:
                response = await self._http.request(method, path, params=params, json=json_body, headers=headers)
            try:
                return _decode(response)
            except errors.ConcurrencyLimit:
                delay = next(delays, None)
                if delay is None:
                    raise
            await asyncio.sleep(delay)

    async def create_transfer(self, agent_id: str, target: str, *, kind: Literal["blind", "attended"] = "blind",
                              timeout: int | None = None, idempotency_key: str | None = None) -> Transfer:
        key = idempotency_key or uuid.uuid4().hex
        body = await self.request("POST", "/v2/transfers",
                                  json_body=self._transfer_body(agent_id, target, kind, timeout),
                                  headers={"Idempotency-Key": key})
        return _build(Transfer.from_json, body, 201)

    async def get_transfer(self, transfer_id: str) -> Transfer:
        return _build(Transfer.from_json, await self.request("GET", f"/v2/transfers/{_seg(transfer_id)}"), 200)

    async def complete_transfer(self, transfer_id: str) -> Transfer:
        return _build(Transfer.from_json, await self.request("PUT", f"/v2/transfers/{_seg(transfer_id)}/complete"), 200)

    async def cancel_transfer(self, transfer_id: str) -> Transfer:
        return _build(Transfer.from_json, await self.request("DELETE", f"/v2/transfers/{_seg(transfer_id)}"), 200)

    async def list_agents(self, *, state: str | None = None) -> list[Agent]:
        body = await self.request("GET", "/v2/agents", params={"state": state} if state else None)
        return [_build(Agent.from_json, item, 200) for item in _items(body)]

    async def get_agent(self, agent_id: str) -> Agent:
        return _build(Agent.from_json, await self.request("GET", f"/v2/agents/{_seg(agent_id)}"), 200)

    async def list_calls(self, *, state: Literal["active", "ended", "all"] = "active", agent_id: str | None = None,
                         limit: int | None = None) -> list[Call]:
        params: dict[str, str | int | float] = {"state": state}
        if agent_id is not None:
            params["agent_id"] = agent_id
        if limit is not None:
            params["limit"] = limit
        body = await self.request("GET", "/v2/calls", params=params)
        return [_build(Call.from_json, item, 200) for item in _items(body)]

    async def get_call(self, conn_id: str) -> Call:
        return _build(Call.from_json, await self.request("GET", f"/v2/calls/{_seg(conn_id)}"), 200)

    async def list_cdrs(self, *, since: datetime | str | None = None, until: datetime | str | None = None,
                        limit: int | None = None, cursor: str | None = None) -> Page[Cdr]:
        return _cdr_page(await self.request("GET", "/v2/cdrs", params=_cdr_params(since, until, limit, cursor)))

    async def cdrs(self, *, since: datetime | str | None = None, until: datetime | str | None = None,
                   page_size: int | None = None) -> AsyncIterator[Cdr]:
        cursor: str | None = None
        while True:
            page = await self.list_cdrs(since=since, until=until, limit=page_size, cursor=cursor)
            for cdr in page.items:
                yield cdr
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def events(self, after: int | None = None, *, wait: float = 30.0,
                     types: Sequence[str] | None = None) -> AsyncIterator[Event]:
        """Every event after ``after``, in order, for ever: see the module's docstring."""
        failures = 0
        while True:
            got = False
            try:
                async with self._http.stream("GET", EVENTS_PATH, params=_event_params(after, wait, types),
                                             headers={"Accept": "application/x-ndjson"}) as response:
                    if response.status_code >= 300:
                        await response.aread()
                        _decode(response)
                    if after is None:
                        after = _start_seq(response)
                    async for line in response.aiter_lines():
                        event = _parse_line(line)
                        if event is None or (after is not None and event.seq <= after):
                            continue
                        after, got, failures = event.seq, True, 0
                        yield event
            except (httpx.TransportError, ValueError):
                failures += 1
                if failures >= self.reconnect.attempts:
                    raise
                await asyncio.sleep(self.reconnect.delay(failures - 1))
                continue
            if not got:
                await asyncio.sleep(self.reconnect.base_delay)
