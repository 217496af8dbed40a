"""`callbridge.http.contract` against the contract document (docs/agentbox-contract.md) and a transcription of it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from callbridge.http import contract

CONTRACT_DOC = Path(__file__).resolve().parents[2] / "docs" / "agentbox-contract.md"

# The two error tables, transcribed: key -> (status, error, msg). Kept here as well as parsed from the document, so
# that changing the document and the code together still has to change this test too.
TRANSCRIBED = {
    "UNKNOWN_API": (400, "BAD REQUEST", "THE API YOU WANT TO CONSULT DOES NOT EXIST"),
    "MISSING_PARAMETERS": (400, "BAD REQUEST", "SOME PARAMETERS ARE REQUIRED"),
    "INVALID_PARAMETER": (400, "BAD REQUEST", "INVALID PARAMETER: <name>"),
    "TOKEN_MISSING": (401, "UNAUTHORIZED", "PLEASE ENTER THE WOLKVOX-TOKEN"),
    "INVALID_TOKEN": (403, "FORBIDDEN", "PLEASE VALIDATE TOKEN"),
    "CONCURRENCY_LIMIT": (403, "FORBIDDEN", "EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (2)"),
    "TOKEN_LIMIT_EXCEEDED": (403, "FORBIDDEN", "TOKEN LIMIT EXCEEDED"),
    "AGENT_NOT_FOUND": (404, "NOT FOUND", "AGENT DOES NOT EXIST"),
    "AGENT_NOT_LOGGED_IN": (409, "CONFLICT", "AGENT IS NOT LOGGED IN"),
    "NO_ACTIVE_CALL": (409, "CONFLICT", "AGENT HAS NO ACTIVE CALL"),
    "ALREADY_ON_CALL": (409, "CONFLICT", "AGENT ALREADY HAS AN ACTIVE CALL"),
    "TRANSFER_IN_PROGRESS": (409, "CONFLICT", "A TRANSFER IS ALREADY IN PROGRESS"),
    "TARGET_NOT_AVAILABLE": (409, "CONFLICT", "TRANSFER TARGET IS NOT AVAILABLE"),
    "NUMBER_NOT_ALLOWED": (400, "BAD REQUEST", "INVALID PARAMETER: customer_phone"),
    "METHOD_NOT_ALLOWED": (405, "METHOD NOT ALLOWED", "USE POST"),
    "CALL_CONTROL_UNAVAILABLE": (503, "SERVICE UNAVAILABLE", "CALL CONTROL IS NOT AVAILABLE"),
    "PHONE_NOT_REGISTERED": (409, "CONFLICT", "AGENT PHONE IS NOT REGISTERED"),
    "NO_RECENT_CALL": (409, "CONFLICT", "NO RECENT CALL"),
    "NO_CALL_TO_TYPE": (409, "CONFLICT", "NO CALL TO TYPE"),
    "CALL_NOT_UPDATED": (409, "CONFLICT", "CALL COULD NOT BE UPDATED"),
}


def _as_written(row: contract.ErrorRow) -> tuple[int, str, str]:
    """A row as the contract's table writes it (templates with their `<name>`/`(2)` forms)."""
    if row.key == "INVALID_PARAMETER":
        msg = row.msg.replace("{name}", "<name>")
    elif row.key == "CONCURRENCY_LIMIT":
        msg = contract.concurrency_limit(2).msg
    else:
        msg = row.msg
    return (row.status, row.error, msg)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _doc_rows() -> list[tuple[str, tuple[int, str, str], str]]:
    """The document's two error tables: (key, (status, error, msg), origin), in the document's order."""
    text = CONTRACT_DOC.read_text(encoding="utf-8")
    start = text.index("## Errors every verb can return")
    end = text.index("## Which error wins")
    rows = []
    for line in text[start:end].splitlines():
        cells = _cells(line)
        if len(cells) == 6 and cells[0].isdigit():
            status, error, msg, key, _, origin = cells
            rows.append((key, (int(status), error, msg.strip("`")), origin))
    return rows


def _doc_verbs() -> dict[str, list[str]]:
    """The document's table of verbs: api -> its other cells (required, optional, success msg, data)."""
    text = CONTRACT_DOC.read_text(encoding="utf-8")
    rows: dict[str, list[str]] = {}
    for line in text[text.index("## The verbs"):].splitlines():
        cells = _cells(line)
        if line.startswith("| ") and cells[0] in contract.VERBS:
            assert cells[0] not in rows, f"{cells[0]} has two rows in the table of verbs"
            rows[cells[0]] = cells[1:]
    return rows


def _names(cell: str) -> tuple[str, ...]:
    return () if cell == "—" else tuple(name.strip() for name in cell.split(","))


def test_every_row_matches_the_transcription_exactly() -> None:
    assert {key: _as_written(row) for key, row in contract.ERRORS.items()} == TRANSCRIBED


