"""Helpers of the HTTP tests: the REAL CallControlService, its ports faked in memory: a directory, records, and a
Signalling that records every request and answers actions the way a test says (the B2BUA's place)."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.applications import Starlette

from callbridge.callcontrol.model import ActivityCode, Agent, AuxState, DialPlan, Did, Operation, Queue, Token, Trunk
from callbridge.callcontrol.service import CallControlService
from callbridge.http.app import HttpSettings, create_app
from callbridge.http.auth import hash_token
from callbridge.http.events import EventLog
from callbridge.http.metrics import MetricsRegistry
from callbridge.http.webhooks import WebhookDispatcher

CALLCONTROL_TESTS = Path(__file__).resolve().parents[1] / "callcontrol"
if str(CALLCONTROL_TESTS) not in sys.path:  # callcontrol_fakes: the domain's in-memory ports, shared
    sys.path.insert(0, str(CALLCONTROL_TESTS))

from callcontrol_fakes import (  # noqa: E402
    OP,
    OTHER_OP,
    FakeSignalling,
    InMemoryDirectory,
    InMemoryRecalls,
    InMemoryRecords,
    InMemoryStates,
    counter_ids,
)

TOKEN = "tok-0042-main"
QUOTA_TOKEN = "tok-0042-quota"
OTHER_TOKEN = "tok-0077"
REVOKED_TOKEN = "tok-0042-revoked"
HEADERS = {"wolkvox-token": TOKEN, "wolkvox_server": OP}
BEARER = {"authorization": f"Bearer {TOKEN}"}
ENDPOINT = "/api/v2/agentbox.php"
DOC: dict[str, Any] = json.loads(resources.files("callbridge.http").joinpath("openapi.json").read_text("utf-8"))


class LoopScheduler:
    """The Scheduler port on the running asyncio loop."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)


class WallClock:
    def now(self) -> float:
        return time.time()


