"""`POST /api/v2/agentbox.php` over the real service: every row of the contract's error tables byte for byte, the
order of precedence, each verb's success envelope, the request's shapes (query, form, GET), and bad input that
must never reach the service."""

from __future__ import annotations

import httpx
import pytest
from http_world import (
    ENDPOINT,
    HEADERS,
    OP,
    OTHER_OP,
    OTHER_TOKEN,
    REVOKED_TOKEN,
    TOKEN,
    World,
    assert_envelope,
    box,
)

from callbridge.http import contract
from callbridge.http.app import HttpSettings

B = "BAD REQUEST"
C = "CONFLICT"
F = "FORBIDDEN"


def row(response: httpx.Response, key: str, name: str | None = None) -> None:
    r = contract.invalid_parameter(name) if name else contract.error(key)
    assert_envelope(response, r.status, r.error, r.msg)


# --- request shape ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_any_method_but_post_answers_405_use_post_before_anything_else(
        client: httpx.AsyncClient, world: World, method: str) -> None:
    before = world.footprint()
    response = await client.request(method, ENDPOINT, params={"api": "change_status", "agent_id": "1001",
                                                              "status": "ready"})  # no token at all
    assert_envelope(response, 405, "METHOD NOT ALLOWED", "USE POST")
    assert response.headers["allow"] == "POST"
    assert world.footprint() == before


async def test_form_body_is_accepted_and_the_query_wins(client: httpx.AsyncClient, world: World) -> None:
    world.service.on_registration_changed(OP, "1001", True)
    form = {"api": "change_status", "agent_id": "1001", "status": "ready"}
    response = await client.post(ENDPOINT, data=form, headers=HEADERS)
    assert_envelope(response, 200, None, "Agent status has been changed to ready")
    # status=2 in the query wins over status=logout in the form
    response = await client.post(ENDPOINT, params={"status": "2"}, data=form | {"status": "logout"},
                                 headers=HEADERS)
    assert_envelope(response, 200, None, "Agent status has been changed to 2")
    assert world.service.get_agent(OP, "1001").state == "aux:2"


async def test_unknown_parameters_are_ignored_and_an_empty_json_body_is_fine(
        client: httpx.AsyncClient, world: World) -> None:
    world.service.on_registration_changed(OP, "1001", True)
    response = await client.post(ENDPOINT, params={"api": "change_status", "agent_id": "1001", "status": "ready",
                                                   "foo": "bar", "customer_phone": "not a number"},
                                 headers=HEADERS | {"content-type": "application/json"})
    assert_envelope(response, 200, None, "Agent status has been changed to ready")


# --- the common errors, each reachable ----------------------------------------------------------------------

async def test_401_without_token_or_with_an_empty_one(client: httpx.AsyncClient) -> None:
    row(await box(client, "hang", headers={"wolkvox_server": OP}, agent_id="1001"), "TOKEN_MISSING")
    row(await box(client, "hang", headers={"wolkvox-token": "  "}, agent_id="1001"), "TOKEN_MISSING")


@pytest.mark.parametrize("headers", [
    {"wolkvox-token": "no-such-token"},
    {"wolkvox-token": REVOKED_TOKEN},
    {"wolkvox-token": TOKEN, "wolkvox_server": OTHER_OP},
    {"wolkvox-token": TOKEN, "wolkvox_server": "wv0077.wolkvox.com"},
])
async def test_403_validate_token(client: httpx.AsyncClient, world: World, headers: dict[str, str]) -> None:
    before = world.footprint()
    row(await box(client, "change_status", headers=headers, agent_id="1001", status="ready"), "INVALID_TOKEN")
    assert world.footprint() == before


async def test_the_cloud_host_name_and_no_server_header_are_accepted(client: httpx.AsyncClient,
                                                                     world: World) -> None:
    for headers in ({"wolkvox-token": TOKEN}, {"wolkvox-token": TOKEN, "wolkvox_server": "wv0042.wolkvox.com"}):
        assert_envelope(await box(client, "agent_display", headers=headers, agent_id="1001", display="hide",
                                  button="dial"), 200, None, "Display has been updated")


@pytest.mark.parametrize("api", [None, "", "transfers", "HANG", "../hang"])
async def test_400_unknown_api(client: httpx.AsyncClient, api: str | None) -> None:
    row(await box(client, api, agent_id="1001"), "UNKNOWN_API")


