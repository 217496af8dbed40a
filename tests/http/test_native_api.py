"""The native API over the real service; every response validated against `openapi.json` (status, media type,
schema)."""

from __future__ import annotations

import json

import httpx
import pytest
from http_world import BEARER, OP, OTHER_TOKEN, World, validate_response

from callbridge.http.auth import hash_token
from callbridge.http.native import IdempotencyStore, Problem

T = "/v2/transfers"
TID = "/v2/transfers/{transfer_id}"


async def get(client: httpx.AsyncClient, url: str, path: str, **kwargs: object) -> httpx.Response:
    response = await client.get(url, headers=BEARER, **kwargs)  # type: ignore[arg-type]
    validate_response(path, "get", response)
    return response


async def post_transfer(client: httpx.AsyncClient, body: object, headers: dict[str, str] | None = None
                        ) -> httpx.Response:
    response = await client.post(T, content=json.dumps(body).encode(), headers=BEARER | (headers or {}))
    validate_response(T, "post", response)
    return response


def problem_of(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json; charset=utf-8"
    body = response.json()
    assert body["type"] == "urn:callbridge:problem:" + body["error"].lower().replace("_", "-")
    assert body["status"] == response.status_code
    return str(body["error"])


async def test_agents_list_and_one(client: httpx.AsyncClient, world: World) -> None:
    world.login("1001")
    world.service.agent_display(OP, "1001", "hide", "dial")
    conn_id, _, _ = world.connected_call("1001")
    body = (await get(client, "/v2/agents", "/v2/agents")).json()
    assert [a["agent_id"] for a in body["items"]] == ["1001", "1002", "1003"]
    first = body["items"][0]
    assert (first["state"], first["registered"], first["conn_id"], first["display"]) == (
        "on_call", True, conn_id, {"hungup": "show", "disposition": "show", "dial": "hide"})
    only = (await get(client, "/v2/agents?state=logout", "/v2/agents")).json()
    assert [a["agent_id"] for a in only["items"]] == ["1002", "1003"]
    assert problem_of(await get(client, "/v2/agents?state=sleeping", "/v2/agents")) == "INVALID_PARAMETER"
    one = await get(client, "/v2/agents/1001", "/v2/agents/{agent_id}")
    assert one.json() == first
    world.service.on_registration_changed(OP, "1002", True)
    world.service.change_status(OP, "1002", "2")
    aux = (await get(client, "/v2/agents/1002", "/v2/agents/{agent_id}")).json()
    assert (aux["state"], aux["aux_state"]) == ("aux", "2")
    other = await get(client, "/v2/agents/2001", "/v2/agents/{agent_id}")
    missing = await get(client, "/v2/agents/9999", "/v2/agents/{agent_id}")
    assert problem_of(other) == "AGENT_NOT_FOUND" and other.content == missing.content
    assert problem_of(await get(client, "/v2/agents/10a", "/v2/agents/{agent_id}")) == "INVALID_PARAMETER"


async def test_token_problems(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/agents")
    validate_response("/v2/agents", "get", response)
    assert problem_of(response) == "TOKEN_MISSING" and response.headers["www-authenticate"] == "Bearer"
    response = await client.get("/v2/agents", headers={"authorization": "Bearer nope"})
    validate_response("/v2/agents", "get", response)
    assert problem_of(response) == "INVALID_TOKEN"
    response = await client.get("/v2/agents", headers={"authorization": f"Bearer {OTHER_TOKEN}"})
    assert [a["agent_id"] for a in response.json()["items"]] == ["2001"]


async def test_blind_transfer_resource_through_its_life(client: httpx.AsyncClient, world: World) -> None:
    world.login("1001")
    conn_id, _, _ = world.connected_call("1001")
    world.login("1002")
    created = await post_transfer(client, {"agent_id": "1001", "target": "1002", "timeout": 20})
    assert created.status_code == 201
    body = created.json()
    assert created.headers["location"] == f"/v2/transfers/{body['id']}"
    assert (body["conn_id"], body["kind"], body["target_type"], body["state"], body["timeout"], body["outcome"]) == (
        conn_id, "blind", "agent", "created", 20, None)
    leg = world.signalling.last_originate("1002").leg_id
    world.service.on_leg_ringing(leg)
    ringing = (await get(client, created.headers["location"], TID)).json()
    assert ringing["state"] == "ringing" and ringing["ringing_at"] is not None
    world.service.on_leg_answered(leg)
    done = (await get(client, created.headers["location"], TID)).json()
    assert (done["state"], done["outcome"], done["failure"], done["sip_cause"]) == (
        "completed", "connected_to_target", None, None)
    assert done["answered_at"] is not None and done["ended_at"] is not None
    other = await client.get(created.headers["location"], headers={"authorization": f"Bearer {OTHER_TOKEN}"})
    validate_response(TID, "get", other)
    assert problem_of(other) == "TRANSFER_NOT_FOUND"


async def test_failed_transfer_to_a_number_records_busy_and_the_customer_back(client: httpx.AsyncClient,
                                                                              world: World) -> None:
    world.login("1001")
    world.connected_call("1001")
    body = (await post_transfer(client, {"agent_id": "1001", "target": "+573001112233"})).json()
    assert body["target_type"] == "number"
    world.service.on_leg_failed(world.signalling.last_originate("+573001112233").leg_id, 486)
    failed = (await get(client, f"/v2/transfers/{body['id']}", TID)).json()
    assert (failed["state"], failed["outcome"], failed["failure"], failed["sip_cause"]) == (
        "failed", "back_with_agent", "busy", 486)


async def test_attended_complete_and_cancel(client: httpx.AsyncClient, world: World) -> None:
    world.login("1001")
    world.connected_call("1001")
    world.login("1002", "1003")
    first = (await post_transfer(client, {"agent_id": "1001", "target": "1002", "kind": "attended"})).json()
    url = f"/v2/transfers/{first['id']}/complete"
    early = await client.put(url, headers=BEARER)
    validate_response(TID + "/complete", "put", early)
    assert problem_of(early) == "TRANSFER_NOT_ANSWERED"
    world.service.on_leg_answered(world.signalling.last_originate("1002").leg_id)
    answered = (await get(client, f"/v2/transfers/{first['id']}", TID)).json()
    assert answered["state"] == "answered"
    done = await client.put(url, headers=BEARER)
    validate_response(TID + "/complete", "put", done)
    assert (done.json()["state"], done.json()["outcome"]) == ("completed", "connected_to_target")
    again = await client.put(url, headers=BEARER)
    validate_response(TID + "/complete", "put", again)
    assert problem_of(again) == "TRANSFER_FINISHED"
    # 1002 now talks with the customer; an attended transfer to 1003, cancelled
    second = (await post_transfer(client, {"agent_id": "1002", "target": "1003", "kind": "attended"})).json()
    cancelled = await client.delete(f"/v2/transfers/{second['id']}", headers=BEARER)
    validate_response(TID, "delete", cancelled)
    assert (cancelled.json()["state"], cancelled.json()["outcome"]) == ("cancelled", "back_with_agent")
    blind = (await post_transfer(client, {"agent_id": "1002", "target": "3001234567"})).json()
    for method in ("put", "delete"):
        path = TID + "/complete" if method == "put" else TID
        url = f"/v2/transfers/{blind['id']}" + ("/complete" if method == "put" else "")
        response = await client.request(method.upper(), url, headers=BEARER)
        validate_response(path, method, response)
        assert problem_of(response) == "NOT_ATTENDED"


@pytest.mark.parametrize(("body", "error", "parameter"), [
    ({"target": "1002"}, "MISSING_PARAMETERS", None),
    ({"agent_id": "1001", "target": ""}, "MISSING_PARAMETERS", None),
    ({"agent_id": "1001", "target": "sip:1002@192.0.2.1"}, "INVALID_PARAMETER", "target"),
    ({"agent_id": "1001", "target": "1002", "kind": "consult"}, "INVALID_PARAMETER", "kind"),
    ({"agent_id": "1001", "target": "1002", "timeout": 0}, "INVALID_PARAMETER", "timeout"),
    ({"agent_id": "1001", "target": "1002", "timeout": "30"}, "INVALID_PARAMETER", "timeout"),
    ({"agent_id": 1001, "target": "1002"}, "INVALID_PARAMETER", "agent_id"),
    ({"agent_id": "1001", "target": "12"}, "NUMBER_NOT_ALLOWED", "target"),
    ({"agent_id": "9999", "target": "1002"}, "AGENT_NOT_FOUND", None),
    ({"agent_id": "1002", "target": "1003"}, "AGENT_NOT_LOGGED_IN", None),
    ({"agent_id": "1003", "target": "1002"}, "NO_ACTIVE_CALL", None),
    ({"agent_id": "1001", "target": "1003"}, "TARGET_NOT_AVAILABLE", None),
])
async def test_transfer_problems(client: httpx.AsyncClient, world: World, body: dict[str, object], error: str,
                                 parameter: str | None) -> None:
    world.login("1001")
    world.connected_call("1001")
    world.service.on_registration_changed(OP, "1003", True)
    world.service.change_status(OP, "1003", "2")
    before = world.footprint()
    response = await post_transfer(client, body)
    assert problem_of(response) == error
    assert response.json().get("parameter") == parameter
    assert world.footprint() == before


async def test_transfer_in_progress_names_the_running_transfer(client: httpx.AsyncClient, world: World) -> None:
    world.login("1001")
    world.connected_call("1001")
    first = (await post_transfer(client, {"agent_id": "1001", "target": "3001234567"})).json()
    second = await post_transfer(client, {"agent_id": "1001", "target": "3001234568"})
    assert problem_of(second) == "TRANSFER_IN_PROGRESS" and second.json()["transfer_id"] == first["id"]
    world.signalling.available = False  # 503 is the service's last check: the running transfer wins
    body_503 = await client.post(T, json={"agent_id": "1001", "target": "3001234567"}, headers=BEARER)
    assert problem_of(body_503) == "TRANSFER_IN_PROGRESS"


async def test_503_when_signalling_cannot_act(client: httpx.AsyncClient, world: World) -> None:
    world.login("1001")
    world.connected_call("1001")
    world.signalling.available = False
    response = await post_transfer(client, {"agent_id": "1001", "target": "3001234567"})
    assert problem_of(response) == "CALL_CONTROL_UNAVAILABLE"


async def test_idempotency_key_replays_the_first_answer_and_starts_nothing(client: httpx.AsyncClient,
                                                                           world: World) -> None:
    world.login("1001")
    key = {"idempotency-key": "7f1c2b0e-retry"}
    # an error is not stored: the retry after it is a new attempt
    refused = await post_transfer(client, {"agent_id": "1001", "target": "3001234567"}, key)
    assert problem_of(refused) == "NO_ACTIVE_CALL"
    world.connected_call("1001")
    first = await post_transfer(client, {"agent_id": "1001", "target": "3001234567"}, key)
    assert first.status_code == 201 and "idempotency-replayed" not in first.headers
    started = len(world.signalling.originates())
    replay = await client.post(T, content=b'{ "target": "3001234567",  "agent_id": "1001" }',
                               headers=BEARER | key)
    validate_response(T, "post", replay)
    assert (replay.status_code, replay.content, replay.headers["location"], replay.headers["idempotency-replayed"]) \
        == (201, first.content, first.headers["location"], "true")
    assert len(world.signalling.originates()) == started
    other_body = await post_transfer(client, {"agent_id": "1001", "target": "3009999999"}, key)
    assert problem_of(other_body) == "IDEMPOTENCY_KEY_REUSED" and other_body.status_code == 422
    # another token's identical key is another request
    other_token = await client.post(T, json={"agent_id": "2001", "target": "3001234567"},
                                    headers={"authorization": f"Bearer {OTHER_TOKEN}"} | key)
    assert problem_of(other_token) == "AGENT_NOT_LOGGED_IN"


async def test_idempotency_key_in_use(client: httpx.AsyncClient, world: World) -> None:
    native = world.app.state.native
    body = b'{"agent_id":"1001","target":"3001234567"}'
    from callbridge.http.native import _fingerprint
    native.idempotency.begin((hash_token("tok-0042-main"), "busy-key"), _fingerprint(body))
    response = await client.post(T, content=body, headers=BEARER | {"idempotency-key": "busy-key"})
    validate_response(T, "post", response)
    assert problem_of(response) == "IDEMPOTENCY_KEY_IN_USE"


def test_idempotency_store_expires_after_its_ttl() -> None:
    now = [1000.0]
    store = IdempotencyStore(ttl=10, clock=lambda: now[0])
    assert store.begin(("t", "k"), "f") is None
    store.finish(("t", "k"), (201, b"{}", {}))
    assert store.begin(("t", "k"), "f") == (201, b"{}", {})
    with pytest.raises(Problem):
        store.begin(("t", "k"), "g")
    now[0] += 11
    assert store.begin(("t", "k"), "g") is None


async def test_calls_and_their_history(client: httpx.AsyncClient, world: World) -> None:
    world.login("1001")
    conn_id, customer, _ = world.connected_call("1001", number="3005550000")
    world.service.on_registration_changed(OP, "1003", True)
    await client.post("/api/v2/agentbox.php", params={"api": "hold", "agent_id": "1001"},
                      headers={"wolkvox-token": "tok-0042-main"})
    active = (await get(client, "/v2/calls", "/v2/calls")).json()["items"]
    assert [(c["conn_id"], c["state"], c["direction"], c["agent_id"]) for c in active] == [
        (conn_id, "held", "inbound", "1001")]
    call = (await get(client, f"/v2/calls/{conn_id}", "/v2/calls/{conn_id}")).json()
    assert [(leg["role"], leg["state"]) for leg in call["legs"]] == [("customer", "held"), ("agent", "up")]
    assert [e["type"] for e in call["history"]] == ["call.offered", "call.answered", "call.held"]
    seqs = [e["seq"] for e in call["history"]]
    assert seqs == sorted(seqs)
    world.service.on_leg_ended(customer)
    assert (await get(client, "/v2/calls", "/v2/calls")).json()["items"] == []
    ended = (await get(client, "/v2/calls?state=ended&agent_id=1001&limit=5", "/v2/calls")).json()["items"]
    assert [(c["conn_id"], c["state"]) for c in ended] == [(conn_id, "ended")]
    assert len((await get(client, "/v2/calls?state=all", "/v2/calls")).json()["items"]) == 1
    assert (await get(client, "/v2/calls?state=ended&agent_id=1002", "/v2/calls")).json()["items"] == []
    for query in ("state=gone", "limit=0", "limit=1001", "agent_id=x"):
        assert problem_of(await get(client, f"/v2/calls?{query}", "/v2/calls")) == "INVALID_PARAMETER"
    final = (await get(client, f"/v2/calls/{conn_id}", "/v2/calls/{conn_id}")).json()
    assert final["history"][-1]["type"] == "call.ended"
    assert final["history"][-1]["data"]["ended_by"] == "customer"
    foreign = await client.get(f"/v2/calls/{conn_id}", headers={"authorization": f"Bearer {OTHER_TOKEN}"})
    validate_response("/v2/calls/{conn_id}", "get", foreign)
    assert problem_of(foreign) == "CALL_NOT_FOUND"
    assert problem_of(await get(client, "/v2/calls/c%21x", "/v2/calls/{conn_id}")) == "CALL_NOT_FOUND"
