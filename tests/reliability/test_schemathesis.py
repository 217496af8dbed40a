"""schemathesis against `/openapi.json` of a running `callbridge serve`: every operation of the document, no 5xx,
every response as the document says (status code, content type, body schema).

The server is `callbridge serve` in a process of its own (bootstrap and uvicorn on free loopback ports, SQLite)
with callnode's operation loaded (agents 1001-1003, a trunk, a DID), an auxiliary state, activity codes and an API
token, which every generated request carries both ways the document allows (`Authorization: Bearer` and
`wolkvox-token`, with `wolkvox_server` naming the operation). Hypothesis generates the requests from the document.
The events stream (`GET /v2/events`) is asked to end within 0.1 s (`wait` capped at 0.1): its timing is not what
is tested here, and the document allows up to 300 s.

Bounded in CI: `CALLBRIDGE_SCHEMATHESIS_EXAMPLES` examples per operation (default 10). The longer run:

    CALLBRIDGE_SCHEMATHESIS_EXAMPLES=500 .venv/bin/python -m pytest tests/reliability/test_schemathesis.py
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))  # callnode: the operation document

from callnode import OP, load, operation_doc  # noqa: E402

from peers.ports import free_port  # noqa: E402

pytestmark = [pytest.mark.timeout(600)]

EXAMPLES = int(os.environ.get("CALLBRIDGE_SCHEMATHESIS_EXAMPLES", "10"))
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, API token) of a running `callbridge serve`."""
    workdir = tmp_path_factory.mktemp("schemathesis")
    db_url = f"sqlite:///{workdir / 'callbridge.db'}"
    doc = operation_doc()
    doc["operation"]["token_concurrency_limit"] = 10
    doc["aux_states"] = [{"id": "7", "name": "Lunch"}]
    doc["activity_codes"] = [{"group": 1, "code": "SALE", "name": "Sale"},
                             {"group": 2, "code": "NEW", "name": "New customer"}]
    doc["tokens"] = [{"label": "schemathesis"}]
    [token] = load(db_url, doc)
    http_port = free_port(udp=False)
    env = {**os.environ, "CALLBRIDGE_DATABASE_URL": db_url, "CALLBRIDGE_SIP_PORT": str(free_port()),
           "CALLBRIDGE_HTTP_PORT": str(http_port), "CALLBRIDGE_LOG_LEVEL": "WARNING",
           "CALLBRIDGE_DRAIN_SECONDS": "1"}
    log = workdir / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "callbridge", "serve"], env=env, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=1) as answer:
                if answer.status == 200:
                    break
            time.sleep(0.05)
        yield url, token
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        errors = [line for line in log.read_text().splitlines() if "Traceback" in line or " ERROR " in line]
        assert errors == [], log.read_text()[-5000:]


DOCUMENT = Path(__file__).resolve().parents[2] / "src" / "callbridge" / "http" / "openapi.json"
# The document the server serves (checked below); loaded from its file because the tests are generated at
# collection, before the server runs (schemathesis' `from_fixture` does not work with this pytest).
schema = schemathesis.openapi.from_path(str(DOCUMENT))


def test_the_server_serves_this_document(server: tuple[str, str]) -> None:
    url, _ = server
    with urllib.request.urlopen(f"{url}/openapi.json", timeout=5) as answer:
        assert json.loads(answer.read()) == json.loads(DOCUMENT.read_text())


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_api_matches_its_document(case: Any, server: tuple[str, str]) -> None:
    url, token = server
    if case.operation.path == "/v2/events" and case.method.upper() == "GET":
        query = dict(case.query or {})
        wait = query.get("wait")
        query["wait"] = min(float(wait), 0.1) if isinstance(wait, int | float) else 0.1
        case.query = query
    headers = {"Authorization": f"Bearer {token}", "wolkvox-token": token, "wolkvox_server": OP}
    case.call_and_validate(base_url=url, headers=headers, checks=CHECKS, timeout=15)