@pytest.mark.parametrize("verb", sorted(contract.VERBS))
async def test_400_missing_each_required_parameter(client: httpx.AsyncClient, world: World, verb: str) -> None:
    good = {"agent_id": "1001", "customer_phone": "3001234567", "status": "ready", "cod_act": "10",
            "cod_act_2": "20", "tones": "12#", "display": "show", "button": "dial", "date": "20990101120000",
            "type_recall": "manual"}
    before = world.footprint()
    for name in contract.VERBS[verb].required:
        params = {p: good[p] for p in contract.VERBS[verb].required if p != name}
        row(await box(client, verb, **params), "MISSING_PARAMETERS")
        row(await box(client, verb, **(params | {name: ""})), "MISSING_PARAMETERS")
    assert world.footprint() == before


@pytest.mark.parametrize(("verb", "params", "bad"), [
    ("hang", {"agent_id": "10a1"}, "agent_id"),
    ("hang", {"agent_id": "1001\r\n"}, "agent_id"),
    ("transfer", {"agent_id": "1001", "customer_phone": "30012abc"}, "customer_phone"),
    ("transfer", {"agent_id": "1001", "customer_phone": "3001234567\r\nVia: SIP/2.0/UDP 192.0.2.1"},
     "customer_phone"),
    ("transfer", {"agent_id": "1001", "customer_phone": "sip:1002@192.0.2.66"}, "customer_phone"),
    ("dial", {"agent_id": "1001", "customer_phone": "3001234567;transport=tcp"}, "customer_phone"),
    ("dial", {"agent_id": "1001", "customer_phone": "3001234567", "customer_name": "x" * 129}, "customer_name"),
    ("aux_call", {"agent_id": "1001", "customer_phone": "+57 300"}, "customer_phone"),
    ("dtmf", {"agent_id": "1001", "tones": "12E"}, "tones"),
    ("recall", {"agent_id": "1001", "customer_phone": "3001234567", "date": "2099-01-01",
                "type_recall": "auto"}, "date"),
    ("recall", {"agent_id": "1001", "customer_phone": "3001234567", "date": "20990101120000",
                "type_recall": "later"}, "type_recall"),
    ("agent_display", {"agent_id": "1001", "display": "blink", "button": "dial"}, "display"),
    ("agent_display", {"agent_id": "1001", "display": "show", "button": "transfer"}, "button"),
    ("change_status", {"agent_id": "1001", "status": "lunch"}, "status"),
    ("type", {"agent_id": "1001", "cod_act": "99", "cod_act_2": "20"}, "cod_act"),
    ("type", {"agent_id": "1001", "cod_act": "10", "cod_act_2": "99"}, "cod_act_2"),
    ("recall", {"agent_id": "1001", "customer_phone": "3001234567", "date": "20991399120000",
                "type_recall": "auto"}, "date"),
])
async def test_400_invalid_parameter_changes_nothing_and_sends_no_sip(
        client: httpx.AsyncClient, world: World, verb: str, params: dict[str, str], bad: str) -> None:
    world.login("1001", "1002")
    world.connected_call("1001")
    before = world.footprint()
    row(await box(client, verb, **params), "INVALID_PARAMETER", bad)
    assert world.footprint() == before


async def test_percent_encoded_crlf_in_customer_phone_never_reaches_the_service(
        client: httpx.AsyncClient, world: World) -> None:
    world.login("1001", "1002")
    world.connected_call("1001")
    before = world.footprint()
    url = f"{ENDPOINT}?api=transfer&agent_id=1001&customer_phone=3001234567%0d%0aContact:%20%3Csip:x@192.0.2.9%3E"
    row(await client.post(url, headers=HEADERS), "INVALID_PARAMETER", "customer_phone")
    assert world.footprint() == before
    assert not any("192.0.2" in repr(r) for r in world.signalling.requests)


