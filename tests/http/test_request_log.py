"""One log line per API request (`callbridge.http.request_log`), in both formats of `callbridge.logs`: agentbox
requests (with their verb, agent and operation), native requests, event streams at their opening (NDJSON and
WebSocket, over a real uvicorn on loopback); `/health` and `/metrics` are not logged; no token, password or query
string ever reaches a line."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import websockets
from http_world import BEARER, ENDPOINT, HEADERS, OP, TOKEN, LiveServer, World
from websockets.exceptions import InvalidStatus

from callbridge.http.request_log import LOGGER_NAME, RequestLog, path_field
from callbridge.logs import JsonFormatter, TextFormatter

SECRET_PASSWORD = "s3cret-Passw0rd-9f2"


class Lines(logging.Handler):
    """Every record of the request logger, formatted by both of callbridge's formatters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.text: list[str] = []
        self.json: list[dict[str, object]] = []
        self._text, self._json = TextFormatter(), JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.text.append(self._text.format(record))
        self.json.append(json.loads(self._json.format(record)))


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger(LOGGER_NAME)
    handler = Lines()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def fields(line: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in line.items() if k not in ("ts", "duration_ms")}


async def test_agentbox_requests_one_line_each_with_verb_agent_operation_status(
        client: httpx.AsyncClient, world: World, lines: Lines) -> None:
    world.login("1001")
    ok = await client.post(ENDPOINT, params={"api": "change_status", "agent_id": "1001", "status": "2"},
                           headers=HEADERS)
    assert ok.status_code == 200
    missing = await client.post(ENDPOINT, params={"api": "hang", "agent_id": "1002"})  # no token: 401
    assert missing.status_code == 401
    unknown = await client.post(ENDPOINT, params={"api": "launch_rockets", "agent_id": "1001"}, headers=HEADERS)
    assert unknown.status_code == 400
    got = await client.get(ENDPOINT)
    assert got.status_code == 405
    assert [fields(line) for line in lines.json] == [
        {"level": "INFO", "logger": LOGGER_NAME, "message": "request", "method": "POST", "path": ENDPOINT,
         "api": "change_status", "agent": "1001", "operation": OP, "status": 200},
        {"level": "INFO", "logger": LOGGER_NAME, "message": "request", "method": "POST", "path": ENDPOINT,
         "api": "hang", "agent": "1002", "status": 401},  # refused before the token: no operation
        {"level": "INFO", "logger": LOGGER_NAME, "message": "request", "method": "POST", "path": ENDPOINT,
         "api": "unknown", "agent": "1001", "operation": OP, "status": 400},  # a verb it is not: not repeated
        {"level": "INFO", "logger": LOGGER_NAME, "message": "request", "method": "GET", "path": ENDPOINT,
         "status": 405},
    ]
    for line in lines.json:
        assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 5000
    first = lines.text[0]
    assert " INFO callbridge.http.requests: request method=POST path=/api/v2/agentbox.php api=change_status " \
           "operation=0042 agent=1001 status=200 duration_ms=" in first
    assert "\n" not in "".join(lines.text)


async def test_native_requests_and_the_ndjson_stream_opening(client: httpx.AsyncClient, world: World,
                                                             lines: Lines) -> None:
    assert (await client.get("/v2/agents/1002", headers=BEARER)).status_code == 200
    assert (await client.get("/v2/calls", params={"agent_id": "1003"}, headers=BEARER)).status_code == 200
    assert (await client.get("/v2/agents")).status_code == 401
    transfer = await client.post("/v2/transfers", json={"agent_id": "1001", "target": "1002"}, headers=BEARER)
    assert transfer.status_code == 409  # 1001 is not logged in
    stream = await client.get("/v2/events", params={"after": "0", "wait": "0"}, headers=BEARER)
    assert stream.status_code == 200
    assert (await client.get("/v2/events", params={"wait": "x"}, headers=BEARER)).status_code == 400
    assert [fields(line) for line in lines.json] == [
        {"level": "INFO", "logger": LOGGER_NAME, "message": "request", "method": "GET", "path": "/v2/agents/1002",
         "agent": "1002", "operation": OP, "status": 200},
        {"level": "INFO", "logger": LOGGER_NAME, "message": "request", "method": "GET", "path": "/v2/calls",
         "agent": "1003", "operation": OP, "status": 200},
        {"level": "INFO", "logger": LOGGER_NAME, "message": "request", "method": "GET", "path": "/v2/agents",
         "status": 401},
        {"level": "INFO", "logger": LOGGER_NAME, "message": "request", "method": "POST", "path": "/v2/transfers",
         "agent": "1001", "operation": OP, "status": 409},  # the agent of the body
        {"level": "INFO", "logger": LOGGER_NAME, "message": "request", "method": "GET", "path": "/v2/events",
         "operation": OP, "status": 200},
        {"level": "INFO", "logger": LOGGER_NAME, "message": "request", "method": "GET", "path": "/v2/events",
         "operation": OP, "status": 400},
    ]


