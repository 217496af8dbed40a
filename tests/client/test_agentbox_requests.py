"""What the agentbox clients put on the wire, verb by verb, and how they read successes (httpx.MockTransport)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbridge.client import (
    AgentboxClient,
    AgentboxResult,
    AsyncAgentboxClient,
    AuxCallResult,
    DialResult,
    DtmfResult,
    ToggleResult,
    TransferResult,
)
from callbridge.http import contract

TOKEN = "tok-0042-a"


def _ok(msg: str, data: dict[str, Any] | None = None) -> bytes:
    return contract.render(contract.envelope(200, msg, data))


class Recorder:
    """A transport handler that records each request and answers with a fixed body."""

    def __init__(self, body: bytes = b"", status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.body = body or _ok("done")
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, content=self.body,
                              headers={"content-type": contract.CONTENT_TYPE})


# verb call -> exact query string
CASES: list[tuple[str, Callable[[Any], Any], str]] = [
    ("transfer", lambda c: c.transfer("1001", "+573001234567"),
     "api=transfer&agent_id=1001&customer_phone=%2B573001234567"),
    ("dial", lambda c: c.dial("1001", "0573001234567"), "api=dial&agent_id=1001&customer_phone=0573001234567"),
    ("dial", lambda c: c.dial("1001", "93001", customer_id="CRM-77", customer_name="José Pérez & Co"),
     "api=dial&agent_id=1001&customer_phone=93001&customer_id=CRM-77"
     "&customer_name=Jos%C3%A9%20P%C3%A9rez%20%26%20Co"),
    ("hang", lambda c: c.hang("1001"), "api=hang&agent_id=1001"),
    ("hold", lambda c: c.hold("1001"), "api=hold&agent_id=1001"),
    ("mute", lambda c: c.mute("0071"), "api=mute&agent_id=0071"),
    ("change_status", lambda c: c.change_status("1001", "ready"), "api=change_status&agent_id=1001&status=ready"),
    ("type", lambda c: c.type("1001", "12", "34"), "api=type&agent_id=1001&cod_act=12&cod_act_2=34"),
    ("type", lambda c: c.type("1001", "12", "34", comments="call back\nlater"),
     "api=type&agent_id=1001&cod_act=12&cod_act_2=34&comments=call%20back%0Alater"),
    ("hang_type_ready", lambda c: c.hang_type_ready("1001", "12"), "api=hang_type_ready&agent_id=1001&cod_act=12"),
    ("hang_type_ready", lambda c: c.hang_type_ready("1001", "12", cod_act_2="3", comments="ok"),
     "api=hang_type_ready&agent_id=1001&cod_act=12&cod_act_2=3&comments=ok"),
    ("dtmf", lambda c: c.dtmf("1001", "12*#A"), "api=dtmf&agent_id=1001&tones=12%2A%23A"),
    ("aux_call", lambda c: c.aux_call("1001", "3001234567"), "api=aux_call&agent_id=1001&customer_phone=3001234567"),
    ("agent_display", lambda c: c.agent_display("1001", "hide", "dial"),
     "api=agent_display&agent_id=1001&display=hide&button=dial"),
    ("recall", lambda c: c.recall("1001", "3001", datetime(2025, 1, 31, 8, 5, 9), "auto"),
     "api=recall&agent_id=1001&customer_phone=3001&date=20250131080509&type_recall=auto"),
    ("recall", lambda c: c.recall("1001", "3001", "20250131080509", "manual"),
     "api=recall&agent_id=1001&customer_phone=3001&date=20250131080509&type_recall=manual"),
]


def test_every_verb_has_a_case() -> None:
    assert {verb for verb, _, _ in CASES} == set(contract.VERBS)


def _assert_shape(request: httpx.Request, query: str, base: str = "http://127.0.0.1:8080") -> None:
    assert request.method == "POST"
    assert str(request.url) == f"{base}/api/v2/agentbox.php?{query}"
    assert request.url.query.decode() == query
    assert request.headers["wolkvox-token"] == TOKEN
    assert request.headers["wolkvox_server"] == "0042"
    assert request.content == b""
    assert request.headers.get("content-length", "0") == "0"
    assert "content-type" not in request.headers
    assert request.extensions["timeout"] == {"connect": 60.0, "read": 60.0, "write": 60.0, "pool": 60.0}


@pytest.mark.parametrize(("verb", "invoke", "query"), CASES, ids=[f"{v}-{i}" for i, (v, _, _) in enumerate(CASES)])
def test_sync_request_shape(verb: str, invoke: Callable[[Any], Any], query: str) -> None:
    rec = Recorder()
    with AgentboxClient("http://127.0.0.1:8080/", token=TOKEN, server="0042",
                        transport=httpx.MockTransport(rec)) as box:
        invoke(box)
    assert len(rec.requests) == 1
    _assert_shape(rec.requests[0], query)


@pytest.mark.parametrize(("verb", "invoke", "query"), CASES, ids=[f"{v}-{i}" for i, (v, _, _) in enumerate(CASES)])
async def test_async_request_shape(verb: str, invoke: Callable[[Any], Any], query: str) -> None:
    rec = Recorder()
    async with AsyncAgentboxClient("http://127.0.0.1:8080", token=TOKEN, server="0042",
                                   transport=httpx.MockTransport(rec)) as box:
        await invoke(box)
    assert len(rec.requests) == 1
    _assert_shape(rec.requests[0], query)


def test_for_wolkvox_builds_the_cloud_url_and_both_headers() -> None:
    rec = Recorder()
    box = AgentboxClient.for_wolkvox(server="0042", token=TOKEN, transport=httpx.MockTransport(rec))
    box.hang("1001")
    box.close()
    _assert_shape(rec.requests[0], "api=hang&agent_id=1001", base="https://wv0042.wolkvox.com")
    with pytest.raises(ValueError):
        AgentboxClient.for_wolkvox(server="0042.evil.example/x", token=TOKEN)


def test_without_server_the_header_is_left_out() -> None:
    rec = Recorder()
    with AgentboxClient("http://127.0.0.1:8080", token=TOKEN, transport=httpx.MockTransport(rec)) as box:
        box.hang("1001")
    assert "wolkvox_server" not in rec.requests[0].headers
    assert rec.requests[0].headers["wolkvox-token"] == TOKEN


def test_timeout_is_configurable() -> None:
    rec = Recorder()
    with AgentboxClient("http://127.0.0.1:8080", token=TOKEN, timeout=5.0, transport=httpx.MockTransport(rec)) as b:
        b.hang("1001")
    assert rec.requests[0].extensions["timeout"]["read"] == 5.0


def _answer(body: bytes, invoke: Callable[[AgentboxClient], Any]) -> Any:
    with AgentboxClient("http://127.0.0.1:8080", token=TOKEN, transport=httpx.MockTransport(Recorder(body))) as b:
        return invoke(b)


def test_typed_results() -> None:
    r = _answer(_ok("Call has been transfer to 1002 number", {"conn_id": "c-1"}), lambda b: b.transfer("1", "1002"))
    assert r == TransferResult(code=200, msg="Call has been transfer to 1002 number", data={"conn_id": "c-1"},
                               conn_id="c-1")
    r = _answer(_ok("Call has been dialed to 3001", {"conn_id": "c-2"}), lambda b: b.dial("1", "3001"))
    assert isinstance(r, DialResult) and r.conn_id == "c-2"
    r = _answer(_ok("Auxiliary call has been dialed to 3001", {"conn_id": "c-3"}), lambda b: b.aux_call("1", "3"))
    assert isinstance(r, AuxCallResult) and r.conn_id == "c-3"
    r = _answer(_ok("Tones have been sent", {"tones": "12#"}), lambda b: b.dtmf("1", "12#"))
    assert r == DtmfResult(code=200, msg="Tones have been sent", data={"tones": "12#"}, tones="12#")
    r = _answer(_ok("Call has been put on hold"), lambda b: b.hold("1"))
    assert r == ToggleResult(code=200, msg="Call has been put on hold", active=True)
    r = _answer(_ok("Call has been taken off hold"), lambda b: b.hold("1"))
    assert isinstance(r, ToggleResult) and r.active is False
    r = _answer(_ok("Microphone has been unmuted"), lambda b: b.mute("1"))
    assert isinstance(r, ToggleResult) and r.active is False
    r = _answer(_ok("Call has been hung up"), lambda b: b.hang("1"))
    assert r == AgentboxResult(code=200, msg="Call has been hung up", data={})


@pytest.mark.parametrize(("body", "expected"), [
    # code as a number, data missing
    (b'{"code":200,"error":null,"msg":"ok"}', TransferResult(code=200, msg="ok", conn_id=None)),
    # data null
    (b'{"code":"200","error":null,"msg":"ok","data":null}', TransferResult(code=200, msg="ok", conn_id=None)),
    # extra members everywhere, a message this client does not know, conn_id as a number
    (b'{"code":"200","error":"","msg":"Transferencia exitosa","data":{"conn_id":123,"x":1},"extra":true}',
     TransferResult(code=200, msg="Transferencia exitosa", data={"conn_id": 123, "x": 1}, conn_id="123")),
    # no code at all: the HTTP status says it
    (b'{"msg":"ok","data":{"conn_id":"c"}}', TransferResult(code=200, msg="ok", data={"conn_id": "c"},
                                                            conn_id="c")),
    # data of the wrong kind is no data
    (b'{"code":"200","msg":"ok","data":[1,2]}', TransferResult(code=200, msg="ok", conn_id=None)),
])
def test_lenient_success(body: bytes, expected: TransferResult) -> None:
    assert _answer(body, lambda b: b.transfer("1001", "1002")) == expected


def test_unknown_toggle_message_is_not_guessed() -> None:
    r = _answer(b'{"code":"200","msg":"En espera"}', lambda b: b.hold("1001"))
    assert isinstance(r, ToggleResult) and r.active is None


# --- the client depends on httpx and the standard library only -------------------------------------------------

CLIENT_SRC = Path(__file__).resolve().parents[2] / "src" / "callbridge" / "client"


def _foreign_imports(path: Path) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            own = name == "callbridge.client" or name.startswith("callbridge.client.")
            if not (own or top in ("httpx", "__future__") or top in sys.stdlib_module_names):
                bad.append(f"{path.name}: {name}")
    return bad


def test_client_imports_only_httpx_the_standard_library_and_itself() -> None:
    assert [bad for path in sorted(CLIENT_SRC.rglob("*.py")) for bad in _foreign_imports(path)] == []


def test_the_import_check_sees_a_violation(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("import json\nimport httpx\nfrom callbridge.http import contract\nimport starlette.routing\n")
    assert _foreign_imports(f) == ["x.py: callbridge.http", "x.py: starlette.routing"]