async def test_404_409_503_rows(client: httpx.AsyncClient, world: World) -> None:
    row(await box(client, "hang", agent_id="9999"), "AGENT_NOT_FOUND")
    row(await box(client, "hold", agent_id="1001"), "AGENT_NOT_LOGGED_IN")
    row(await box(client, "change_status", agent_id="1001", status="ready"), "PHONE_NOT_REGISTERED")
    world.login("1001", "1003")
    for verb in ("hang", "hold", "mute"):
        row(await box(client, verb, agent_id="1001"), "NO_ACTIVE_CALL")
    row(await box(client, "transfer", agent_id="1001", customer_phone="1002"), "NO_ACTIVE_CALL")
    row(await box(client, "dtmf", agent_id="1001", tones="1"), "NO_ACTIVE_CALL")
    row(await box(client, "hang_type_ready", agent_id="1001", cod_act="10"), "NO_ACTIVE_CALL")
    row(await box(client, "type", agent_id="1001", cod_act="10", cod_act_2="20"), "NO_CALL_TO_TYPE")
    row(await box(client, "aux_call", agent_id="1001", customer_phone="3001234567"), "NO_RECENT_CALL")
    world.service.change_status(OP, "1003", "2")
    world.connected_call("1001")
    row(await box(client, "dial", agent_id="1001", customer_phone="3001234567"), "ALREADY_ON_CALL")
    row(await box(client, "transfer", agent_id="1001", customer_phone="1002"), "TARGET_NOT_AVAILABLE")
    row(await box(client, "transfer", agent_id="1001", customer_phone="1003"), "TARGET_NOT_AVAILABLE")
    row(await box(client, "transfer", agent_id="1001", customer_phone="12"), "NUMBER_NOT_ALLOWED")
    world.signalling.available = False
    row(await box(client, "transfer", agent_id="1001", customer_phone="3001234567"), "CALL_CONTROL_UNAVAILABLE")
    world.signalling.available = True
    assert_envelope(await box(client, "transfer", agent_id="1001", customer_phone="3001234567"), 200, None,
                    "Call has been transfer to 3001234567 number", {"conn_id": world.service.get_agent(OP, "1001")
                                                                     .conn_id or ""})
    for verb in ("hold", "mute"):
        row(await box(client, verb, agent_id="1001"), "TRANSFER_IN_PROGRESS")
    row(await box(client, "dtmf", agent_id="1001", tones="1"), "TRANSFER_IN_PROGRESS")
    row(await box(client, "transfer", agent_id="1001", customer_phone="3001234567"), "TRANSFER_IN_PROGRESS")


async def test_409_call_could_not_be_updated_leaves_the_toggle(client: httpx.AsyncClient, world: World) -> None:
    world.login("1001")
    conn_id, _, _ = world.connected_call("1001")
    world.signalling.answers["hold"] = 488
    row(await box(client, "hold", agent_id="1001"), "CALL_NOT_UPDATED")
    assert world.service.get_call(OP, conn_id).held is False
    world.signalling.answers["hold"] = "ok"
    assert_envelope(await box(client, "hold", agent_id="1001"), 200, None, "Call has been put on hold")
    assert world.service.get_call(OP, conn_id).held is True


async def test_409_when_the_phone_does_not_answer_within_the_action_limit() -> None:
    world = World(settings=HttpSettings(action_timeout=0.2))
    world.login("1001")
    conn_id, _, _ = world.connected_call("1001")
    world.signalling.answers["mute"] = "silent"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://t") as client:
        row(await box(client, "mute", agent_id="1001"), "CALL_NOT_UPDATED")
    assert world.service.get_call(OP, conn_id).muted is False


async def test_a_request_past_its_time_limit_answers_503() -> None:
    world = World(settings=HttpSettings(request_timeout=0.1, action_timeout=5.0))
    world.login("1001")
    world.connected_call("1001")
    world.signalling.answers["dtmf"] = "silent"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://t") as client:
        row(await box(client, "dtmf", agent_id="1001", tones="5"), "CALL_CONTROL_UNAVAILABLE")
        assert world.app.state.gate.in_flight(contract_hash(TOKEN)) == 0


def contract_hash(token: str) -> str:
    from callbridge.http.auth import hash_token
    return hash_token(token)


# --- precedence ---------------------------------------------------------------------------------------------

async def test_precedence_combinations(client: httpx.AsyncClient, world: World) -> None:
    foreign = {"wolkvox-token": TOKEN, "wolkvox_server": OTHER_OP}
    # 405 beats a missing token and an unknown api
    assert (await client.get(ENDPOINT, params={"api": "nope"})).status_code == 405
    # 401 beats an invalid api and a foreign server
    row(await box(client, "nope", headers={"wolkvox_server": OTHER_OP}), "TOKEN_MISSING")
    # 403 token beats unknown api, missing and invalid parameters
    row(await box(client, "nope", headers={"wolkvox-token": "bad"}), "INVALID_TOKEN")
    row(await box(client, "transfer", headers=foreign, agent_id="x"), "INVALID_TOKEN")
    # unknown api beats missing parameters
    row(await box(client, "nope"), "UNKNOWN_API")
    # missing beats invalid
    row(await box(client, "transfer", agent_id="abc"), "MISSING_PARAMETERS")
    # invalid beats a missing agent
    row(await box(client, "transfer", agent_id="9999", customer_phone="sip:x"), "INVALID_PARAMETER",
        "customer_phone")
    # 404 beats not logged in / no call / dial plan
    row(await box(client, "transfer", agent_id="9999", customer_phone="12"), "AGENT_NOT_FOUND")
    # not logged in beats no active call and the dial plan
    row(await box(client, "transfer", agent_id="1001", customer_phone="12"), "AGENT_NOT_LOGGED_IN")
    world.login("1001")
    # no active call beats target not available and the dial plan
    row(await box(client, "transfer", agent_id="1001", customer_phone="1002"), "NO_ACTIVE_CALL")
    world.connected_call("1001")
    world.signalling.available = False
    # target / dial plan beat 503
    row(await box(client, "transfer", agent_id="1001", customer_phone="12"), "NUMBER_NOT_ALLOWED")
    row(await box(client, "transfer", agent_id="1001", customer_phone="1002"), "TARGET_NOT_AVAILABLE")
    world.signalling.available = True
    await box(client, "transfer", agent_id="1001", customer_phone="3001234567")
    # transfer in progress beats target not available and the dial plan
    row(await box(client, "transfer", agent_id="1001", customer_phone="1002"), "TRANSFER_IN_PROGRESS")
    row(await box(client, "transfer", agent_id="1001", customer_phone="12"), "TRANSFER_IN_PROGRESS")


