"""The native API document (`callbridge/http/openapi.json`): a valid OpenAPI 3.1 document that says what the
agentbox contract and the native API's problem types say, and whose schemas accept the contract's answers and
refuse wrong ones."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from callbridge.http import contract

DOC: dict[str, Any] = json.loads(resources.files("callbridge.http").joinpath("openapi.json").read_text("utf-8"))


def _check(schema: dict[str, Any], instance: Any) -> None:
    """Validate ``instance`` against ``schema`` as if it stood inside the document (its $refs resolve there)."""
    base = "urn:callbridge:openapi"
    registry = Registry().with_resource(base, Resource({**DOC, "x-under-test": schema}, DRAFT202012))
    OAS31Validator({"$ref": f"{base}#/x-under-test"}, registry=registry).validate(instance)


def _component(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _response_schema(path: str, method: str, status: int | str, media: str) -> dict[str, Any]:
    schema: dict[str, Any] = DOC["paths"][path][method]["responses"][str(status)]["content"][media]["schema"]
    return schema


def test_is_a_valid_openapi_31_document() -> None:
    assert DOC["openapi"] == "3.1.0"
    validate(DOC)  # raises on any violation of the OpenAPI 3.1 schema, including unresolved $refs


def test_the_validator_sees_a_broken_document() -> None:
    broken = json.loads(json.dumps(DOC))
    broken["paths"]["/v2/transfers"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/NoSuchSchema"}
    with pytest.raises(Exception, match="NoSuchSchema"):
        validate(broken)


def test_every_native_endpoint_is_there() -> None:
    expected = {
        ("/api/v2/agentbox.php", "post"), ("/api/v2/agentbox.php", "get"),
        ("/v2/transfers", "post"), ("/v2/transfers/{transfer_id}", "get"),
        ("/v2/transfers/{transfer_id}/complete", "put"), ("/v2/transfers/{transfer_id}", "delete"),
        ("/v2/agents", "get"), ("/v2/agents/{agent_id}", "get"),
        ("/v2/calls", "get"), ("/v2/calls/{conn_id}", "get"), ("/v2/cdrs", "get"), ("/v2/events", "get"),
        ("/v2/calls/{conn_id}/recording", "get"), ("/v2/calls/{conn_id}/recording", "post"),
        ("/v2/calls/{conn_id}/recording", "delete"), ("/v2/calls/{conn_id}/recording", "patch"),
        ("/v2/recordings", "get"),
        ("/v2/calls/{conn_id}/monitor", "post"), ("/v2/calls/{conn_id}/monitor", "get"),
        ("/v2/calls/{conn_id}/monitor", "delete"),
    }
    found = {(p, m) for p, item in DOC["paths"].items() for m in item
             if m in {"get", "post", "put", "delete", "patch"}}
    assert found == expected
    assert DOC["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": DOC["components"]["securitySchemes"]["bearer"][
            "description"]}
    assert DOC["paths"]["/api/v2/agentbox.php"]["post"]["security"] == [{"wolkvoxToken": []}]
    assert DOC["components"]["securitySchemes"]["wolkvoxToken"]["name"] == "wolkvox-token"
    post = DOC["paths"]["/v2/transfers"]["post"]
    assert [p["name"] for p in post["parameters"]] == ["Idempotency-Key"]
    assert set(DOC["paths"]["/v2/events"]["get"]["x-websocket"]) >= {"url", "subprotocol", "server_messages",
                                                                     "close_codes", "authentication"}


def test_agentbox_verbs_and_precedence_are_the_contracts() -> None:
    post = DOC["paths"]["/api/v2/agentbox.php"]["post"]
    assert post["x-verbs"] == {
        v.name: {"required": list(v.required), "optional": list(v.optional), "messages": dict(v.messages),
                 "data": list(v.data)} for v in contract.VERBS.values()}
    assert post["x-error-precedence"] == [list(t) for t in contract.PRECEDENCE]
    params = {p["name"]: p for p in post["parameters"] if p["in"] == "query"}
    assert set(params) == {"api"} | {p for v in contract.VERBS.values() for p in v.parameters}
    assert params["api"]["schema"]["enum"] == list(contract.VERBS)
    assert [p["name"] for p in post["parameters"] if p["in"] == "header"] == ["wolkvox_server"]


def test_problem_types_are_the_contracts() -> None:
    assert set(DOC["x-problem-types"]) == set(contract.PROBLEM_KEYS)
    for key, entry in DOC["x-problem-types"].items():
        p = contract.problem(key, parameter="x")
        assert (entry["type"], entry["status"], entry["title"]) == (p["type"], p["status"], p["title"])


@pytest.mark.parametrize("key", sorted(contract.ERRORS))
def test_each_agentbox_error_row_fits_its_status_and_no_other(key: str) -> None:
    row = contract.invalid_parameter("cod_act") if key == "INVALID_PARAMETER" else contract.error(key)
    body = row.envelope()
    statuses = sorted({r.status for r in contract.ERRORS.values()})
    method = "get" if key == "METHOD_NOT_ALLOWED" else "post"
    _check(_response_schema("/api/v2/agentbox.php", method, row.status, "application/json"), body)
    for other in statuses:
        if other != row.status and other != 405:
            with pytest.raises(ValidationError):
                _check(_response_schema("/api/v2/agentbox.php", "post", other, "application/json"), body)


def test_agentbox_success_envelopes() -> None:
    schema = _response_schema("/api/v2/agentbox.php", "post", 200, "application/json")
    _check(schema, contract.envelope(200, "Call has been transfer to 1002 number", {"conn_id": "c-9aZ_"}))
    _check(schema, contract.envelope(200, "Tones have been sent", {"tones": "12#"}))
    _check(schema, contract.envelope(200, "Call has been hung up"))
    for wrong in ({"code": 200, "error": None, "msg": "x"},  # code must be a string
                  {"code": "200", "error": None, "msg": "x", "data": None},  # data absent, never null
                  {"code": "200", "error": None, "msg": "x", "data": {"conn_id": "a b"}}):
        with pytest.raises(ValidationError):
            _check(schema, wrong)


def test_native_problems_fit_the_operations_that_list_them() -> None:
    seen = set()
    for path, item in DOC["paths"].items():
        if not path.startswith("/v2/"):
            continue
        for method, op in item.items():
            if method not in {"get", "post", "put", "delete", "patch"}:
                continue
            for status, response in op["responses"].items():
                media = response.get("content", {}).get("application/problem+json")
                if media is None:
                    continue
                for key in media["schema"]["properties"]["error"]["enum"]:
                    body = contract.problem(key, parameter="target") if key == "INVALID_PARAMETER" else \
                        contract.problem(key)
                    assert str(body["status"]) == status
                    _check(media["schema"], body)
                    _check(media["schema"], media["example"])
                    seen.add(key)
                # a problem of another status does not fit
                with pytest.raises(ValidationError):
                    _check(media["schema"], contract.problem("CALL_CONTROL_UNAVAILABLE") if status != "503"
                           else contract.problem("TOKEN_MISSING"))
    # the keys of agentbox-only verbs have no native operation (yet); every other key is answered somewhere
    assert set(contract.PROBLEM_KEYS) - seen == {"UNKNOWN_API", "ALREADY_ON_CALL", "NO_RECENT_CALL",
                                                 "NO_CALL_TO_TYPE"}


TRANSFER = {
    "id": "t-01", "conn_id": "c-01", "kind": "blind", "origin": "agentbox", "agent_id": "1001", "target": "1002",
    "target_type": "agent", "state": "failed", "outcome": "back_with_agent", "failure": "busy", "sip_cause": 486,
    "timeout": 30, "created_at": "2025-01-31T12:00:00.000Z", "ringing_at": "2025-01-31T12:00:00.100Z",
    "answered_at": None, "ended_at": "2025-01-31T12:00:02.000Z",
}


def test_transfer_resource() -> None:
    _check(_component("Transfer"), TRANSFER)
    for bad in ({**TRANSFER, "state": "lost"}, {**TRANSFER, "sip_cause": 200},
                {k: v for k, v in TRANSFER.items() if k != "sip_cause"}, {**TRANSFER, "target": "sip:x@y"}):
        with pytest.raises(ValidationError):
            _check(_component("Transfer"), bad)
    _check(_component("TransferRequest"), {"agent_id": "1001", "target": "+573001234567"})
    with pytest.raises(ValidationError):
        _check(_component("TransferRequest"), {"agent_id": "1001", "target": "1002", "kind": "warm"})


EVENTS = [
    ("call.offered", {"conn_id": "c-01", "agent_id": "1001", "direction": "inbound", "customer_number": "300",
                      "queue": "sales"}),
    ("call.answered", {"conn_id": "c-01", "agent_id": "1001"}),
    ("call.held", {"conn_id": "c-01", "agent_id": "1001", "held": True}),
    ("call.ended", {"conn_id": "c-01", "agent_id": None, "ended_by": "customer", "sip_cause": None,
                    "duration_s": 12.5}),
    ("call.media_direct", {"conn_id": "c-01", "reason": "relay_down"}),
    ("call.dtmf", {"conn_id": "c-01", "leg_id": "l-01", "leg": "customer", "digit": "#", "duration_ms": 100}),
    ("call.monitor_started", {"conn_id": "c-01", "monitor_id": "m-01", "supervisor": "1009",
                              "started_at": "2025-01-31T12:00:01.000Z"}),
    ("call.monitor_ended", {"conn_id": "c-01", "monitor_id": "m-01", "supervisor": "1009",
                            "started_at": "2025-01-31T12:00:01.000Z", "ended_at": "2025-01-31T12:00:09.000Z",
                            "reason": "stopped"}),
    *[(f"transfer.{s}", TRANSFER) for s in ("created", "ringing", "answered", "completed", "failed", "cancelled")],
    ("agent.state_changed", {"agent_id": "1001", "state": "aux", "previous_state": "ready", "aux_state": "lunch",
                             "registered": True, "reason": "api"}),
    ("agent.display_changed", {"agent_id": "1001", "button": "dial", "display": "hide",
                               "buttons": {"hungup": "show", "disposition": "show", "dial": "hide"}}),
]


def test_event_types_and_their_data() -> None:
    assert [t for t, _ in EVENTS] == DOC["components"]["schemas"]["EventType"]["enum"]
    for seq, (event_type, data) in enumerate(EVENTS, start=1):
        event = {"seq": seq, "type": event_type, "at": "2025-01-31T12:00:00.000Z", "operation": "0042",
                 "data": data}
        _check(_component("Event"), event)
        # the data of another type does not fit
        wrong = {"agent_id": "1001"} if event_type != "call.answered" else {"conn_id": "c-01"}
        with pytest.raises(ValidationError):
            _check(_component("Event"), {**event, "data": wrong})
    with pytest.raises(ValidationError):
        _check(_component("Event"), {"seq": 0, "type": "call.held", "at": "x", "operation": "0042", "data": {}})


def test_call_ended_says_why_callbridge_ended_it() -> None:
    base = {"seq": 1, "type": "call.ended", "at": "2025-01-31T12:00:00.000Z", "operation": "0042"}
    for reason in ("relay_lost", "media_timeout", None):
        _check(_component("Event"), {**base, "data": {**EVENTS[3][1], "ended_by": "system", "end_reason": reason}})
    with pytest.raises(ValidationError):
        _check(_component("Event"), {**base, "data": {**EVENTS[3][1], "end_reason": "relay_down"}})


def test_agent_state_changed_always_names_its_reason() -> None:
    data = dict(EVENTS[-2][1])
    event = {"seq": 1, "type": "agent.state_changed", "at": "2025-01-31T12:00:00.000Z", "operation": "0042"}
    for reason in ("api", "restart", "registration expired"):
        _check(_component("Event"), {**event, "data": {**data, "reason": reason}})
    for wrong in ({k: v for k, v in data.items() if k != "reason"}, {**data, "reason": ""}, {**data, "reason": None}):
        with pytest.raises(ValidationError):
            _check(_component("Event"), {**event, "data": wrong})


def test_event_stream_endpoint_describes_both_transports() -> None:
    op = DOC["paths"]["/v2/events"]["get"]
    assert {p["name"] for p in op["parameters"]} == {"after", "wait", "limit", "types"}
    assert op["responses"]["200"]["content"]["application/x-ndjson"]["schema"] == _component("Event")
    assert "410" in op["responses"]
    assert DOC["webhooks"]["event"]["post"]["parameters"][0]["name"] == "Callbridge-Signature"
