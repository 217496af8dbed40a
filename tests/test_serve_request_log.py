"""`callbridge serve --log-format json` as a subprocess on loopback: every line on stderr is one JSON object
(uvicorn's own lines too), each API request is one line with its fields, and neither the token nor an agent's
password appears anywhere in the output."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))

from callnode import OP, load, operation_doc

pytestmark = [pytest.mark.timeout(60)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_logs_each_request_as_one_json_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    token = (await asyncio.to_thread(load, url, {**operation_doc(), "tokens": [{"label": "crm"}]}))[0]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbridge", "serve", "--sip-port", "0", "--http-port", str(port),
        "--database-url", url, "--log-format", "json", "--drain-seconds", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            for _ in range(300):
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("callbridge serve did not start")
            box = await client.post("/api/v2/agentbox.php", params={"api": "change_status", "agent_id": "1001",
                                                                    "status": "ready"},
                                    headers={"wolkvox-token": token, "wolkvox_server": OP})
            assert box.status_code == 409  # the agent's phone is not registered
            agents = await client.get("/v2/agents/1002", headers={"authorization": f"Bearer {token}"})
            assert agents.status_code == 200
            refused = await client.get("/v2/agents", headers={"authorization": "Bearer secret-1001"})
            assert refused.status_code == 403
            metrics = (await client.get("/metrics")).text
            assert "# TYPE callbridge_http_connections gauge\ncallbridge_http_connections 1\n" in metrics  # ours
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in err.decode().splitlines()]  # every line is JSON
    assert out == b""
    assert {"uvicorn.error", "callbridge.serve"} <= {line["logger"] for line in lines}
    requests = [{k: v for k, v in line.items() if k not in ("ts", "duration_ms")}
                for line in lines if line["logger"] == "callbridge.http.requests"]
    assert requests == [
        {"level": "INFO", "logger": "callbridge.http.requests", "message": "request", "method": "POST",
         "path": "/api/v2/agentbox.php", "api": "change_status", "operation": OP, "agent": "1001", "status": 409},
        {"level": "INFO", "logger": "callbridge.http.requests", "message": "request", "method": "GET",
         "path": "/v2/agents/1002", "operation": OP, "agent": "1002", "status": 200},
        {"level": "INFO", "logger": "callbridge.http.requests", "message": "request", "method": "GET",
         "path": "/v2/agents", "status": 403},
    ]
    text = err.decode()
    assert token not in text and "secret-1001" not in text
