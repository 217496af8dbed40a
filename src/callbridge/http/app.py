"""The HTTP application: the agentbox endpoint, the native API, the event streams, `/health`, `/metrics`,
`/openapi.json` and its human-readable rendering at `/docs`, over explicit dependencies (no globals). `callbridge
serve` runs it on uvicorn. Every request but `/health` and `/metrics` is logged once (`request_log`).

    app = create_app(service=service, directory=directory, events=event_log, metrics=registry,
                     settings=HttpSettings(), webhooks=WebhookDispatcher(targets))

`events` must be the EventSink the service was built with: `create_app` attaches the service to it (the log
reads the service's state to build each event's `data`) and feeds it the action waiter and the webhooks. The
webhook tasks start and stop with the application's lifespan; streams end at shutdown.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from callbridge.callcontrol.service import CallControlService
from callbridge.http import contract
from callbridge.http.actions import ActionWaiter
from callbridge.http.agentbox import AgentboxEndpoint
from callbridge.http.auth import TokenDirectory, TokenGate
from callbridge.http.desk_common import DeskConfig
from callbridge.http.desk_pages import desk_routes
from callbridge.http.events import EventLog
from callbridge.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from callbridge.http.metrics import Histogram, MetricsRegistry
from callbridge.http.monitor import MonitorApi
from callbridge.http.native import IdempotencyStore, NativeApi
from callbridge.http.operation_metrics import register_operation_metrics
from callbridge.http.recordings import RecordingsApi
from callbridge.http.request_log import RequestLog
from callbridge.http.streams import EventStreams
from callbridge.http.webhooks import WebhookDispatcher
from callbridge.storage.history import History

_EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_METHODS = frozenset(_EVERY_METHOD)
_PACKAGE = resources.files("callbridge.http")
OPENAPI_DOCUMENT: bytes = _PACKAGE.joinpath("openapi.json").read_bytes()
DOCS_PAGE: bytes = _PACKAGE.joinpath("docs.html").read_bytes()
DOCS_SCRIPT: bytes = _PACKAGE.joinpath("docs.js").read_bytes()
DOCS_PATH = "/docs"
DOCS_SCRIPT_PATH = "/docs/docs.js"
# The page and its script come from this server only, and so does the document they read.
_DOCS_POLICY = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'"


@dataclass(frozen=True, slots=True)
class HttpSettings:
    request_timeout: float = contract.REQUEST_TIMEOUT_S  # no request runs longer (agentbox and native)
    action_timeout: float = 5.0  # hang/hold/mute/dtmf wait this long for the SIP final response
    stream_keepalive: float = 15.0  # a blank NDJSON line after this much silence
    idempotency_ttl: float = 24 * 3600.0  # how long an Idempotency-Key's first answer is replayed


def _json(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body).encode("utf-8"), status_code=status, media_type="application/json")


class EndpointFirst:
    """Middleware: the agentbox endpoint's requests go straight to it, past Starlette's exception middleware and
    router (what the route table would do for them: the endpoint is an ASGI app that raises no HTTPException and
    its route, the first of the table, takes every method it is sent). Everything else, and any request under a
    `root_path` (where the router's own path arithmetic applies), goes through the application as before. It sits
    inside the request log and Starlette's server-error middleware, so logging and the 500 of an unexpected
    exception are unchanged. Why: the router's matching and the exception middleware's wrappers were a
    measurable share of change_status's CPU (bench/agentbox_inprocess.py)."""

    def __init__(self, app: ASGIApp, *, path: str, endpoint: ASGIApp) -> None:
        self.app = app
        self._path = path
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["path"] == self._path and scope["method"] in _METHODS
                and not scope.get("root_path")):
            await self._endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(*, service: CallControlService, directory: TokenDirectory, events: EventLog,
               metrics: MetricsRegistry | None = None, settings: HttpSettings | None = None,
               webhooks: WebhookDispatcher | None = None, gate: TokenGate | None = None,
               healthy: Callable[[], bool] | None = None, history: History | None = None,
               desk: DeskConfig | None = None) -> Starlette:
    """The Starlette application.

    - `service`: the call-control service (its EventSink must be `events`).
    - `directory`: where tokens (by SHA-256 hex) and operations are read; the storage directory.
    - `events`: the event log (ring buffer, streams' source).
    - `metrics`: the registry `/metrics` renders; the HTTP layer adds its own numbers to it.
    - `settings`: limits (60 s per request, 5 s per SIP action...).
    - `webhooks`: signed deliveries of the events; started and stopped with the application.
    - `gate`: token checks, concurrency and quota (built over `directory` when not given).
    - `healthy`: what `/health` reports (default: up while the process runs).
    - `history`: the call records (ended calls, legs, transfers, CDRs) the native API reads what the service no
      longer holds from; None: the service's memory only, and `/v2/cdrs` lists nothing.
    """
    settings = settings or HttpSettings()
    gate = gate or TokenGate(directory)
    registry = metrics or MetricsRegistry()
    events.attach(service)
    waiter = ActionWaiter(service.action_outcome, limit=settings.action_timeout)
    events.add_listener(waiter.on_event)
    if webhooks is not None:
        events.add_wire_listener(webhooks.on_event)

    by_status: Counter[str] = Counter()
    by_api: Counter[str] = Counter()

    latency = registry.histogram("callbridge_agentbox_request_duration_seconds",
                                 "agentbox requests: seconds from the request to its answer, by verb",
                                 Histogram("api"))

    def answered(api: str, status: int, seconds: float) -> None:
        by_status[str(status)] += 1
        by_api[api] += 1
        latency.observe(api, seconds)

    agentbox = AgentboxEndpoint(service, gate, waiter, request_timeout=settings.request_timeout,
                                on_answer=answered)
    native = NativeApi(service, gate, events, request_timeout=settings.request_timeout,
                       idempotency=IdempotencyStore(ttl=settings.idempotency_ttl), history=history)
    streams = EventStreams(gate, events, keepalive=settings.stream_keepalive)
    recordings = RecordingsApi(service, native.reads, history, native.guarded)
    monitor = MonitorApi(service, native.reads, native.guarded)

    registry.counter("callbridge_agentbox_responses_total", "agentbox answers by HTTP status",
                     lambda: dict(by_status), label="status")
    registry.counter("callbridge_agentbox_requests_total", "agentbox requests by verb", lambda: dict(by_api),
                     label="api")
    registry.gauge("callbridge_http_requests_in_flight", "requests holding a token slot", gate.total_in_flight)
    registry.gauge("callbridge_action_waiters", "requests waiting for a SIP final response",
                   lambda: waiter.waiting)
    registry.counter("callbridge_events_published_total", "wire events published", lambda: events.published)
    registry.gauge("callbridge_event_streams", "open event streams, by transport", lambda: {
        "http": streams.open_streams - streams.open_websockets, "websocket": streams.open_websockets},
        label="transport")
    if webhooks is not None:
        hooks = webhooks
        registry.counter("callbridge_webhook_deliveries_total", "webhook requests by result", lambda: {
            "delivered": hooks.stats.delivered, "retried": hooks.stats.retries, "given_up": hooks.stats.given_up,
            "dropped": hooks.stats.dropped}, label="result")
        registry.gauge("callbridge_webhook_pending", "events waiting for delivery", hooks.pending)
    register_operation_metrics(registry, service)

    async def health(request: Request) -> Response:
        ok = healthy() if healthy is not None else True
        return _json({"status": "ok" if ok else "unavailable"}, 200 if ok else 503)

    async def metrics_page(request: Request) -> Response:
        return Response(registry.render().encode("utf-8"), headers={"content-type": METRICS_CONTENT_TYPE})

    async def openapi(request: Request) -> Response:
        return Response(OPENAPI_DOCUMENT, media_type="application/json")

    async def docs_page(request: Request) -> Response:
        return Response(DOCS_PAGE, headers={"content-type": "text/html; charset=utf-8",
                                            "content-security-policy": _DOCS_POLICY})

    async def docs_script(request: Request) -> Response:
        return Response(DOCS_SCRIPT, headers={"content-type": "text/javascript; charset=utf-8"})

    routes: list[BaseRoute] = [
        Route(contract.ENDPOINT_PATH, agentbox, methods=_EVERY_METHOD),  # ASGI; anything but POST: 405
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route(DOCS_PATH, docs_page, methods=["GET"]),
        Route(DOCS_SCRIPT_PATH, docs_script, methods=["GET"]),
        Route("/v2/transfers", native.create_transfer, methods=["POST"]),
        Route("/v2/transfers/{tid}", native.get_transfer, methods=["GET"]),
        Route("/v2/transfers/{tid}", native.cancel_transfer, methods=["DELETE"]),
        Route("/v2/transfers/{tid}/complete", native.complete_transfer, methods=["PUT"]),
        Route("/v2/agents", native.list_agents, methods=["GET"]),
        Route("/v2/agents/{agent_id}", native.get_agent, methods=["GET"]),
        Route("/v2/calls", native.list_calls, methods=["GET"]),
        Route("/v2/calls/{conn_id}", native.get_call, methods=["GET"]),
        Route("/v2/cdrs", native.list_cdrs, methods=["GET"]),
        Route("/v2/calls/{conn_id}/recording", recordings.get_recording, methods=["GET"]),
        Route("/v2/calls/{conn_id}/recording", recordings.start_recording, methods=["POST"]),
        Route("/v2/calls/{conn_id}/recording", recordings.stop_recording, methods=["DELETE"]),
        Route("/v2/calls/{conn_id}/recording", recordings.pause_recording, methods=["PATCH"]),
        Route("/v2/recordings", recordings.list_recordings, methods=["GET"]),
        Route("/v2/calls/{conn_id}/monitor", monitor.start, methods=["POST"]),
        Route("/v2/calls/{conn_id}/monitor", monitor.state, methods=["GET"]),
        Route("/v2/calls/{conn_id}/monitor", monitor.stop, methods=["DELETE"]),
        Route("/v2/events", streams.http, methods=["GET"]),
        WebSocketRoute("/v2/events", streams.websocket),
    ]

    hub = None
    if desk is not None:
        desk_list, hub = desk_routes(service, waiter, desk, request_timeout=settings.request_timeout)
        routes.extend(desk_list)
        events.add_listener(hub.on_domain_event)
        desk_hub = hub
        registry.gauge("callbridge_desk_sockets", "open live sockets of the agent's page and the board",
                       lambda: desk_hub.open_sockets)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if webhooks is not None:
            await webhooks.start()
        if hub is not None:
            hub.reopen()
        try:
            yield
        finally:
            streams.shutdown()
            if hub is not None:
                hub.shutdown()
            if webhooks is not None:
                await webhooks.stop()

    app = Starlette(routes=routes, lifespan=lifespan, middleware=[
        Middleware(RequestLog), Middleware(EndpointFirst, path=contract.ENDPOINT_PATH, endpoint=agentbox)])
    app.state.gate = gate
    app.state.waiter = waiter
    app.state.streams = streams
    app.state.native = native
    app.state.desk = hub
    return app