# --- each verb's success ------------------------------------------------------------------------------------

async def test_every_verb_succeeds_with_its_exact_envelope(client: httpx.AsyncClient, world: World) -> None:
    world.service.on_registration_changed(OP, "1001", True)
    world.service.on_registration_changed(OP, "1002", True)
    assert_envelope(await box(client, "change_status", agent_id="1002", status="ready"), 200, None,
                    "Agent status has been changed to ready")
    assert_envelope(await box(client, "change_status", agent_id="1001", status="ready"), 200, None,
                    "Agent status has been changed to ready")
    assert_envelope(await box(client, "change_status", agent_id="1002", status="2"), 200, None,
                    "Agent status has been changed to 2")
    conn_id, customer_leg, _ = world.connected_call("1001")
    assert_envelope(await box(client, "hold", agent_id="1001"), 200, None, "Call has been put on hold")
    assert_envelope(await box(client, "hold", agent_id="1001"), 200, None, "Call has been taken off hold")
    assert [r[0:2] for r in world.signalling.requests if r[0] in ("hold", "unhold")] == [
        ("hold", customer_leg), ("unhold", customer_leg)]
    assert_envelope(await box(client, "mute", agent_id="1001"), 200, None, "Microphone has been muted")
    assert_envelope(await box(client, "mute", agent_id="1001"), 200, None, "Microphone has been unmuted")
    assert_envelope(await box(client, "dtmf", agent_id="1001", tones="12*#A"), 200, None, "Tones have been sent",
                    {"tones": "12*#A"})
    assert ("dtmf", customer_leg) == world.signalling.requests[-1][0:2]
    assert_envelope(await box(client, "agent_display", agent_id="1001", display="hide", button="hungup"), 200,
                    None, "Display has been updated")
    assert_envelope(await box(client, "hang", agent_id="1001"), 200, None, "Call has been hung up")
    assert world.service.get_call(OP, conn_id).state == "ended"
    assert_envelope(await box(client, "type", agent_id="1001", cod_act="10", cod_act_2="20",
                              comments="line one\nline two"), 200, None, "Call has been typed")
    assert world.records.dispositions[-1].comments == "line one\nline two"
    aux = await box(client, "aux_call", agent_id="1001", customer_phone="+573001234567")
    assert_envelope(aux, 200, None, "Auxiliary call has been dialed to +573001234567",
                    {"conn_id": world.service.get_agent(OP, "1001").conn_id or ""})
    assert world.signalling.last_originate("1001").auto_answer is True
    assert_envelope(await box(client, "hang", agent_id="1001"), 200, None, "Call has been hung up")
    dial = await box(client, "dial", agent_id="1001", customer_phone="0573001234", customer_id="crm-7",
                     customer_name="Ana María")
    assert_envelope(dial, 200, None, "Call has been dialed to 0573001234",
                    {"conn_id": world.service.get_agent(OP, "1001").conn_id or ""})
    assert_envelope(await box(client, "hang_type_ready", agent_id="1001", cod_act="10"), 200, None,
                    "Call has been hung up, typed and agent is ready")
    assert world.service.get_agent(OP, "1001").state == "ready"
    assert_envelope(await box(client, "recall", agent_id="1001", customer_phone="3001234567",
                              date="20991231235959", type_recall="auto"), 200, None, "Recall has been scheduled")
    assert len(world.records.recalls) == 1
    world.service.change_status(OP, "1002", "ready")
    world.connected_call("1001")
    transfer = await box(client, "transfer", agent_id="1001", customer_phone="1002")
    conn = world.service.get_agent(OP, "1001").conn_id or ""
    assert_envelope(transfer, 200, None, "Call has been transfer to 1002 number", {"conn_id": conn})
    target = world.signalling.last_originate("1002")
    assert (target.offerless, target.conn_id) == (True, conn)
    assert_envelope(await box(client, "change_status", agent_id="1003", status="logout"), 200, None,
                    "Agent status has been changed to logout")


