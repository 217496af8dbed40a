"""The native API clients: requests as openapi.json defines them, problems as exceptions, and the event stream
resuming from the last sequence number after a dropped connection (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from callbridge.client import (
    AgentNotFound,
    AsyncNativeClient,
    ConcurrencyLimit,
    EventsExpired,
    IdempotencyKeyReused,
    InvalidParameter,
    NativeClient,
    NotAttended,
    RetryPolicy,
    Transfer,
    TransferInProgress,
    TransferNotFound,
    UnexpectedResponse,
)
from callbridge.client.errors import BY_KEY
from callbridge.http import contract

TRANSFER = {
    "id": "t-1", "conn_id": "c-1", "kind": "attended", "origin": "native", "agent_id": "1001", "target": "1002",
    "target_type": "agent", "state": "ringing", "outcome": None, "failure": None, "sip_cause": None, "timeout": 20,
    "created_at": "2025-01-31T12:00:00.000Z", "ringing_at": "2025-01-31T12:00:00.250Z", "answered_at": None,
    "ended_at": None,
}
AGENT = {"agent_id": "1001", "name": "Ana", "state": "on_call", "aux_state": None, "registered": True,
         "conn_id": "c-1", "on_hold": False, "muted": False,
         "display": {"hungup": "show", "disposition": "show", "dial": "hide"},
         "state_since": "2025-01-31T11:59:00Z"}
CALL = {"conn_id": "c-1", "direction": "inbound", "state": "connected", "customer_number": "3001",
        "agent_id": "1001", "queue": "sales", "transfers": 0, "started_at": "2025-01-31T11:58:00Z",
        "answered_at": "2025-01-31T11:58:05Z", "ended_at": None}


class Api:
    """A handler answering by (method, path) and recording requests."""

    def __init__(self, routes: dict[tuple[str, str], httpx.Response]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.routes[(request.method, request.url.path)]


def _problem(key: str, **extra: Any) -> httpx.Response:
    body = contract.problem(key, **extra)
    return httpx.Response(body["status"], json=body, headers={"content-type": contract.PROBLEM_CONTENT_TYPE})


def test_requests_and_resources() -> None:
    api = Api({
        ("POST", "/v2/transfers"): httpx.Response(201, json=TRANSFER),
        ("GET", "/v2/transfers/t-1"): httpx.Response(200, json=TRANSFER),
        ("PUT", "/v2/transfers/t-1/complete"): httpx.Response(200, json={**TRANSFER, "state": "completed"}),
        ("DELETE", "/v2/transfers/t-1"): httpx.Response(200, json={**TRANSFER, "state": "cancelled"}),
        ("GET", "/v2/agents"): httpx.Response(200, json={"items": [AGENT]}),
        ("GET", "/v2/agents/1001"): httpx.Response(200, json=AGENT),
        ("GET", "/v2/calls"): httpx.Response(200, json={"items": [CALL]}),
        ("GET", "/v2/calls/c-1"): httpx.Response(200, json={**CALL, "legs": [
            {"leg_id": "l1", "role": "customer", "party": "3001", "state": "up", "started_at": "2025-01-31T11:58:00Z",
             "answered_at": None, "ended_at": None, "sip_cause": None}], "history": [
            {"seq": 3, "type": "call.answered", "at": "2025-01-31T11:58:05Z", "operation": "0042",
             "data": {"conn_id": "c-1", "agent_id": "1001"}}]}),
    })
    with NativeClient("http://127.0.0.1:8080", token="tok", transport=httpx.MockTransport(api)) as native:
        t = native.create_transfer("1001", "1002", kind="attended", timeout=20, idempotency_key="k-1")
        assert t == Transfer.from_json(TRANSFER)
        assert (t.state, t.finished, t.ringing_at) == ("ringing", False,
                                                       datetime(2025, 1, 31, 12, 0, 0, 250000, tzinfo=UTC))
        assert native.get_transfer("t-1").id == "t-1"
        done = native.complete_transfer("t-1")
        assert (done.state, done.finished) == ("completed", True)
        assert native.cancel_transfer("t-1").state == "cancelled"
        agents = native.list_agents(state="on_call")
        assert [a.agent_id for a in agents] == ["1001"] and agents[0].display["dial"] == "hide"
        assert native.get_agent("1001").registered is True
        assert [c.conn_id for c in native.list_calls(agent_id="1001", limit=5)] == ["c-1"]
        call = native.get_call("c-1")
        assert [leg.role for leg in call.legs] == ["customer"]
        assert [e.type for e in call.history] == ["call.answered"]
    r = api.requests
    assert all(x.headers["authorization"] == "Bearer tok" for x in r)
    assert json.loads(r[0].content) == {"agent_id": "1001", "kind": "attended", "target": "1002", "timeout": 20}
    assert r[0].headers["idempotency-key"] == "k-1"
    assert r[0].extensions["timeout"]["read"] == 60.0
    assert [x.content for x in r[1:4]] == [b"", b"", b""]
    assert r[4].url.query == b"state=on_call"
    assert r[6].url.query == b"state=active&agent_id=1001&limit=5"


def test_ids_cannot_change_the_path() -> None:
    api = Api({("GET", "/v2/transfers/../agents"): httpx.Response(200, json=TRANSFER)})  # keyed decoded
    with NativeClient("http://127.0.0.1:8080", token="tok", transport=httpx.MockTransport(api)) as native:
        native.get_transfer("../agents")
    assert api.requests[0].url.raw_path == b"/v2/transfers/..%2Fagents"


def test_create_transfer_makes_a_key_and_keeps_it_across_its_retries() -> None:
    answers = [_problem("CONCURRENCY_LIMIT"), httpx.Response(201, json=TRANSFER)]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    with NativeClient("http://127.0.0.1:8080", token="tok", transport=httpx.MockTransport(handler),
                      retry=RetryPolicy(base_delay=0.001)) as native:
        native.create_transfer("1001", "1002")
    keys = [r.headers["idempotency-key"] for r in seen]
    assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) == 32
    assert json.loads(seen[0].content) == {"agent_id": "1001", "kind": "blind", "target": "1002"}


@pytest.mark.parametrize("key", sorted(contract.PROBLEM_KEYS))
def test_every_problem_raises_its_exception(key: str) -> None:
    response = _problem(key, parameter="target") if key == "INVALID_PARAMETER" else _problem(key)
    api = Api({("GET", "/v2/transfers/t-1"): response})
    with NativeClient("http://127.0.0.1:8080", token="tok", transport=httpx.MockTransport(api),
                      retry=RetryPolicy(attempts=1)) as native, pytest.raises(BY_KEY[key]) as caught:
        native.get_transfer("t-1")
    exc = caught.value
    assert type(exc) is BY_KEY[key]
    if key == "NUMBER_NOT_ALLOWED":
        assert isinstance(exc, InvalidParameter) and exc.name == "customer_phone"
    assert (exc.key, exc.code, exc.status) == (key, response.status_code, response.status_code)
    assert exc.problem is not None and exc.problem["type"] == contract.problem_type(key)


def test_problem_details_reach_the_exception() -> None:
    cases = [
        (_problem("INVALID_PARAMETER", parameter="timeout"), InvalidParameter, "name", "timeout"),
        (_problem("TRANSFER_IN_PROGRESS", transfer_id="t-0"), TransferInProgress, "problem", None),
        (_problem("EVENTS_EXPIRED", oldest_seq=500), EventsExpired, "oldest_seq", 500),
    ]
    for response, cls, attr, value in cases:
        api = Api({("POST", "/v2/transfers"): response})
        with NativeClient("http://127.0.0.1:8080", token="tok", transport=httpx.MockTransport(api)) as native, \
                pytest.raises(cls) as caught:
            native.create_transfer("1001", "1002")
        if attr == "problem":
            assert caught.value.problem is not None and caught.value.problem["transfer_id"] == "t-0"
        else:
            assert getattr(caught.value, attr) == value


def test_unknown_problems_and_non_problems() -> None:
    odd = httpx.Response(404, json={"type": "about:blank", "title": "Not Found", "status": 404})
    api = Api({("GET", "/v2/agents/1"): odd, ("GET", "/v2/agents/2"): httpx.Response(502, text="<html>"),
               ("GET", "/v2/agents/3"): httpx.Response(200, json={"name": "no agent_id"})})
    with NativeClient("http://127.0.0.1:8080", token="tok", transport=httpx.MockTransport(api)) as native:
        with pytest.raises(Exception) as first:
            native.get_agent("1")
        assert type(first.value).__name__ == "NotFound" and not isinstance(first.value, AgentNotFound)
        with pytest.raises(UnexpectedResponse):
            native.get_agent("2")
        with pytest.raises(UnexpectedResponse):
            native.get_agent("3")


async def test_async_client_requests_and_errors() -> None:
    api = Api({("POST", "/v2/transfers"): httpx.Response(201, json=TRANSFER),
               ("DELETE", "/v2/transfers/t-1"): _problem("NOT_ATTENDED"),
               ("GET", "/v2/transfers/t-2"): _problem("TRANSFER_NOT_FOUND"),
               ("POST", "/v2/transfers/x"): _problem("IDEMPOTENCY_KEY_REUSED")})
    async with AsyncNativeClient("http://127.0.0.1:8080", token="tok", transport=httpx.MockTransport(api)) as n:
        t = await n.create_transfer("1001", "+5730", idempotency_key="abc")
        assert t.kind == "attended"
        with pytest.raises(NotAttended):
            await n.cancel_transfer("t-1")
        with pytest.raises(TransferNotFound):
            await n.get_transfer("t-2")
        with pytest.raises(IdempotencyKeyReused):
            await n.request("POST", "/v2/transfers/x")
    assert api.requests[0].headers["idempotency-key"] == "abc"


# --- the event stream -----------------------------------------------------------------------------------------------


def _event(seq: int, type_: str = "agent.state_changed") -> bytes:
    return json.dumps({"seq": seq, "type": type_, "at": "2025-01-31T12:00:00Z", "operation": "0042",
                       "data": {"agent_id": "1001"}}).encode() + b"\n"


class EventServer:
    """Serves /v2/events from a list of stored events; each connection's script says how it ends."""

    def __init__(self, scripts: list[tuple[int, str]], last_seq: int = 0) -> None:
        self.scripts = scripts  # (events to send before ending, how: "drop" | "cut" | "end")
        self.store = list(range(1, 100))
        self.last_seq = last_seq
        self.afters: list[str | None] = []

    def _chunks(self, after: int, count: int, how: str) -> list[bytes]:
        chunks = [b"\n"]  # a keep-alive first
        chunks += [_event(seq) for seq in self.store if seq > after][:count]
        if how == "cut":
            chunks.append(_event(after + count + 1)[:20])  # half a line, then the connection is gone
        return chunks

    def response(self, request: httpx.Request, stream: Any) -> httpx.Response:
        return httpx.Response(200, stream=stream, headers={"content-type": "application/x-ndjson",
                                                           "callbridge-last-seq": str(self.last_seq)})

    def plan(self, request: httpx.Request) -> tuple[list[bytes], str]:
        assert request.url.path == "/v2/events"
        assert request.headers["authorization"] == "Bearer tok"
        self.afters.append(request.url.params.get("after"))
        after = int(request.url.params.get("after", self.last_seq))
        count, how = self.scripts.pop(0)
        return self._chunks(after, count, how), how


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes], how: str) -> None:
        self.chunks, self.how = chunks, how

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.how in ("drop", "cut"):
            raise httpx.ReadError("connection reset by peer")


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, chunks: list[bytes], how: str) -> None:
        self.chunks, self.how = chunks, how

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.how in ("drop", "cut"):
            raise httpx.ReadError("connection reset by peer")


FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)


async def test_events_resume_from_the_last_seq_after_a_dropped_connection() -> None:
    server = EventServer([(3, "drop"), (2, "cut"), (0, "drop"), (4, "end"), (5, "end")])

    def handler(request: httpx.Request) -> httpx.Response:
        chunks, how = server.plan(request)
        return server.response(request, _AsyncBody(chunks, how))

    async with AsyncNativeClient("http://127.0.0.1:8080", token="tok", reconnect=FAST,
                                 transport=httpx.MockTransport(handler)) as native:
        seqs = []
        async for event in native.events(after=10, wait=5):
            seqs.append(event.seq)
            if len(seqs) == 14:
                break
    assert seqs == list(range(11, 25))  # every event once, in order, across four reconnections
    assert server.afters == ["10", "13", "15", "15", "19"]


async def test_events_without_after_start_from_the_servers_last_seq() -> None:
    server = EventServer([(0, "end"), (2, "end")], last_seq=40)

    def handler(request: httpx.Request) -> httpx.Response:
        chunks, how = server.plan(request)
        return server.response(request, _AsyncBody(chunks, how))

    async with AsyncNativeClient("http://127.0.0.1:8080", token="tok", reconnect=FAST,
                                 transport=httpx.MockTransport(handler)) as native:
        got = []
        async for event in native.events(types=["agent.state_changed"]):
            got.append(event)
            if len(got) == 2:
                break
    assert [e.seq for e in got] == [41, 42]
    assert server.afters == [None, "40"]  # the second connection pins "now" from the header
    assert got[0].at == datetime(2025, 1, 31, 12, 0, tzinfo=UTC) and got[0].data == {"agent_id": "1001"}


