"""`callbridge agent ...` through the CLI runner, with the client's transport swapped for an httpx.MockTransport:
the exact request each command sends, the exact output and exit code of each answer, an unreachable server (a
closed loopback port) and bad flags."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator

import httpx
import pytest
from typer.testing import CliRunner

from callbridge.cli import agent as cli_agent
from callbridge.cli import app, common

TOKEN = "tok-0042-secret"
BASE = ["--url", "http://127.0.0.1:8080", "--token", TOKEN]


def envelope(code: int, msg: str, *, error: str | None = None, data: dict[str, object] | None = None) -> bytes:
    body: dict[str, object] = {"code": str(code), "error": error, "msg": msg}
    if data is not None:
        body["data"] = data
    return json.dumps(body).encode()


class Recorder:
    """The MockTransport's handler: answers ``status``/``body`` and keeps every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.status = 200
        self.body = envelope(200, "OK")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, content=self.body,
                              headers={"content-type": "application/json; charset=utf-8"})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    for name in ("CALLBRIDGE_URL", "CALLBRIDGE_TOKEN", "CALLBRIDGE_SERVER"):
        monkeypatch.delenv(name, raising=False)
    recorder = Recorder()
    monkeypatch.setattr(cli_agent, "TRANSPORT", httpx.MockTransport(recorder))
    yield recorder


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def assert_agentbox_request(request: httpx.Request, query: str, *, server: str | None = None,
                            token: str = TOKEN, scheme: str = "http", host: str = "127.0.0.1:8080") -> None:
    assert request.method == "POST"
    assert request.url.scheme == scheme
    assert request.url.netloc.decode() == host
    assert request.url.path == "/api/v2/agentbox.php"
    assert request.url.query.decode() == query
    assert request.headers["wolkvox-token"] == token
    assert request.headers.get("wolkvox_server") == server
    assert request.content == b""
    assert "content-type" not in request.headers
    assert "authorization" not in request.headers


# (argv after `agent`, the query string sent, the server's success envelope, stdout)
VERBS = [
    (["transfer", "1002", "--agent", "1001"], "api=transfer&agent_id=1001&customer_phone=1002",
     envelope(200, "Call has been transfer to 1002 number", data={"conn_id": "c-7f3a"}),
     "Call has been transfer to 1002 number\nconn_id: c-7f3a\n"),
    (["dial", "+573001234567", "--agent", "1001", "--customer-id", "CRM 9", "--customer-name", "Ana María"],
     "api=dial&agent_id=1001&customer_phone=%2B573001234567&customer_id=CRM%209&customer_name=Ana%20Mar%C3%ADa",
     envelope(200, "Call has been dialed to +573001234567", data={"conn_id": "c-1"}),
     "Call has been dialed to +573001234567\nconn_id: c-1\n"),
    (["dial", "0573001234567", "-a", "1001"], "api=dial&agent_id=1001&customer_phone=0573001234567",
     envelope(200, "Call has been dialed to 0573001234567", data={"conn_id": "c-2"}),
     "Call has been dialed to 0573001234567\nconn_id: c-2\n"),
    (["hang", "--agent", "1001"], "api=hang&agent_id=1001", envelope(200, "Call has been hung up"),
     "Call has been hung up\n"),
    (["hold", "--agent", "1001"], "api=hold&agent_id=1001", envelope(200, "Call has been put on hold"),
     "Call has been put on hold\n"),
    (["mute", "--agent", "1001"], "api=mute&agent_id=1001", envelope(200, "Microphone has been unmuted"),
     "Microphone has been unmuted\n"),
    (["status", "ready", "--agent", "1001"], "api=change_status&agent_id=1001&status=ready",
     envelope(200, "Agent status has been changed to ready"), "Agent status has been changed to ready\n"),
    (["type", "01", "7", "--agent", "1001", "--comments", "called back & done"],
     "api=type&agent_id=1001&cod_act=01&cod_act_2=7&comments=called%20back%20%26%20done",
     envelope(200, "Call has been typed"), "Call has been typed\n"),
    (["type", "1", "7", "--agent", "1001"], "api=type&agent_id=1001&cod_act=1&cod_act_2=7",
     envelope(200, "Call has been typed"), "Call has been typed\n"),
    (["hang-type-ready", "1", "--agent", "1001"], "api=hang_type_ready&agent_id=1001&cod_act=1",
     envelope(200, "Call has been hung up, typed and agent is ready"),
     "Call has been hung up, typed and agent is ready\n"),
    (["hang-type-ready", "1", "--agent", "1001", "--cod-act-2", "2", "--comments", "ok"],
     "api=hang_type_ready&agent_id=1001&cod_act=1&cod_act_2=2&comments=ok",
     envelope(200, "Call has been hung up, typed and agent is ready"),
     "Call has been hung up, typed and agent is ready\n"),
    (["dtmf", "12*#", "--agent", "1001"], "api=dtmf&agent_id=1001&tones=12%2A%23",
     envelope(200, "Tones have been sent", data={"tones": "12*#"}), "Tones have been sent\n"),
    (["display", "hide", "dial", "--agent", "1001"], "api=agent_display&agent_id=1001&display=hide&button=dial",
     envelope(200, "Display has been updated"), "Display has been updated\n"),
    (["recall", "0573001234567", "20250131143000", "--type", "auto", "--agent", "1001"],
     "api=recall&agent_id=1001&customer_phone=0573001234567&date=20250131143000&type_recall=auto",
     envelope(200, "Recall has been scheduled"), "Recall has been scheduled\n"),
    (["recall", "0573001234567", "2025-01-31T14:30:00", "--type", "manual", "--agent", "1001"],
     "api=recall&agent_id=1001&customer_phone=0573001234567&date=20250131143000&type_recall=manual",
     envelope(200, "Recall has been scheduled"), "Recall has been scheduled\n"),
    (["aux-call", "3001234567", "--agent", "1001"], "api=aux_call&agent_id=1001&customer_phone=3001234567",
     envelope(200, "Auxiliary call has been dialed to 3001234567", data={"conn_id": "c-9"}),
     "Auxiliary call has been dialed to 3001234567\nconn_id: c-9\n"),
]


