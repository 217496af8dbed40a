"""One log line per API request: an ASGI middleware around the application (`create_app` installs it).

Each agentbox request, native API request and event stream opening (NDJSON or WebSocket) is logged once, on the
`callbridge.http.requests` logger, as a record whose `extra` fields are those `callbridge.logs` prints (text:
`key=value` after the message; `--log-format json`: keys of the object):

    method      POST, GET... (WS for a WebSocket)
    path        the path as sent (percent-encoded, never the query string)
    api         the agentbox verb (`api=`), when the request names a known one; `unknown` when it names another
    agent       the agent's extension: `agent_id` of the query, of the path (`/v2/agents/{agent_id}`) or of a
                transfer's JSON body (`POST /v2/transfers`, noted by the endpoint)
    operation   the operation of the token, once the token was accepted
    status      the HTTP status answered (101 for an accepted WebSocket)
    duration_ms from the request's arrival to the end of the answer; for an event stream, to its opening (the
                stream then lasts as long as the consumer keeps it)

What is never logged: headers (so neither `wolkvox-token`, `Authorization` nor a WebSocket's `bearer.<token>`
subprotocol), the query string and bodies (so no form field), and no value the client chose except a known verb,
an extension's digits and the path; the path is cut at 200 characters and escaped when it holds anything but
printable ASCII, so one request is always one line.

`/health` and `/metrics` are not logged: a load balancer and a scraper ask them every few seconds. A status of 500
or more is logged at WARNING, anything else at INFO.

Cost (docs/design.md asks the hot path to stay cheap: bench/agentbox_http.py): when the logger is not enabled for
INFO, the middleware is a pass-through. Otherwise it adds a `send` wrapper, two `perf_counter` reads and one
record; the endpoints note what only they know (the operation, the verb and agent they already parsed) in a small
dict in the ASGI scope (`note`), so nothing is parsed twice.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import unquote

from callbridge.http import contract

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOGGER_NAME: Final = "callbridge.http.requests"
NOTES_KEY: Final = "callbridge.request_notes"
MESSAGE: Final = "request"
MAX_PATH: Final = 200
QUIET_PATHS: Final = frozenset({"/health", "/metrics"})
STREAM_PATH: Final = "/v2/events"
_EXTENSION = re.compile(r"[0-9]{1,32}")
_AGENT_PATH = re.compile(r"/v2/agents/([0-9]{1,32})")
_PRINTABLE_PATH = re.compile(r"[\x21-\x7e]*")

log = logging.getLogger(LOGGER_NAME)


def note(scope: Scope, **fields: str) -> None:
    """Tell the request's log line what the endpoint learnt (operation, api, agent); a no-op when not logged."""
    notes = scope.get(NOTES_KEY)
    if notes is not None:
        notes.update(fields)


def api_field(value: str | None) -> str | None:
    """The verb as logged: a known verb as is, anything else `unknown`, absent as absent."""
    if not value:
        return None
    return value if value in contract.VERBS else "unknown"


def agent_field(value: str | None) -> str | None:
    """An extension as logged: its digits, anything else `invalid`."""
    if not value:
        return None
    return value if _EXTENSION.fullmatch(value) else "invalid"


def path_field(scope: Scope) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) and raw else str(scope.get("path", ""))
    path = path.split("?", 1)[0][:MAX_PATH]
    if not _PRINTABLE_PATH.fullmatch(path):
        path = path.encode("unicode_escape").decode("ascii").replace(" ", "\\x20")
    return path


def _query_fields(query: bytes) -> dict[str, str]:
    """`api` and `agent_id` of a query string that the endpoint did not read (refused before its parameters)."""
    found: dict[str, str] = {}
    for field in query.decode("latin-1").split("&"):
        name, _, value = field.partition("=")
        if name in ("api", "agent_id") and name not in found:
            found[name] = unquote(value.replace("+", " "))
    return found


class RequestLog:
    """The middleware. `clock` is monotonic seconds (tests give their own)."""

    def __init__(self, app: ASGIApp, *, logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.app = app
        self.log = logger or log
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"] in QUIET_PATHS or not self.log.isEnabledFor(
                logging.INFO):
            await self.app(scope, receive, send)
            return
        started = self._clock()
        notes: dict[str, str] = {}
        scope[NOTES_KEY] = notes
        status = 0
        logged = False
        at_start = kind == "websocket" or scope["path"] == STREAM_PATH  # streams: logged when they open

        def emit(code: int) -> None:
            nonlocal logged
            logged = True
            self._emit(scope, notes, code, started)

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            mtype = message["type"]
            if mtype == "http.response.start" or mtype == "websocket.http.response.start":
                status = message["status"]
                if at_start and not logged:
                    emit(status)
            elif mtype == "websocket.accept":
                if not logged:
                    emit(101)
            elif mtype == "websocket.close" and not logged:
                emit(403)  # closed before accepting: the server answers the upgrade 403
            await send(message)
            if mtype == "http.response.body" and not message.get("more_body", False) and not logged:
                emit(status)

        try:
            await self.app(scope, receive, send_and_watch)
        except BaseException:
            if not logged:
                emit(status or 500)
            raise
        if not logged:  # the application returned without finishing an answer (a client gone mid-request)
            emit(status or 499)

    def _emit(self, scope: Scope, notes: dict[str, str], status: int, started: float) -> None:
        fields: dict[str, Any] = {"method": "WS" if scope["type"] == "websocket" else scope.get("method", "")}
        path = path_field(scope)
        fields["path"] = path
        api, agent = notes.get("api"), notes.get("agent")
        if api is None or agent is None:
            query = scope.get("query_string", b"")
            if query:
                parsed = _query_fields(query)
                if api is None and path == contract.ENDPOINT_PATH:
                    api = parsed.get("api")
                if agent is None:
                    agent = parsed.get("agent_id")
            if agent is None:
                match = _AGENT_PATH.fullmatch(path)
                agent = match.group(1) if match else None
        if path == contract.ENDPOINT_PATH and (api := api_field(api)) is not None:
            fields["api"] = api
        if (agent := agent_field(agent)) is not None:
            fields["agent"] = agent
        if "operation" in notes:
            fields["operation"] = notes["operation"]
        fields["status"] = status
        fields["duration_ms"] = round((self._clock() - started) * 1000.0, 2)
        level = logging.WARNING if status >= 500 else logging.INFO
        if self.log.isEnabledFor(level):
            # made here rather than by Logger.log, which walks the stack for the caller's file and line on every
            # record: a measurable share of an agentbox request, and always this line anyway
            self.log.handle(self.log.makeRecord(self.log.name, level, __file__, 0, MESSAGE, (), None,
                                                extra=fields))