class AnsweringSignalling(FakeSignalling):
    """Records requests. Actions (hold, unhold, mute, unmute, dtmf, release with an action id) are answered on the
    next loop turn according to `answers[verb]`: "ok" (200), a status (refused), "silent" (never), "manual" (the
    test calls `answer`)."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, Any] = {}
        self.service: CallControlService | None = None
        self.unanswered: dict[str, str] = {}

    def _action(self, verb: str, action_id: str | None) -> None:
        if action_id is None:
            return
        how = self.answers.get(verb, "ok")
        if how == "silent":
            return
        if how == "manual":
            self.unanswered[action_id] = verb
            return
        ok = how == "ok"
        asyncio.get_running_loop().call_soon(self.answer, action_id, ok, 200 if ok else int(how))

    def answer(self, action_id: str, ok: bool = True, status: int | None = 200) -> None:
        self.unanswered.pop(action_id, None)
        assert self.service is not None
        self.service.on_action_result(action_id, ok, status)

    def hold(self, leg_id: str, action_id: str) -> None:
        super().hold(leg_id, action_id)
        self._action("hold", action_id)

    def unhold(self, leg_id: str, action_id: str) -> None:
        super().unhold(leg_id, action_id)
        self._action("unhold", action_id)

    def mute(self, leg_id: str, action_id: str) -> None:
        super().mute(leg_id, action_id)
        self._action("mute", action_id)

    def unmute(self, leg_id: str, action_id: str) -> None:
        super().unmute(leg_id, action_id)
        self._action("unmute", action_id)

    def send_dtmf(self, leg_id: str, tones: str, action_id: str) -> None:
        super().send_dtmf(leg_id, tones, action_id)
        self._action("dtmf", action_id)

    def release(self, leg_id: str, cause: int | None = None, action_id: str | None = None) -> None:
        super().release(leg_id, cause, action_id)
        self._action("hang", action_id)


@dataclass
class Records(InMemoryStates, InMemoryRecords, InMemoryRecalls):
    """StateRepository, CallRecordRepository and RecallRepository in one."""


class World:
    """Operation 0042 (agents 1001-1003, aux "2", codes 10/20, a trunk, DID 5550100) and operation 0077 (agent
    2001), the real service over the fakes, and the application built by `create_app`."""

    def __init__(self, *, settings: HttpSettings | None = None, webhooks: WebhookDispatcher | None = None,
                 gate_clock: Callable[[], float] | None = None, events: EventLog | None = None,
                 **op_settings: Any) -> None:
        self.signalling = AnsweringSignalling()
        self.directory = d = InMemoryDirectory()
        self.records = Records()
        self.events = events or EventLog()
        d.operations[OP] = Operation(OP, "op42.test", **({"time_zone": "America/Bogota", "default_queue": "sales",
                                                           "action_timeout": 5.0} | op_settings))
        d.operations[OTHER_OP] = Operation(OTHER_OP, "op77.test", default_queue="support")
        for ext in ("1001", "1002", "1003"):
            d.agents[(OP, ext)] = Agent(OP, ext, f"Agent {ext}", queues=("sales",))
        d.agents[(OTHER_OP, "2001")] = Agent(OTHER_OP, "2001", "Other", queues=("support",))
        d.queues[(OP, "sales")] = Queue(OP, "sales", max_wait_seconds=60.0)
        d.queues[(OTHER_OP, "support")] = Queue(OTHER_OP, "support", max_wait_seconds=60.0)
        d.aux[OP] = [AuxState(OP, "2", "Break")]
        d.codes[OP] = [ActivityCode(OP, 1, "10", "Sale"), ActivityCode(OP, 2, "20", "Callback")]
        d.trunks[OP] = [Trunk(OP, "carrier", "127.0.0.1", 5080,
                              dial_plan=DialPlan(allowed_patterns=(r"[0-9]{7,13}", r"\+57[0-9]{10}")))]
        d.trunks[OTHER_OP] = [Trunk(OTHER_OP, "carrier77", "127.0.0.1", 5081)]
        d.dids[(OP, "5550100")] = Did(OP, "5550100", "sales", "carrier")
        d.dids[(OTHER_OP, "5557700")] = Did(OTHER_OP, "5557700", "support", "carrier77")
        for plain, token in ((TOKEN, Token("t1", OP, hash_token(TOKEN))),
                             (QUOTA_TOKEN, Token("t2", OP, hash_token(QUOTA_TOKEN), daily_quota=3)),
                             (OTHER_TOKEN, Token("t3", OTHER_OP, hash_token(OTHER_TOKEN))),
                             (REVOKED_TOKEN, Token("t4", OP, hash_token(REVOKED_TOKEN), revoked=True))):
            d.tokens[hash_token(plain)] = token
        self.service = CallControlService(directory=d, states=self.records, records=self.records,
                                          recalls=self.records, signalling=self.signalling, events=self.events,
                                          clock=WallClock(), scheduler=LoopScheduler(), ids=counter_ids())
        self.signalling.service = self.service
        self.metrics = MetricsRegistry()
        gate = None
        if gate_clock is not None:
            from callbridge.http.auth import TokenGate
            gate = TokenGate(d, clock=gate_clock)
        self.app: Starlette = create_app(service=self.service, directory=d, events=self.events,
                                         metrics=self.metrics, settings=settings, webhooks=webhooks, gate=gate)
        self._customer_legs = itertools.count(1)

    # --- driving the domain as the B2BUA would

    def login(self, *extensions: str, op: str = OP) -> None:
        for ext in extensions:
            self.service.on_registration_changed(op, ext, True)
            self.service.change_status(op, ext, "ready")

    def connected_call(self, ext: str = "1001", number: str = "3001234567", op: str = OP,
                       did: str = "5550100") -> tuple[str, str, str]:
        """A customer talking with `ext` (who must be the only ready agent): (conn_id, customer leg, agent leg)."""
        leg = f"cust{next(self._customer_legs)}"
        conn_id = self.service.on_inbound_call(op, did, leg, number)
        agent_leg = self.signalling.last_originate(ext).leg_id
        self.service.on_leg_answered(agent_leg)
        assert self.service.get_call(op, conn_id).state == "connected"
        return conn_id, leg, agent_leg

    def footprint(self) -> tuple[int, ...]:
        """Everything a request could change; equal before and after = the request did nothing."""
        r = self.records
        return (len(self.signalling.requests), self.service.last_seq, len(r.changes), len(r.displays),
                len(r.calls), len(r.legs), len(r.cdrs), len(r.transfers), len(r.dispositions), len(r.recalls))


async def box(client: httpx.AsyncClient, api: str | None = None, headers: dict[str, str] | None = None,
              **params: str) -> httpx.Response:
    """POST to the agentbox endpoint the way Wolkvox documents it: parameters in the query, no body."""
    query = ({"api": api} if api is not None else {}) | params
    return await client.post(ENDPOINT, params=query, headers=HEADERS if headers is None else headers)


def envelope_bytes(code: int, error: str | None, msg: str, data: dict[str, str] | None = None) -> bytes:
    body: dict[str, Any] = {"code": str(code), "error": error, "msg": msg}
    if data is not None:
        body["data"] = data
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def assert_envelope(response: httpx.Response, code: int, error: str | None, msg: str,
                    data: dict[str, str] | None = None) -> None:
    assert (response.status_code, response.headers["content-type"], response.content) == (
        code, "application/json; charset=utf-8", envelope_bytes(code, error, msg, data))
    validate_response(ENDPOINT, "post", response)


# --- validation against the document ----------------------------------------------------------------------------

def validate_against_document(schema: dict[str, Any], instance: Any) -> None:
    base = "urn:callbridge:openapi"
    registry = Registry().with_resource(base, Resource({**DOC, "x-under-test": schema}, DRAFT202012))
    OAS31Validator({"$ref": f"{base}#/x-under-test"}, registry=registry).validate(instance)


def validate_response(path: str, method: str, response: httpx.Response) -> None:
    """The response's status, media type and body are what the document says for this operation."""
    responses = DOC["paths"][path][method]["responses"]
    spec = responses.get(str(response.status_code))
    assert spec is not None, f"{method.upper()} {path}: {response.status_code} is not in the document"
    media = response.headers["content-type"].split(";")[0].strip()
    content = spec.get("content", {})
    assert media in content, f"{media} is not documented for {response.status_code}"
    if media.endswith("json"):
        validate_against_document(content[media]["schema"], response.json())


# --- a real server on loopback ----------------------------------------------------------------------------------

class LiveServer:
    def __init__(self, app: Starlette) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", ws_ping_interval=20.0)
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveServer:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        for _ in range(500):
            if self.server.started:
                return self
            await asyncio.sleep(0.01)
        raise RuntimeError("uvicorn did not start")

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)
        self.sock.close()