@pytest.mark.parametrize(("argv", "query", "answer", "stdout"), VERBS, ids=[" ".join(v[0][:2]) for v in VERBS])
def test_each_verb_sends_the_documented_request_and_prints_the_message(
        server: Recorder, argv: list[str], query: str, answer: bytes, stdout: str) -> None:
    server.body = answer
    code, out, err = run("agent", *argv, *BASE)
    assert (code, out, err) == (0, stdout, "")
    assert len(server.requests) == 1
    assert_agentbox_request(server.requests[0], query)


def test_server_option_sends_the_wolkvox_server_header(server: Recorder) -> None:
    server.body = envelope(200, "Call has been hung up")
    code, _, _ = run("agent", "hang", "--agent", "1001", *BASE, "--server", "0042")
    assert code == 0
    assert_agentbox_request(server.requests[0], "api=hang&agent_id=1001", server="0042")


def test_url_token_and_server_from_the_environment(server: Recorder) -> None:
    server.body = envelope(200, "Call has been put on hold")
    env = {"CALLBRIDGE_URL": "https://127.0.0.2:9443", "CALLBRIDGE_TOKEN": "env-token",
           "CALLBRIDGE_SERVER": "0042"}
    code, out, err = run("agent", "hold", "--agent", "1001", env=env)
    assert (code, out, err) == (0, "Call has been put on hold\n", "")
    assert_agentbox_request(server.requests[0], "api=hold&agent_id=1001", server="0042", token="env-token",
                            scheme="https", host="127.0.0.2:9443")


def test_flags_win_over_the_environment(server: Recorder) -> None:
    env = {"CALLBRIDGE_URL": "http://127.0.0.9:1", "CALLBRIDGE_TOKEN": "env-token"}
    code, _, _ = run("agent", "hang", "--agent", "1001", *BASE, env=env)
    assert code == 0
    assert_agentbox_request(server.requests[0], "api=hang&agent_id=1001")


def test_json_success_prints_one_object(server: Recorder) -> None:
    server.body = envelope(200, "Call has been transfer to 1002 number", data={"conn_id": "c-7f3a"})
    code, out, err = run("agent", "transfer", "1002", "--agent", "1001", *BASE, "--json")
    assert (code, err) == (0, "")
    assert out.count("\n") == 1
    assert json.loads(out) == {"ok": True, "code": 200, "msg": "Call has been transfer to 1002 number",
                               "data": {"conn_id": "c-7f3a"}}


def test_lenient_success_without_data_and_with_a_numeric_code(server: Recorder) -> None:
    server.body = b'{"code": 200, "msg": "Transferred", "data": null}'
    code, out, err = run("agent", "transfer", "1002", "--agent", "1001", *BASE)
    assert (code, out, err) == (0, "Transferred\n", "")