async def test_health_and_metrics_are_not_logged_and_a_disabled_logger_logs_nothing(
        client: httpx.AsyncClient, lines: Lines) -> None:
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200
    assert lines.records == []
    logging.getLogger(LOGGER_NAME).setLevel(logging.WARNING)
    assert (await client.get("/v2/agents", headers=BEARER)).status_code == 200
    assert lines.records == []


async def test_no_token_password_or_query_reaches_a_line(client: httpx.AsyncClient, world: World,
                                                         lines: Lines) -> None:
    world.login("1001")
    await client.post(ENDPOINT, params={"api": "change_status", "agent_id": "1001", "status": "ready",
                                        "password": SECRET_PASSWORD}, headers=HEADERS)
    await client.post(ENDPOINT, params={"api": TOKEN, "agent_id": SECRET_PASSWORD}, headers=HEADERS)
    await client.post(ENDPOINT, content=f"api=dial&agent_id=1001&secret={SECRET_PASSWORD}",
                      headers={**HEADERS, "content-type": "application/x-www-form-urlencoded"})
    await client.get("/v2/agents", headers={"authorization": f"Bearer {SECRET_PASSWORD}"})
    await client.get("/v2/agents", headers={"authorization": f"Basic {TOKEN}"})
    await client.get(f"/v2/agents/{TOKEN}", headers=BEARER)
    await client.get("/v2/events", params={"wait": "0", "token": TOKEN}, headers=BEARER)
    assert len(lines.records) == 7
    logged = "\n".join(lines.text) + json.dumps(lines.json)
    assert SECRET_PASSWORD not in logged
    assert logged.count(TOKEN) == 2  # only where the client put it in the path itself (both formats, one line)
    assert [line.get("api") for line in lines.json[:3]] == ["change_status", "unknown", "dial"]
    assert [line.get("agent") for line in lines.json[:3]] == ["1001", "invalid", "1001"]
    assert "password=" not in logged and "?" not in logged


async def test_a_path_with_control_characters_stays_on_one_line(lines: Lines) -> None:
    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    middleware = RequestLog(app)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=middleware)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://callbridge.test") as client:
        response = await client.get("/x%0Aforged=1 status=200")
    assert response.status_code == 404
    [line] = lines.text
    assert " path=/x%0Aforged=1%20status=200 status=404 duration_ms=" in line  # as sent: percent-encoded
    assert line.count(" status=") == 1
    # a server that hands over a decoded path: escaped, still one line and one field
    assert path_field({"raw_path": b"/a\nb c\x7f", "path": "/ignored"}) == "/a\\nb\\x20c\\x7f"
    assert path_field({"path": "/v2/agents/1001"}) == "/v2/agents/1001"
    assert path_field({"raw_path": b"/" + b"a" * 300}) == "/" + "a" * 199


async def test_an_unhandled_failure_is_logged_as_500_at_warning(lines: Lines) -> None:
    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        raise RuntimeError("boom")

    transport = httpx.ASGITransport(app=RequestLog(app), raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://callbridge.test") as client:
        await client.get("/v2/agents")
    [record] = lines.records
    assert (record.levelname, lines.json[0]["status"]) == ("WARNING", 500)


async def test_websocket_openings_are_logged_once_without_the_subprotocol_token(lines: Lines) -> None:
    world = World()
    async with LiveServer(world.app) as server:
        url = f"ws://127.0.0.1:{server.port}/v2/events?after=0"
        async with websockets.connect(url, subprotocols=["callbridge.events.v2", f"bearer.{TOKEN}"]  # type: ignore[list-item]
                                      ) as ws:
            assert ws.subprotocol == "callbridge.events.v2"
            world.service.on_registration_changed(OP, "1001", True)
            world.service.change_status(OP, "1001", "ready")
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["seq"] == 1
        with pytest.raises(InvalidStatus):
            async with websockets.connect(url, additional_headers={"authorization": f"Bearer {SECRET_PASSWORD}"}):
                pass
        for _ in range(100):  # the server logs when it answers; the client may see the answer first
            if len(lines.records) == 2:
                break
            await asyncio.sleep(0.01)
    assert [fields(line) for line in lines.json] == [
        {"level": "INFO", "logger": LOGGER_NAME, "message": "request", "method": "WS", "path": "/v2/events",
         "operation": OP, "status": 101},
        {"level": "INFO", "logger": LOGGER_NAME, "message": "request", "method": "WS", "path": "/v2/events",
         "status": 403},
    ]
    logged = "\n".join(lines.text)
    assert TOKEN not in logged and SECRET_PASSWORD not in logged
