"""The application's own pages (/health, /metrics, /openapi.json), and a smoke test on a real uvicorn on a free
loopback port, driven the ways integrators drive Wolkvox: `callbridge.client.AgentboxClient`, `curl` and PHP's
cURL (POST with no body, both headers), moving a call."""

from __future__ import annotations

import asyncio
import json
import shutil

import httpx
import pytest
from http_world import ENDPOINT, OP, TOKEN, LiveServer, World, envelope_bytes

from callbridge.client import AgentboxClient, NoActiveCall
from callbridge.http.app import OPENAPI_DOCUMENT


async def test_health_metrics_and_the_document(client: httpx.AsyncClient, world: World) -> None:
    health = await client.get("/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    document = await client.get("/openapi.json")
    assert document.content == OPENAPI_DOCUMENT and document.json()["openapi"] == "3.1.0"
    assert document.headers["content-type"] == "application/json"
    await client.post(ENDPOINT, params={"api": "hang", "agent_id": "1001"}, headers={"wolkvox-token": TOKEN})
    await client.post(ENDPOINT, params={"api": "hang", "agent_id": "1001"})
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = metrics.text
    assert 'callbridge_agentbox_responses_total{status="409"} 1' in text
    assert 'callbridge_agentbox_responses_total{status="401"} 1' in text
    assert 'callbridge_agentbox_requests_total{api="hang"} 1' in text
    assert 'callbridge_agentbox_requests_total{api="-"} 1' in text  # refused before its parameters were read
    assert "callbridge_http_requests_in_flight 0" in text


async def test_health_reports_what_it_is_told() -> None:
    from callbridge.http.app import create_app
    world = World()
    app = create_app(service=world.service, directory=world.directory, events=world.events,
                     healthy=lambda: False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/health")
    assert (response.status_code, response.json()) == (503, {"status": "unavailable"})


PHP_TRANSFER = r"""
$ch = curl_init();
curl_setopt_array($ch, array(
  CURLOPT_URL => $argv[1] . '/api/v2/agentbox.php?api=transfer&agent_id=1001&customer_phone=3001234567',
  CURLOPT_RETURNTRANSFER => true,
  CURLOPT_ENCODING => '',
  CURLOPT_MAXREDIRS => 10,
  CURLOPT_TIMEOUT => 0,
  CURLOPT_FOLLOWLOCATION => true,
  CURLOPT_HTTP_VERSION => CURL_HTTP_VERSION_1_1,
  CURLOPT_CUSTOMREQUEST => 'POST',
  CURLOPT_HTTPHEADER => array(
    'wolkvox_server: 0042',
    'wolkvox-token: ' . $argv[2]
  ),
));
$response = curl_exec($ch);
echo curl_getinfo($ch, CURLINFO_HTTP_CODE) . "\n" . $response;
curl_close($ch);
"""


async def run(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode("utf-8")


@pytest.mark.skipif(not shutil.which("curl") or not shutil.which("php"), reason="curl and php come with setup")
async def test_smoke_on_uvicorn_with_the_python_client_curl_and_php() -> None:
    world = World()
    world.login("1001", "1002")
    async with LiveServer(world.app) as server:
        def python_client() -> tuple[str | None, bool]:
            with AgentboxClient(server.url, token=TOKEN, server=OP) as box:
                hold = box.hold("1001")
                try:
                    box.hang("1002")
                except NoActiveCall:
                    return hold.msg, False
                return hold.msg, True

        conn_id, _, _ = world.connected_call("1001")
        assert await asyncio.to_thread(python_client) == ("Call has been put on hold", False)
        # curl as Wolkvox's documentation writes it: POST, no body, both headers
        out = await run("curl", "-sS", "--location", "--request", "POST", "-w", "\n%{http_code}",
                        f"{server.url}{ENDPOINT}?api=hold&agent_id=1001",
                        "--header", f"wolkvox-token: {TOKEN}", "--header", "wolkvox_server: 0042")
        body, status = out.rsplit("\n", 1)
        assert (status, body.encode()) == ("200", envelope_bytes(200, None, "Call has been taken off hold"))
        # PHP cURL: CURLOPT_CUSTOMREQUEST 'POST' with no body, moving the call
        out = await run("php", "-r", PHP_TRANSFER, server.url, TOKEN)
        status, body = out.split("\n", 1)
        assert (status, json.loads(body)) == ("200", {"code": "200", "error": None,
                                                      "msg": "Call has been transfer to 3001234567 number",
                                                      "data": {"conn_id": conn_id}})
        assert body.encode() == envelope_bytes(200, None, "Call has been transfer to 3001234567 number",
                                               {"conn_id": conn_id})
        target = world.signalling.last_originate("3001234567")
        assert (target.kind, target.offerless, target.conn_id) == ("trunk", True, conn_id)
        out = await run("curl", "-sS", "-w", "\n%{http_code}", f"{server.url}{ENDPOINT}?api=hold&agent_id=1001",
                        "--header", f"wolkvox-token: {TOKEN}")
        assert out.rsplit("\n", 1) == [envelope_bytes(405, "METHOD NOT ALLOWED", "USE POST").decode(), "405"]