# (status, envelope or raw body, the stderr line, the exit code)
ERRORS = [
    (400, envelope(400, "INVALID PARAMETER: tones", error="BAD REQUEST"),
     "error: 400 BAD REQUEST: INVALID PARAMETER: tones\n", 2),
    (400, envelope(400, "SOME PARAMETERS ARE REQUIRED", error="BAD REQUEST"),
     "error: 400 BAD REQUEST: SOME PARAMETERS ARE REQUIRED\n", 2),
    (401, envelope(401, "PLEASE ENTER THE WOLKVOX-TOKEN", error="UNAUTHORIZED"),
     "error: 401 UNAUTHORIZED: PLEASE ENTER THE WOLKVOX-TOKEN\n", 4),
    (403, envelope(403, "PLEASE VALIDATE TOKEN", error="FORBIDDEN"),
     "error: 403 FORBIDDEN: PLEASE VALIDATE TOKEN\n", 4),
    (403, envelope(403, "TOKEN LIMIT EXCEEDED", error="FORBIDDEN"), "error: 403 FORBIDDEN: TOKEN LIMIT EXCEEDED\n", 4),
    (404, envelope(404, "AGENT DOES NOT EXIST", error="NOT FOUND"), "error: 404 NOT FOUND: AGENT DOES NOT EXIST\n", 5),
    (409, envelope(409, "AGENT HAS NO ACTIVE CALL", error="CONFLICT"),
     "error: 409 CONFLICT: AGENT HAS NO ACTIVE CALL\n", 6),
    (409, envelope(409, "TRANSFER TARGET IS NOT AVAILABLE", error="CONFLICT"),
     "error: 409 CONFLICT: TRANSFER TARGET IS NOT AVAILABLE\n", 6),
    (409, envelope(409, "SOMETHING THE CLOUD SAYS", error="CONFLICT"),
     "error: 409 CONFLICT: SOMETHING THE CLOUD SAYS\n", 6),
    (405, envelope(405, "USE POST", error="METHOD NOT ALLOWED"), "error: 405 METHOD NOT ALLOWED: USE POST\n", 1),
    (503, envelope(503, "CALL CONTROL IS NOT AVAILABLE", error="SERVICE UNAVAILABLE"),
     "error: 503 SERVICE UNAVAILABLE: CALL CONTROL IS NOT AVAILABLE\n", 1),
    (502, b"<html>Bad Gateway</html>",
     "error: unexpected answer from http://127.0.0.1:8080 (HTTP 502): the answer is not JSON\n", 1),
]


@pytest.mark.parametrize(("status", "body", "line", "exit_code"), ERRORS, ids=[f"{e[0]}-{e[3]}" for e in ERRORS])
def test_each_error_class_is_one_line_and_its_exit_code(server: Recorder, status: int, body: bytes, line: str,
                                                        exit_code: int) -> None:
    server.status, server.body = status, body
    code, out, err = run("agent", "transfer", "1002", "--agent", "1001", *BASE)
    assert (code, out, err) == (exit_code, "", line)
    assert len(server.requests) == 1  # none of these is retried


def test_json_failure_prints_the_error_object_too(server: Recorder) -> None:
    server.status, server.body = 404, envelope(404, "AGENT DOES NOT EXIST", error="NOT FOUND")
    code, out, err = run("agent", "hang", "--agent", "9999", *BASE, "--json")
    assert (code, err) == (5, "error: 404 NOT FOUND: AGENT DOES NOT EXIST\n")
    assert json.loads(out) == {"ok": False, "exit_code": 5, "code": 404, "error": "NOT FOUND",
                               "msg": "AGENT DOES NOT EXIST", "key": "AGENT_NOT_FOUND"}


def test_no_token_is_a_token_error_and_sends_nothing(server: Recorder) -> None:
    code, out, err = run("agent", "hang", "--agent", "1001", "--url", "http://127.0.0.1:8080")
    assert (code, out, err) == (4, "", "error: no token: pass --token or set CALLBRIDGE_TOKEN\n")
    assert server.requests == []


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: bound then released, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_exit_3_and_one_line(monkeypatch: pytest.MonkeyPatch, closed_port: int) -> None:
    monkeypatch.setattr(cli_agent, "TRANSPORT", None)  # the real network, on loopback
    url = f"http://127.0.0.1:{closed_port}"
    code, out, err = run("agent", "hold", "--agent", "1001", "--url", url, "--token", TOKEN)
    assert (code, out) == (3, "")
    assert err.startswith(f"error: cannot reach {url}: ")
    assert "Connection refused" in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_unreachable_server_with_json(monkeypatch: pytest.MonkeyPatch, closed_port: int) -> None:
    monkeypatch.setattr(cli_agent, "TRANSPORT", None)
    code, out, err = run("agent", "hang", "--agent", "1001", "--url", f"http://127.0.0.1:{closed_port}",
                         "--token", TOKEN, "--json")
    assert code == 3
    payload = json.loads(out)
    assert payload["ok"] is False and payload["exit_code"] == 3 and payload["error"] == "UNREACHABLE"
    assert err.count("\n") == 1


