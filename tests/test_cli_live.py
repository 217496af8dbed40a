"""`callbridge calls` and `callbridge events` through the CLI runner, with the native client's transport swapped
for an httpx.MockTransport: the requests sent, the exact table and event lines, resuming the stream from the last
seq, each error class, an unreachable server (a closed loopback port) and bad flags."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from typer.testing import CliRunner

from callbridge.cli import app
from callbridge.cli import live as cli_live

TOKEN = "tok-0042-secret"
BASE = ["--url", "http://127.0.0.1:8080", "--token", TOKEN]
NOW = datetime(2025, 1, 31, 14, 2, 7, tzinfo=UTC)

CALL = {"conn_id": "c-7f3a", "state": "talking", "direction": "inbound", "customer_number": "+573001234567",
        "agent_id": "1001", "queue": "support", "transfers": 1, "started_at": "2025-01-31T14:00:00.000Z",
        "answered_at": "2025-01-31T14:00:05.000Z", "ended_at": None}
AGENTS = [
    {"agent_id": "1001", "name": "Ana", "state": "talking", "aux_state": None, "registered": True,
     "conn_id": "c-7f3a", "on_hold": True, "muted": False, "display": {}, "state_since": "2025-01-31T14:00:05.000Z"},
    {"agent_id": "1002", "name": "Bruno", "state": "aux", "aux_state": "3", "registered": False, "conn_id": None,
     "on_hold": False, "muted": False, "display": {}, "state_since": "2025-01-31T12:30:00.000Z"},
]

TABLES = [
    "Calls (1)",
    "┏━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━┓",
    "┃ conn_id ┃ state   ┃ direction ┃ customer      ┃ agent ┃ queue   ┃ transfers ┃ duration ┃",
    "┡━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━┩",
    "│ c-7f3a  │ talking │ inbound   │ +573001234567 │ 1001  │ support │ 1         │ 2:07     │",
    "└─────────┴─────────┴───────────┴───────────────┴───────┴─────────┴───────────┴──────────┘",
    "Agents (2)",
    "┏━━━━━━━┳━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━┳━━━━━━━┳━━━━━━━━━┓",
    "┃ agent ┃ name  ┃ state   ┃ registered ┃ call   ┃ flags ┃ since   ┃",
    "┡━━━━━━━╇━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━╇━━━━━━━━━┩",
    "│ 1001  │ Ana   │ talking │ yes        │ c-7f3a │ hold  │ 2:02    │",
    "│ 1002  │ Bruno │ aux (3) │ no         │        │       │ 1:32:07 │",
    "└───────┴───────┴─────────┴────────────┴────────┴───────┴─────────┘",
]


def event(seq: int, kind: str, **data: object) -> dict[str, object]:
    return {"seq": seq, "type": kind, "at": f"2025-01-31T14:00:0{seq % 10}.250Z", "operation": "0042", "data": data}


def ndjson(*events: dict[str, object], keepalive: bool = False) -> bytes:
    lines = [json.dumps(e) for e in events]
    if keepalive:
        lines.insert(0, "")
    return ("\n".join(lines) + "\n").encode() if lines else b""


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Answers with ``handler`` and keeps every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.handler: Handler = lambda request: httpx.Response(500)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def targets(self) -> list[str]:
        return [f"{r.method} {r.url.path}?{r.url.query.decode()}".rstrip("?") for r in self.requests]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    for name in ("CALLBRIDGE_URL", "CALLBRIDGE_TOKEN", "CALLBRIDGE_SERVER"):
        monkeypatch.delenv(name, raising=False)
    recorder = Recorder()
    monkeypatch.setattr(cli_live, "TRANSPORT", httpx.MockTransport(recorder))
    monkeypatch.setattr(cli_live, "clock", lambda: NOW)
    yield recorder


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "120", **(env or {})})
    return result.exit_code, result.stdout, result.stderr


def problem(status: int, key: str, title: str, **extra: object) -> httpx.Response:
    body = {"type": f"urn:callbridge:problem:{key.lower()}", "title": title, "status": status, "error": key, **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def snapshot_handler(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v2/calls":
        return httpx.Response(200, json={"items": [CALL]})
    if request.url.path == "/v2/agents":
        return httpx.Response(200, json={"items": AGENTS})
    return httpx.Response(404)


def assert_native(request: httpx.Request, *, accept: str = "application/json") -> None:
    assert request.method == "GET"
    assert request.url.netloc.decode() == "127.0.0.1:8080"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == accept
    assert "wolkvox-token" not in request.headers
    assert request.content == b""


# ---- calls ---------------------------------------------------------------------------------------------------


def test_calls_once_prints_both_tables(server: Recorder) -> None:
    server.handler = snapshot_handler
    code, out, err = run("calls", "--once", *BASE)
    assert (code, err) == (0, "")
    assert [line.rstrip() for line in out.splitlines()] == TABLES
    assert server.targets() == ["GET /v2/calls?state=active", "GET /v2/agents"]
    for request in server.requests:
        assert_native(request)


def test_calls_once_json_is_what_the_api_returned(server: Recorder) -> None:
    server.handler = snapshot_handler
    code, out, err = run("calls", "--once", "--json", *BASE)
    assert (code, err) == (0, "")
    assert out.count("\n") == 1
    assert json.loads(out) == {"calls": [CALL], "agents": AGENTS}


def test_calls_refreshes_until_the_count(server: Recorder) -> None:
    server.handler = snapshot_handler
    code, out, err = run("calls", "--count", "2", "--interval", "0.2", *BASE)
    assert (code, err) == (0, "")
    assert [line.rstrip() for line in out.splitlines()] == TABLES * 2  # not a terminal: one after the other
    assert server.targets() == ["GET /v2/calls?state=active", "GET /v2/agents"] * 2


def test_calls_with_no_call_and_no_agent(server: Recorder) -> None:
    server.handler = lambda request: httpx.Response(200, json={"items": []})
    code, out, _ = run("calls", "--once", *BASE)
    assert code == 0
    lines = [line.rstrip() for line in out.splitlines()]
    assert lines[0] == "Calls (0)" and "Agents (0)" in lines and len(lines) == 10  # titles and headers only


@pytest.mark.parametrize(("response", "line", "exit_code"), [
    (problem(403, "INVALID_TOKEN", "PLEASE VALIDATE TOKEN"), "error: 403 PLEASE VALIDATE TOKEN\n", 4),
    (problem(401, "TOKEN_MISSING", "PLEASE ENTER THE WOLKVOX-TOKEN"), "error: 401 PLEASE ENTER THE WOLKVOX-TOKEN\n", 4),
    (problem(503, "CALL_CONTROL_UNAVAILABLE", "CALL CONTROL IS NOT AVAILABLE"),
     "error: 503 CALL CONTROL IS NOT AVAILABLE\n", 1),
    (httpx.Response(200, content=b"<html>"),
     "error: unexpected answer from http://127.0.0.1:8080 (HTTP 200): the answer is not JSON\n", 1),
])
def test_calls_errors(server: Recorder, response: httpx.Response, line: str, exit_code: int) -> None:
    server.handler = lambda request: response
    code, out, err = run("calls", "--once", *BASE)
    assert (code, out, err) == (exit_code, "", line)


def test_calls_without_a_token(server: Recorder) -> None:
    code, out, err = run("calls", "--once", "--url", "http://127.0.0.1:8080")
    assert (code, out, err) == (4, "", "error: no token: pass --token or set CALLBRIDGE_TOKEN\n")
    assert server.requests == []


def test_calls_ctrl_c_ends_cleanly(server: Recorder) -> None:
    def interrupted(request: httpx.Request) -> httpx.Response:
        raise KeyboardInterrupt

    server.handler = interrupted
    code, out, err = run("calls", *BASE)
    assert (code, out, err) == (0, "", "")


# ---- events --------------------------------------------------------------------------------------------------


def stream_handler(*responses: httpx.Response) -> Handler:
    """The probe answers empty; the stream requests get ``responses`` in turn, then empty ones."""
    queue = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("wait") == "0":
            return httpx.Response(200, content=b"", headers={"callbridge-last-seq": "5"})
        if queue:
            return queue.pop(0)
        return httpx.Response(200, content=b"", headers={"callbridge-last-seq": "99"})

    return handle


def test_events_from_now_one_line_each(server: Recorder) -> None:
    server.handler = stream_handler(httpx.Response(200, headers={"callbridge-last-seq": "5"}, content=ndjson(
        event(6, "call.offered", conn_id="c-1", agent_id="1001", direction="inbound",
              customer_number="+573001234567", queue=None),
        event(7, "agent.state_changed", agent_id="1002", state="aux", reason="lunch break"),
        keepalive=True)))
    code, out, err = run("events", "--count", "2", *BASE)
    assert (code, err) == (0, "")
    assert out == ("6 2025-01-31T14:00:06.250Z call.offered conn_id=c-1 agent_id=1001 direction=inbound "
                   "customer_number=+573001234567 queue=null\n"
                   '7 2025-01-31T14:00:07.250Z agent.state_changed agent_id=1002 state=aux reason="lunch break"\n')
    assert server.targets() == ["GET /v2/events?wait=0&limit=1", "GET /v2/events?wait=30.0"]
    assert_native(server.requests[0])
    assert_native(server.requests[1], accept="application/x-ndjson")


def test_events_after_with_types_as_ndjson(server: Recorder) -> None:
    sent = [event(6, "call.offered", conn_id="c-1"), event(9, "call.ended", conn_id="c-1", cause="normal")]
    server.handler = stream_handler(httpx.Response(200, content=ndjson(*sent)))
    code, out, err = run("events", "--after", "5", "--type", "call.offered", "--type", "call.ended", "--json",
                         "--count", "2", *BASE)
    assert (code, err) == (0, "")
    assert [json.loads(line) for line in out.splitlines()] == sent
    assert server.targets() == [
        "GET /v2/events?wait=0&limit=1&after=5&types=call.offered%2Ccall.ended",
        "GET /v2/events?wait=30.0&after=5&types=call.offered%2Ccall.ended",
    ]


def test_events_resume_from_the_last_seq_after_the_response_ends(server: Recorder) -> None:
    server.handler = stream_handler(
        httpx.Response(200, headers={"callbridge-last-seq": "5"}, content=ndjson(event(6, "call.answered"))),
        httpx.Response(200, content=ndjson(event(6, "call.answered"), event(7, "call.held"))),  # 6 again: skipped
    )
    code, out, err = run("events", "--count", "2", *BASE)
    assert (code, err) == (0, "")
    assert out == "6 2025-01-31T14:00:06.250Z call.answered\n7 2025-01-31T14:00:07.250Z call.held\n"
    assert server.targets() == ["GET /v2/events?wait=0&limit=1", "GET /v2/events?wait=30.0",
                                "GET /v2/events?wait=30.0&after=6"]


def test_events_resume_after_a_connection_cut_mid_line(server: Recorder) -> None:
    cut = ndjson(event(6, "call.answered")) + b'{"seq": 7, "ty'
    server.handler = stream_handler(httpx.Response(200, content=cut),
                                    httpx.Response(200, content=ndjson(event(7, "call.held"))))
    code, out, _ = run("events", "--after", "5", "--count", "2", *BASE)
    assert code == 0
    assert out == "6 2025-01-31T14:00:06.250Z call.answered\n7 2025-01-31T14:00:07.250Z call.held\n"
    assert server.targets()[1:] == ["GET /v2/events?wait=30.0&after=5", "GET /v2/events?wait=30.0&after=6"]


@pytest.mark.parametrize(("response", "line", "exit_code"), [
    (problem(410, "EVENTS_EXPIRED", "EVENTS BEFORE THE OLDEST KEPT ONE WERE DISCARDED", oldest_seq=120),
     "error: 410 EVENTS BEFORE THE OLDEST KEPT ONE WERE DISCARDED (the oldest kept is 120: --after 119 starts "
     "there)\n", 6),
    (problem(400, "INVALID_PARAMETER", "INVALID PARAMETER", detail="INVALID PARAMETER: types", parameter="types"),
     "error: 400 INVALID PARAMETER: INVALID PARAMETER: types\n", 2),
    (problem(403, "INVALID_TOKEN", "PLEASE VALIDATE TOKEN"), "error: 403 PLEASE VALIDATE TOKEN\n", 4),
])
def test_events_refused_at_the_probe(server: Recorder, response: httpx.Response, line: str, exit_code: int) -> None:
    server.handler = lambda request: response
    code, out, err = run("events", "--after", "1", *BASE)
    assert (code, out, err) == (exit_code, "", line)
    assert server.targets() == ["GET /v2/events?wait=0&limit=1&after=1"]  # refused before following the stream


def test_events_refused_later_by_the_stream(server: Recorder) -> None:
    server.handler = stream_handler(httpx.Response(200, content=ndjson(event(6, "call.answered"))),
                                    problem(403, "INVALID_TOKEN", "PLEASE VALIDATE TOKEN"))
    code, out, err = run("events", "--after", "5", *BASE)
    assert (code, out, err) == (4, "6 2025-01-31T14:00:06.250Z call.answered\n", "error: 403 PLEASE VALIDATE TOKEN\n")


# ---- unreachable servers and bad flags -----------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", [["calls", "--once"], ["calls"], ["events"], ["events", "--after", "0"]])
def test_unreachable_server(monkeypatch: pytest.MonkeyPatch, closed_port: int, command: list[str]) -> None:
    monkeypatch.setattr(cli_live, "TRANSPORT", None)  # the real network, on loopback
    url = f"http://127.0.0.1:{closed_port}"
    code, out, err = run(*command, "--url", url, "--token", TOKEN)
    assert (code, out) == (3, "")
    assert err.startswith(f"error: cannot reach {url}: ") and "Connection refused" in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(("argv", "line"), [
    (["calls", "--interval", "0", *BASE],
     "error: Invalid value for '--interval': Input should be greater than or equal to 0.2 (see 'root calls --help')\n"),
    (["calls", "--count", "-1", *BASE],
     "error: Invalid value for '--count': Input should be greater than or equal to 0 (see 'root calls --help')\n"),
    (["events", "--after", "soon", *BASE],
     "error: Invalid value for '--after': Input should be a valid integer, unable to parse string as an integer "
     "(see 'root events --help')\n"),
    (["events", "--follow", *BASE], "error: No such option: --follow (see 'root events --help')\n"),
    (["events", "--url", "http//127.0.0.1", "--token", TOKEN],
     "error: Invalid value for '--url' (env var: 'CALLBRIDGE_URL'): not an http(s) URL: 'http//127.0.0.1' "
     "(see 'root events --help')\n"),
])
def test_bad_flags(server: Recorder, argv: list[str], line: str) -> None:
    code, out, err = run(*argv)
    assert (code, out, err) == (2, "", line)
    assert server.requests == []