async def test_events_give_up_after_the_bounded_failures_and_report_expiry() -> None:
    server = EventServer([(0, "drop"), (0, "drop"), (0, "drop")])

    def handler(request: httpx.Request) -> httpx.Response:
        chunks, how = server.plan(request)
        return server.response(request, _AsyncBody(chunks, how))

    async with AsyncNativeClient("http://127.0.0.1:8080", token="tok", reconnect=FAST,
                                 transport=httpx.MockTransport(handler)) as native:
        with pytest.raises(httpx.ReadError):
            async for _ in native.events(after=0):
                pass
    assert len(server.afters) == 3

    def expired(request: httpx.Request) -> httpx.Response:
        return _problem("EVENTS_EXPIRED", oldest_seq=1000)

    async with AsyncNativeClient("http://127.0.0.1:8080", token="tok",
                                 transport=httpx.MockTransport(expired)) as native:
        with pytest.raises(EventsExpired) as caught:
            async for _ in native.events(after=3):
                pass
    assert caught.value.oldest_seq == 1000


def test_blocking_events_resume_too() -> None:
    server = EventServer([(2, "drop"), (2, "cut"), (3, "end")])

    def handler(request: httpx.Request) -> httpx.Response:
        chunks, how = server.plan(request)
        return server.response(request, _SyncBody(chunks, how))

    with NativeClient("http://127.0.0.1:8080", token="tok", reconnect=FAST,
                      transport=httpx.MockTransport(handler)) as native:
        seqs = []
        for event in native.events(after=0, wait=1):
            seqs.append(event.seq)
            if len(seqs) == 7:
                break
    assert seqs == [1, 2, 3, 4, 5, 6, 7]
    assert server.afters == ["0", "2", "4"]


def test_concurrency_refusal_on_the_native_api_is_bounded() -> None:
    api = Api({("GET", "/v2/agents"): _problem("CONCURRENCY_LIMIT")})
    with NativeClient("http://127.0.0.1:8080", token="tok", transport=httpx.MockTransport(api),
                      retry=RetryPolicy(attempts=3, base_delay=0.001)) as native, pytest.raises(ConcurrencyLimit):
        native.list_agents()
    assert len(api.requests) == 3