def test_a_timeout_is_exit_3(server: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    monkeypatch.setattr(cli_agent, "TRANSPORT", httpx.MockTransport(slow))
    code, out, err = run("agent", "hang", "--agent", "1001", *BASE)
    assert (code, out, err) == (3, "", "error: http://127.0.0.1:8080 did not answer in time\n")


BAD_FLAGS: list[tuple[list[str], str]] = [
    (["agent", "hold", "--agent", "1001", "--bogus", *BASE],
     "error: No such option: --bogus (see 'root agent hold --help')\n"),
    (["agent", "hold", *BASE], "error: Missing option '--agent' / '-a'. (see 'root agent hold --help')\n"),
    (["agent", "transfer", "--agent", "1001", *BASE],
     "error: Missing argument 'number'. (see 'root agent transfer --help')\n"),
    (["agent", "hold", "--agent", "", *BASE],
     "error: Invalid value for '--agent' / '-a': must not be empty (see 'root agent hold --help')\n"),
    (["agent", "hold", "--agent", "1001", "--url", "ftp://127.0.0.1", "--token", TOKEN],
     "error: Invalid value for '--url' (env var: 'CALLBRIDGE_URL'): not an http(s) URL: 'ftp://127.0.0.1' "
     "(see 'root agent hold --help')\n"),
    (["agent", "hold", "--agent", "1001", "--url", "127.0.0.1:8080", "--token", TOKEN],
     "error: Invalid value for '--url' (env var: 'CALLBRIDGE_URL'): not an http(s) URL: '127.0.0.1:8080' "
     "(see 'root agent hold --help')\n"),
    (["agent", "recall", "1", "31/01/2025", "--type", "auto", "--agent", "1001", *BASE],
     "error: Invalid value for 'date': '31/01/2025' is neither YYYYmmddHHiiss nor an ISO 8601 time "
     "(see 'root agent recall --help')\n"),
    (["agent", "recall", "1", "20250131143000", "--agent", "1001", *BASE],
     "error: Missing option '--type'. Choose from: auto, manual (see 'root agent recall --help')\n"),
    (["agent", "frobnicate", "--agent", "1001"], "error: No such command 'frobnicate'. (see 'root agent --help')\n"),
]


@pytest.mark.parametrize(("argv", "line"), BAD_FLAGS, ids=[" ".join(b[0][:3]) for b in BAD_FLAGS])
def test_bad_flags_are_one_line_exit_2_and_send_nothing(server: Recorder, argv: list[str], line: str) -> None:
    code, out, err = run(*argv)
    assert (code, out, err) == (2, "", line)
    assert server.requests == []


@pytest.mark.parametrize("argv", [["agent", "display", "shw", "dial", "--agent", "1001", *BASE],
                                  ["agent", "display", "show", "hangup", "--agent", "1001", *BASE],
                                  ["agent", "recall", "1", "20250131143000", "--type", "soon", "--agent", "1001",
                                   *BASE]])
def test_bad_choices_are_one_line_exit_2(server: Recorder, argv: list[str]) -> None:
    code, out, err = run(*argv)
    assert (code, out) == (2, "")
    assert err.startswith("error: Invalid value for ")
    assert err.count("\n") == 1
    assert server.requests == []


def test_exit_code_table_covers_the_error_tree() -> None:
    from callbridge.client import errors

    expected: dict[type[errors.AgentboxError], int] = {
        errors.UnknownApi: 2, errors.MissingParameters: 2, errors.InvalidParameter: 2, errors.TokenMissing: 4,
        errors.InvalidToken: 4, errors.ConcurrencyLimit: 4, errors.TokenLimitExceeded: 4, errors.AgentNotFound: 5,
        errors.CallNotFound: 5, errors.TransferNotFound: 5, errors.MethodNotAllowed: 1, errors.NoActiveCall: 6,
        errors.TransferInProgress: 6, errors.IdempotencyKeyInUse: 6, errors.IdempotencyKeyReused: 6,
        errors.EventsExpired: 6, errors.ServerError: 1, errors.CallControlUnavailable: 1,
    }
    make: Callable[[type[errors.AgentboxError]], errors.AgentboxError] = lambda cls: cls(400, None, "x")  # noqa: E731
    assert {cls: common.exit_code_for(make(cls)) for cls in expected} == expected
    assert common.exit_code_for(errors.UnexpectedResponse(502, "<html>", "not JSON")) == 1
