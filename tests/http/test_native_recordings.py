"""The recording endpoints of the native API over the real service (issue #13): start, stop, pause and resume of a
live call by policy, their errors and order, the WAV's reads and listing without a database, and byte ranges;
every response validated against `openapi.json`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from http_world import BEARER, OTHER_TOKEN, World, validate_response

from callbridge.http.recordings import byte_range

R = "/v2/calls/{conn_id}/recording"


async def ask(client: httpx.AsyncClient, method: str, conn_id: str, body: Any = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
    content = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    response = await client.request(method, R.format(conn_id=conn_id), content=content,
                                    headers=headers or BEARER)
    validate_response(R, method.lower(), response)
    return response


def problem(response: httpx.Response) -> tuple[int, str, str | None]:
    body = response.json()
    return response.status_code, body["error"], body.get("detail")


def state(conn_id: str, value: str, policy: str = "on_demand") -> dict[str, str]:
    return {"conn_id": conn_id, "policy": policy, "state": value}


@pytest.fixture
def on_demand() -> World:
    return World(recording="on_demand")


@pytest.fixture
async def client_of(on_demand: World) -> Any:
    transport = httpx.ASGITransport(app=on_demand.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://callbridge.test") as c:
        yield c


async def test_on_demand_start_pause_resume_stop(client_of: httpx.AsyncClient, on_demand: World) -> None:
    on_demand.login("1001")
    conn_id, _, _ = on_demand.connected_call()
    started = await ask(client_of, "POST", conn_id)
    assert (started.status_code, started.json()) == (200, state(conn_id, "recording"))
    paused = await ask(client_of, "PATCH", conn_id, {"paused": True})
    assert (paused.status_code, paused.json()) == (200, state(conn_id, "paused"))
    resumed = await ask(client_of, "PATCH", conn_id, {"paused": False})
    assert resumed.json() == state(conn_id, "recording")
    stopped = await ask(client_of, "DELETE", conn_id)
    assert stopped.json() == state(conn_id, "stopped")
    assert problem(await ask(client_of, "DELETE", conn_id)) == (409, "RECORDING_NOT_STARTED",
                                                                "the call is not being recorded")
    assert problem(await ask(client_of, "PATCH", conn_id, {"paused": True}))[:2] == (409, "RECORDING_NOT_STARTED")
    assert on_demand.signalling.of("record") == [("record", conn_id, True), ("record", conn_id, False),
                                                 ("record", conn_id, True), ("record", conn_id, False)]


async def test_the_body_of_a_pause_is_checked_first(client_of: httpx.AsyncClient, on_demand: World) -> None:
    on_demand.login("1001")
    conn_id, _, _ = on_demand.connected_call()
    assert problem(await ask(client_of, "PATCH", conn_id, b""))[:2] == (400, "MISSING_PARAMETERS")
    assert problem(await ask(client_of, "PATCH", conn_id, {"pause": True}))[:2] == (400, "MISSING_PARAMETERS")
    wrong = await ask(client_of, "PATCH", conn_id, {"paused": "yes"})
    assert (wrong.status_code, wrong.json()["error"], wrong.json()["parameter"]) == (
        400, "INVALID_PARAMETER", "paused")
    assert (await ask(client_of, "PATCH", conn_id, b"[1]")).json()["parameter"] == "body"
    assert problem(await ask(client_of, "PATCH", "nosuchcall", {"paused": True}))[:2] == (404, "CALL_NOT_FOUND")
    assert on_demand.signalling.of("record") == []


async def test_unknown_other_operation_and_ended_calls(client_of: httpx.AsyncClient, on_demand: World) -> None:
    on_demand.login("1001")
    conn_id, customer, _ = on_demand.connected_call()
    assert problem(await ask(client_of, "POST", "nosuchcall"))[:2] == (404, "CALL_NOT_FOUND")
    other = {"authorization": f"Bearer {OTHER_TOKEN}"}
    assert problem(await ask(client_of, "POST", conn_id, headers=other))[:2] == (404, "CALL_NOT_FOUND")
    on_demand.service.on_leg_ended(customer)
    assert problem(await ask(client_of, "POST", conn_id)) == (409, "CALL_ENDED", None)
    assert problem(await ask(client_of, "DELETE", conn_id, headers=other))[:2] == (404, "CALL_NOT_FOUND")
    assert on_demand.signalling.of("record") == []


async def test_a_call_whose_media_is_not_on_a_relay_cannot_be_recorded(client_of: httpx.AsyncClient,
                                                                      on_demand: World) -> None:
    on_demand.login("1001")
    conn_id, _, _ = on_demand.connected_call()
    on_demand.signalling.recordable = False
    assert problem(await ask(client_of, "POST", conn_id)) == (
        409, "RECORDING_UNAVAILABLE",
        "the call cannot be recorded: it is not answered yet, or its media does not go through a relay")


@pytest.mark.parametrize(("policy", "method", "body", "detail"), [
    ("never", "POST", None, "recording is off for this call (policy never): it cannot be started"),
    ("never", "PATCH", {"paused": True}, "recording is off for this call (policy never): it cannot be paused"),
    ("always", "POST", None, "this call is recorded from its answer to its end (policy always): it cannot be "
                             "started; pause it instead"),
    ("always", "DELETE", None, "this call is recorded from its answer to its end (policy always): it cannot be "
                               "stopped; pause it instead"),
])
async def test_the_policy_refuses_with_409_and_says_why(policy: str, method: str, body: Any, detail: str) -> None:
    world = World(recording=policy)
    world.login("1001")
    conn_id, _, _ = world.connected_call()
    before = world.signalling.of("record")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://t") as client:
        assert problem(await ask(client, method, conn_id, body)) == (409, "RECORDING_NOT_ALLOWED", detail)
        if policy == "always":  # a pause is what `always` allows
            paused = await ask(client, "PATCH", conn_id, {"paused": True})
            assert paused.json() == state(conn_id, "paused", "always")
    assert before == ([("record", conn_id, True)] if policy == "always" else [])


async def test_without_a_database_a_live_call_has_no_recording_yet(client_of: httpx.AsyncClient,
                                                                  on_demand: World) -> None:
    on_demand.login("1001")
    conn_id, _, _ = on_demand.connected_call()
    assert problem(await ask(client_of, "GET", conn_id))[:2] == (404, "RECORDING_NOT_FOUND")
    assert problem(await ask(client_of, "GET", "nosuchcall"))[:2] == (404, "CALL_NOT_FOUND")
    listed = await client_of.get("/v2/recordings", headers=BEARER)
    validate_response("/v2/recordings", "get", listed)
    assert listed.json() == {"items": [], "next_cursor": None}
    bad = await client_of.get("/v2/recordings", params={"cursor": "nonsense"}, headers=BEARER)
    validate_response("/v2/recordings", "get", bad)
    assert (bad.status_code, bad.json()["parameter"]) == (400, "cursor")


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-9", (0, 9)), ("bytes=10-", (10, 99)), ("bytes=90-200", (90, 99)), ("bytes=-10", (90, 99)),
    ("bytes=-500", (0, 99)), ("bytes=99-99", (99, 99)),
    ("bytes=100-", None), ("bytes=5-4", None), ("bytes=-0", None), ("bytes=0-1,3-4", None), ("items=0-1", None),
    ("bytes=", None), ("bytes=a-b", None),
])
def test_byte_ranges_of_a_100_byte_file(header: str, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 100) == expected
