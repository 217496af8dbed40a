"""`/v2/calls/{conn_id}/monitor` over the real service and fakes (docs/api.md): a supervisor's extension is rung for
a live call, listens once it answers, and stops on DELETE, its phone hanging up, or the call ending; the call's
history and the events `call.monitor_started`/`call.monitor_ended` say who listened and when; each error has its
stable id, is checked in the documented order and changes nothing. The listening itself, through a real rtpengine,
is tests/integration/test_calls_monitor.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from http_world import BEARER, OTHER_TOKEN, World, validate_response

from callbridge.callcontrol.errors import CallControlError
from callbridge.callcontrol.ports import OriginateRequest

OP = "0042"
M = "/v2/calls/{conn_id}/monitor"


async def ask(client: httpx.AsyncClient, method: str, conn_id: str, body: Any = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
    content = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    response = await client.request(method, M.format(conn_id=conn_id), content=content, headers=headers or BEARER)
    validate_response(M, method.lower(), response)
    return response


def problem(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def client(world: World) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://cb.test") as c:
        yield c


def monitors(world: World) -> list[OriginateRequest]:
    return [r[1] for r in world.signalling.of("monitor")]


def wire(world: World, *types: str) -> list[dict[str, Any]]:
    return [e.data for e in world.events.since(OP, 0) if e.type in types]


async def test_listen_answered_then_stopped(client: httpx.AsyncClient, world: World) -> None:
    world.login("1001")
    world.service.on_registration_changed(OP, "1003", True)  # the supervisor's phone: registered, not ready
    conn_id, _, _ = world.connected_call()
    state = world.service.get_agent(OP, "1003").state
    started = await ask(client, "POST", conn_id, {"extension": "1003"})
    body = started.json()
    assert started.status_code == 201
    assert (body["conn_id"], body["supervisor"], body["state"], body["started_at"], body["ended_at"],
            body["reason"]) == (conn_id, "1003", "ringing", None, None, None)
    [request] = monitors(world)
    assert (request.conn_id, request.leg_id, request.kind, request.destination) == (
        conn_id, body["monitor_id"], "agent", "1003")
    assert world.service.get_agent(OP, "1003").state == state  # listening is not an agent's call
    world.service.on_leg_answered(request.leg_id)
    listening = (await ask(client, "GET", conn_id)).json()
    assert listening["state"] == "listening" and listening["started_at"] is not None
    [event] = wire(world, "call.monitor_started")
    assert event == {"conn_id": conn_id, "monitor_id": request.leg_id, "supervisor": "1003",
                     "started_at": listening["started_at"]}
    world.service.on_registration_changed(OP, "1002", True)
    assert problem(await ask(client, "POST", conn_id, {"extension": "1002"})) == (409, "MONITOR_IN_PROGRESS")

    stopped = await ask(client, "DELETE", conn_id)
    assert (stopped.status_code, stopped.json()["state"], stopped.json()["reason"]) == (200, "ended", "stopped")
    assert ("release", request.leg_id, None, None) in world.signalling.requests
    [ended] = wire(world, "call.monitor_ended")
    assert ended == {"conn_id": conn_id, "monitor_id": request.leg_id, "supervisor": "1003",
                     "started_at": listening["started_at"], "ended_at": stopped.json()["ended_at"],
                     "reason": "stopped"}
    history = [(what, detail) for _, what, detail in world.service.get_call(OP, conn_id).history]
    assert [h for h in history if h[0].startswith("monitor")] == [
        ("monitor_requested", "1003"), ("monitor_started", "1003"), ("monitor_ended", "1003 stopped")]
    assert problem(await ask(client, "DELETE", conn_id)) == (409, "MONITOR_NOT_STARTED")
    assert world.service.get_call(OP, conn_id).state == "connected"  # the parties talk on
    record = (await client.get(f"/v2/calls/{conn_id}", headers=BEARER)).json()  # the call's record says who and when
    assert [(e["type"], e["data"]) for e in record["history"] if e["type"].startswith("call.monitor")] == [
        ("call.monitor_started", event), ("call.monitor_ended", ended)]


@pytest.mark.parametrize(("how", "reason"), [("hangup", "supervisor_hangup"), ("fail", "no_answer"),
                                             ("call_end", "call_ended")])
async def test_the_listening_ends_with_the_phone_or_the_call(client: httpx.AsyncClient, world: World, how: str,
                                                             reason: str) -> None:
    world.login("1001")
    world.service.on_registration_changed(OP, "1003", True)
    conn_id, customer, _ = world.connected_call()
    await ask(client, "POST", conn_id, {"extension": "1003"})
    [request] = monitors(world)
    if how == "hangup":
        world.service.on_leg_answered(request.leg_id)
        world.service.on_leg_ended(request.leg_id)
    elif how == "fail":
        world.service.on_leg_failed(request.leg_id, 486)
    else:
        world.service.on_leg_answered(request.leg_id)
        world.service.on_leg_ended(customer)
        assert ("release", request.leg_id, None, None) in world.signalling.requests
    [ended] = wire(world, "call.monitor_ended")
    assert (ended["reason"], ended["started_at"] is None) == (reason, how == "fail")
    if how != "call_end":
        assert world.service.get_call(OP, conn_id).state == "connected"
        assert problem(await ask(client, "GET", conn_id)) == (409, "MONITOR_NOT_STARTED")


async def test_errors_in_order_each_changing_nothing(client: httpx.AsyncClient, world: World) -> None:
    world.login("1001")
    conn_id, customer, _ = world.connected_call()
    before = world.footprint()
    other = {"authorization": f"Bearer {OTHER_TOKEN}"}
    cases: list[tuple[str, Any, dict[str, str] | None, tuple[int, str]]] = [
        ("nosuchcall", {"extension": "1003"}, None, (404, "CALL_NOT_FOUND")),
        (conn_id, {"extension": "1003"}, other, (404, "CALL_NOT_FOUND")),  # another operation's call
        (conn_id, b"", None, (400, "MISSING_PARAMETERS")),
        (conn_id, {"ext": "1003"}, None, (400, "MISSING_PARAMETERS")),
        (conn_id, {"extension": 1003}, None, (400, "INVALID_PARAMETER")),
        (conn_id, {"extension": "9999"}, None, (404, "EXTENSION_NOT_FOUND")),
        (conn_id, {"extension": "2001"}, None, (404, "EXTENSION_NOT_FOUND")),  # another operation's agent
        (conn_id, {"extension": "1003"}, None, (409, "PHONE_NOT_REGISTERED")),
    ]
    for target, body, headers, expected in cases:
        assert problem(await ask(client, "POST", target, body, headers)) == expected, (target, body)
    world.service.on_registration_changed(OP, "1003", True)
    world.signalling.anchored = False
    before = world.footprint()
    assert problem(await ask(client, "POST", conn_id, {"extension": "1003"})) == (409, "CALL_NOT_ANCHORED")
    assert world.footprint()[1:] == before[1:]  # the adapter was asked (requests + 1), nothing else moved
    world.signalling.anchored = True
    queued = world.service.on_inbound_call(OP, "5550100", "cust-q", "3007654321")  # nobody free: it waits
    assert problem(await ask(client, "POST", queued, {"extension": "1003"})) == (409, "CALL_NOT_ANSWERED")
    world.service.on_leg_ended(customer)
    assert problem(await ask(client, "POST", conn_id, {"extension": "1003"})) == (409, "CALL_ENDED")
    assert problem(await ask(client, "DELETE", conn_id)) == (409, "CALL_ENDED")
    assert wire(world, "call.monitor_started", "call.monitor_ended") == []
    assert [r for r in monitors(world)] == [monitors(world)[0]]  # only the CALL_NOT_ANCHORED one reached it


async def test_a_board_page_listening_is_the_calls_one_listener_named_by_username(client: httpx.AsyncClient,
                                                                                  world: World) -> None:
    """`start_page_monitor` (the board's "Listen here"): no extension, the adapter's `listen_in_page`; the native API
    shows it (its `supervisor` the username, valid for the OpenAPI document), one listener per call either way."""
    world.login("1001")
    conn_id, _, _ = world.connected_call()
    queued = world.service.on_inbound_call(OP, "5550100", "cust-q", "3007654321")
    with pytest.raises(CallControlError) as refused:
        world.service.start_page_monitor(OP, queued, "maria")
    assert refused.value.error_id == "CALL_NOT_ANSWERED"
    world.signalling.anchored = False
    before = world.footprint()
    with pytest.raises(CallControlError) as refused:
        world.service.start_page_monitor(OP, conn_id, "maria")
    assert refused.value.error_id == "CALL_NOT_ANCHORED" and world.footprint()[1:] == before[1:]
    world.signalling.anchored = True
    with pytest.raises(CallControlError) as refused:
        world.service.start_page_monitor("0077", conn_id, "otto")  # another operation's call
    assert refused.value.error_id == "CALL_NOT_FOUND"

    view = world.service.start_page_monitor(OP, conn_id, "maria")
    assert (view.on, view.supervisor, view.state) == ("page", "maria", "ringing")
    assert world.signalling.of("listen_in_page")[-1] == ("listen_in_page", conn_id, view.monitor_id)
    assert monitors(world) == []  # no phone rung
    state = (await ask(client, "GET", conn_id)).json()
    assert (state["supervisor"], state["state"], state["monitor_id"]) == ("maria", "ringing", view.monitor_id)
    world.service.on_registration_changed(OP, "1003", True)
    assert problem(await ask(client, "POST", conn_id, {"extension": "1003"})) == (409, "MONITOR_IN_PROGRESS")
    world.service.on_leg_answered(view.monitor_id)  # the page's answer reached the relay
    [started] = wire(world, "call.monitor_started")
    assert (started["supervisor"], started["monitor_id"]) == ("maria", view.monitor_id)
    stopped = await ask(client, "DELETE", conn_id)
    assert (stopped.json()["supervisor"], stopped.json()["reason"]) == ("maria", "stopped")
    assert ("release", view.monitor_id, None, None) in world.signalling.requests
    history = [(what, detail) for _, what, detail in world.service.get_call(OP, conn_id).history]
    assert [h for h in history if h[0].startswith("monitor")] == [
        ("monitor_requested", "maria"), ("monitor_started", "maria"), ("monitor_ended", "maria stopped")]
    assert world.service.get_call(OP, conn_id).state == "connected"