def test_every_row_of_both_tables_in_the_document_is_a_row_here() -> None:
    doc = _doc_rows()
    assert len(doc) == 20  # 16 common rows + 4 rows of particular verbs, each key once
    assert [key for key, _, _ in doc] == [row.key for row in contract.COMMON_ERRORS + contract.VERB_ERRORS]
    ours = {key: _as_written(row) for key, row in contract.ERRORS.items()}
    assert {key: written for key, written, _ in doc} == ours
    origin = {"doc": "Wolkvox", "ours": "callbridge"}
    assert {key: who for key, _, who in doc} == {key: origin[row.source] for key, row in contract.ERRORS.items()}


def test_rows_with_arguments() -> None:
    row = contract.invalid_parameter("tones")
    assert (row.status, row.error, row.msg, row.parameter) == (400, "BAD REQUEST", "INVALID PARAMETER: tones", "tones")
    assert contract.concurrency_limit(5).msg == "EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (5)"
    assert contract.error("CONCURRENCY_LIMIT").msg.endswith("(2)")
    with pytest.raises(ValueError):
        contract.error("INVALID_PARAMETER")


def test_envelope_of_a_success_and_of_an_error() -> None:
    assert contract.envelope(200, "Call has been hung up") == {"code": "200", "error": None,
                                                               "msg": "Call has been hung up"}
    assert contract.error("TOKEN_MISSING").envelope() == {
        "code": "401", "error": "UNAUTHORIZED", "msg": "PLEASE ENTER THE WOLKVOX-TOKEN"}
    with pytest.raises(ValueError):
        contract.envelope(418, "teapot")


def test_serialisation_is_the_documentation_example_byte_for_byte() -> None:
    body = contract.envelope(200, contract.VERBS["transfer"].message(customer_phone="X"), {"conn_id": "<call id>"})
    assert contract.render(body) == (
        b'{"code":"200","error":null,"msg":"Call has been transfer to X number","data":{"conn_id":"<call id>"}}')
    assert contract.CONTENT_TYPE == "application/json; charset=utf-8"


def test_serialisation_is_utf8_not_escaped() -> None:
    raw = contract.render(contract.envelope(200, "Agent status has been changed to almuerzo ñ"))
    assert "ñ".encode() in raw
    assert json.loads(raw)["msg"].endswith("ñ")


@pytest.mark.parametrize("key", sorted(TRANSCRIBED))
def test_each_row_renders_code_equal_to_status(key: str) -> None:
    row = contract.invalid_parameter("agent_id") if key == "INVALID_PARAMETER" else contract.error(key)
    decoded = json.loads(row.body())
    assert decoded["code"] == str(row.status)
    assert decoded["error"] == TRANSCRIBED[key][1]
    assert "data" not in decoded


def test_precedence_is_the_contracts_order() -> None:
    flat = [key for tier in contract.PRECEDENCE for key in tier]
    assert flat[:10] == ["METHOD_NOT_ALLOWED", "TOKEN_MISSING", "INVALID_TOKEN", "CONCURRENCY_LIMIT",
                         "TOKEN_LIMIT_EXCEEDED", "UNKNOWN_API", "MISSING_PARAMETERS", "INVALID_PARAMETER",
                         "AGENT_NOT_FOUND", "AGENT_NOT_LOGGED_IN"]
    assert sorted(flat) == sorted(contract.ERRORS)  # every row has exactly one place
    assert len(flat) == len(set(flat))
    assert contract.first_error(["CALL_CONTROL_UNAVAILABLE", "AGENT_NOT_FOUND", "TOKEN_LIMIT_EXCEEDED"]) == \
        "TOKEN_LIMIT_EXCEEDED"
    assert contract.first_error(["TARGET_NOT_AVAILABLE", "TRANSFER_IN_PROGRESS"]) == "TRANSFER_IN_PROGRESS"
    assert contract.first_error(["NO_ACTIVE_CALL", "AGENT_NOT_LOGGED_IN"]) == "AGENT_NOT_LOGGED_IN"
    assert contract.first_error([]) is None
    with pytest.raises(KeyError):
        contract.first_error(["NOT_A_ROW"])


def test_precedence_follows_the_documents_sentence() -> None:
    text = CONTRACT_DOC.read_text(encoding="utf-8")
    sentence = text[text.index("first match:"):text.index("## Tenants")]
    statuses = [int(s) for s in re.findall(r"\b(\d{3})\b", sentence)]
    # one status per tier, or each distinct one where a tier mixes them ("409 target not available, or 400 ...")
    ours = [status for tier in contract.PRECEDENCE[:-1]
            for status in dict.fromkeys(contract.ERRORS[key].status for key in tier)]
    assert statuses == ours