# --- tenants ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "agent", "key"), [
    ({"wolkvox-token": TOKEN, "wolkvox_server": OP}, "2001", "AGENT_NOT_FOUND"),  # the other operation's agent
    ({"wolkvox-token": TOKEN, "wolkvox_server": OP}, "9999", "AGENT_NOT_FOUND"),  # nobody's
    ({"wolkvox-token": TOKEN}, "2001", "AGENT_NOT_FOUND"),
    ({"wolkvox-token": TOKEN, "wolkvox_server": OTHER_OP}, "2001", "INVALID_TOKEN"),
    ({"wolkvox-token": TOKEN, "wolkvox_server": OTHER_OP}, "1001", "INVALID_TOKEN"),
    ({"wolkvox-token": TOKEN, "wolkvox_server": OTHER_OP}, "9999", "INVALID_TOKEN"),
    ({"wolkvox-token": OTHER_TOKEN, "wolkvox_server": OTHER_OP}, "1001", "AGENT_NOT_FOUND"),
    ({"wolkvox-token": OTHER_TOKEN, "wolkvox_server": OP}, "2001", "INVALID_TOKEN"),
])
@pytest.mark.parametrize("verb", ["hang", "hold", "transfer", "change_status"])
async def test_tenant_matrix(client: httpx.AsyncClient, world: World, headers: dict[str, str], agent: str,
                             key: str, verb: str) -> None:
    world.login("1001")
    world.login("2001", op=OTHER_OP)
    world.connected_call("2001", op=OTHER_OP, did="5557700")
    params = {"agent_id": agent} | {"transfer": {"customer_phone": "3001234567"},
                                    "change_status": {"status": "logout"}}.get(verb, {})
    before = world.footprint()
    response = await box(client, verb, headers=headers, **params)
    row(response, key)
    missing = await box(client, verb, headers=headers, **(params | {"agent_id": "9999"}))
    if key == "AGENT_NOT_FOUND":
        assert response.content == missing.content and response.headers == missing.headers
    assert world.footprint() == before


def test_envelope_bodies_are_the_contracts_rendering_and_the_kept_ones_stay_bounded() -> None:
    from callbridge.http import agentbox
    from callbridge.http.contract import envelope, render

    assert agentbox.envelope_body(200, "Status changed to ready") == render(envelope(200, "Status changed to ready"))
    assert agentbox.envelope_body(200, "Status changed to ready") is agentbox.envelope_body(
        200, "Status changed to ready")
    assert agentbox.envelope_body(200, "ok", {"conn_id": "c1"}) == render(envelope(200, "ok", {"conn_id": "c1"}))
    for i in range(3 * agentbox._BODY_CACHE_SIZE):
        assert agentbox.envelope_body(200, f"m{i}") == render(envelope(200, f"m{i}"))
        assert len(agentbox._bodies) <= agentbox._BODY_CACHE_SIZE


def test_query_pairs_are_parsed_exactly_as_parse_qsl_with_blank_values() -> None:
    import random
    from urllib.parse import parse_qsl

    from callbridge.http.agentbox import parse_pairs

    cases = ["", "&", "a", "a=", "=b", "a=1&a=2", "a=1&&b=2&", "a=b=c", "a+b=c+d", "a%20b=%2B%26%3D", "x=%zz%",
             "n=%C3%B1", "n=%C3", "s=a;b", "api=change_status&agent_id=1001&status=ready"]
    alphabet = "ab=&+%;2Fz9C3 "
    rng = random.Random(7)
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(12))) for _ in range(3000)]
    for text in cases:
        assert parse_pairs(text) == parse_qsl(text, keep_blank_values=True), text


def test_headers_read_in_one_pass_keep_the_first_of_a_name() -> None:
    from callbridge.http.agentbox import request_headers

    scope = {"headers": [(b"host", b"t"), (b"wolkvox-token", b"one"), (b"content-type", b"text/plain"),
                         (b"wolkvox-token", b"two"), (b"wolkvox_server", b"0042"), (b"content-type", b"x")]}
    assert request_headers(scope) == ("one", "0042", "text/plain")
    assert request_headers({"headers": [(b"wolkvox-token", b"\xf1")]}) == ("\xf1", None, "")