def test_verbs_parameters_and_messages() -> None:
    assert len(contract.VERBS) == 12
    expected = {
        "transfer": (("agent_id", "customer_phone"), ()),
        "dial": (("agent_id", "customer_phone"), ("customer_id", "customer_name")),
        "hang": (("agent_id",), ()),
        "hold": (("agent_id",), ()),
        "mute": (("agent_id",), ()),
        "change_status": (("agent_id", "status"), ()),
        "type": (("agent_id", "cod_act", "cod_act_2"), ("comments",)),
        "hang_type_ready": (("agent_id", "cod_act"), ("cod_act_2", "comments")),
        "dtmf": (("agent_id", "tones"), ()),
        "aux_call": (("agent_id", "customer_phone"), ()),
        "agent_display": (("agent_id", "display", "button"), ()),
        "recall": (("agent_id", "customer_phone", "date", "type_recall"), ()),
    }
    assert {name: (v.required, v.optional) for name, v in contract.VERBS.items()} == expected
    v = contract.VERBS
    assert v["transfer"].message(customer_phone="0573001234567") == \
        "Call has been transfer to 0573001234567 number"
    assert v["dial"].message(customer_phone="+5712") == "Call has been dialed to +5712"
    assert v["hold"].message("on") == "Call has been put on hold"
    assert v["hold"].message("off") == "Call has been taken off hold"
    assert v["mute"].message("on") == "Microphone has been muted"
    assert v["mute"].message("off") == "Microphone has been unmuted"
    assert v["change_status"].message(status="ready") == "Agent status has been changed to ready"
    assert v["hang_type_ready"].message() == "Call has been hung up, typed and agent is ready"
    assert v["aux_call"].message(customer_phone="3001") == "Auxiliary call has been dialed to 3001"
    assert {name: verb.data for name, verb in v.items() if verb.data} == {
        "transfer": ("conn_id",), "dial": ("conn_id",), "aux_call": ("conn_id",), "dtmf": ("tones",)}


def test_verb_messages_are_the_documents() -> None:
    doc = _doc_verbs()
    assert set(doc) == set(contract.VERBS)
    for verb in contract.VERBS.values():
        required, optional, messages, data = doc[verb.name]
        for template in verb.messages.values():
            assert template in messages, (verb.name, template)
        assert messages.split(" / ") == list(verb.messages.values()), verb.name
        assert (_names(required), _names(optional), _names(data)) == (verb.required, verb.optional, verb.data)


@pytest.mark.parametrize(("name", "value", "ok"), [
    ("agent_id", "1001", True), ("agent_id", "10a1", False), ("agent_id", "", False),
    ("customer_phone", "+573001234567", True), ("customer_phone", "0057300", True),
    ("customer_phone", "300\r\nVia: x", False), ("customer_phone", "sip:1@192.0.2.1", False),
    ("tones", "12*#ABCD", True), ("tones", "12E", False),
    ("date", "20250131235959", True), ("date", "2025-01-31", False),
    ("display", "show", True), ("display", "shown", False),
    ("button", "disposition", True), ("type_recall", "auto", True), ("type_recall", "later", False),
    ("status", "anything", True),
])
def test_parameter_formats(name: str, value: str, ok: bool) -> None:
    assert contract.parameter_is_well_formed(name, value) is ok


def test_error_ids_map_to_rows() -> None:
    assert contract.row_for_error_id("NUMBER_NOT_ALLOWED").msg == "INVALID PARAMETER: customer_phone"
    assert contract.row_for_error_id("INVALID_PARAMETER", parameter="status").msg == "INVALID PARAMETER: status"
    assert contract.row_for_error_id("TRANSFER_LIMIT").key == "TARGET_NOT_AVAILABLE"
    assert contract.row_for_error_id("CALL_CONTROL_UNAVAILABLE").status == 503
    for error_id in contract.ERROR_IDS:
        if error_id != "INVALID_PARAMETER":
            assert contract.row_for_error_id(error_id).key in contract.ERRORS
    with pytest.raises(ValueError):
        contract.row_for_error_id("INVALID_PARAMETER")


def test_problem_details() -> None:
    p = contract.problem("AGENT_NOT_FOUND", instance="/v2/agents/1009")
    assert p == {"type": "urn:callbridge:problem:agent-not-found", "title": "AGENT DOES NOT EXIST", "status": 404,
                 "error": "AGENT_NOT_FOUND", "instance": "/v2/agents/1009"}
    q = contract.problem("INVALID_PARAMETER", parameter="target")
    assert (q["status"], q["detail"], q["parameter"]) == (400, "INVALID PARAMETER: target", "target")
    assert contract.problem("EVENTS_EXPIRED", oldest_seq=7)["oldest_seq"] == 7
    assert "METHOD_NOT_ALLOWED" not in contract.PROBLEM_KEYS
    with pytest.raises(KeyError):
        contract.problem("METHOD_NOT_ALLOWED")
    types = {contract.problem_type(k) for k in contract.PROBLEM_KEYS}
    assert len(types) == len(contract.PROBLEM_KEYS)
