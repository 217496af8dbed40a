"""`POST /api/v2/agentbox.php`: the Wolkvox agentbox contract (`docs/agentbox-contract.md`), byte for byte.

Order of the checks, the contract's "Which error wins" (first match):
  405 method → 401 no token → 403 invalid token / foreign `wolkvox_server` → 403 concurrency → 403 quota →
  400 unknown api → 400 missing parameter → 400 invalid parameter → (the service, in the same order:) 404 agent →
  409 not logged in → 409 call state → 409 transfer in progress → 409 target / 400 dial plan → 503 →
  409 CALL COULD NOT BE UPDATED (the SIP outcome of hang, hold, mute, dtmf, hang_type_ready).

Parameters come from the query string, or from an `application/x-www-form-urlencoded` body (a query parameter wins
over a form field of the same name; the first occurrence of a name wins). Unknown parameters are ignored. Every
parameter of the verb is checked against its format (`contract.PARAMETER_PATTERNS`, the document's lengths, no
control characters) before the service is called, so a `customer_phone` carrying letters, CR/LF or a `sip:` URI
never reaches the domain, let alone a SIP message.

A request runs at most `request_timeout` (60 s). Past it the answer is 503 CALL CONTROL IS NOT AVAILABLE: the only
awaits are on call control (the SIP outcome of an action), so a request that outlives the limit means call control
could not act in time, which is that row's meaning. Only the verbs that await a SIP outcome (hang, hold, mute, dtmf,
hang_type_ready) are coroutines, and only they run under the timer; the others are plain functions that cannot
wait, so they need no timer (one per request was a measurable share of change_status's cost). An unexpected
failure answers 500 INTERNAL SERVER ERROR with a message that says nothing of the server's internals.

Handlers are thin: parameters in, one service call, the envelope out; the dispatch table maps `api=` to them. What
the request's log line cannot read itself (the token's operation, the verb and agent already parsed) is noted for it
in the scope (`request_log.note`); `on_answer` gets each answer's verb, status and seconds for the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from callbridge.callcontrol.errors import CallControlError, InvalidParameter
from callbridge.callcontrol.service import CallControlService
from callbridge.http import contract
from callbridge.http.actions import ActionNotCompleted, ActionWaiter
from callbridge.http.auth import Refused, TokenGate
from callbridge.http.request_log import note

_log = logging.getLogger(__name__)

MAX_FORM_BYTES: Final = 64 * 1024
# The document's lengths for free-text parameters (openapi.json, the agentbox parameters).
MAX_LENGTHS: Final[Mapping[str, int]] = {
    "customer_id": 128, "customer_name": 128, "status": 64, "cod_act": 64, "cod_act_2": 64, "comments": 2000,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MULTILINE: Final = frozenset({"comments"})  # free text that may hold line breaks (never put in a SIP message)

Params = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A verb's success: the message and the `data` it documents."""

    msg: str
    data: Mapping[str, str] | None = None


# A handler that awaits call control returns an awaitable; one that cannot wait returns its Outcome at once.
Handler = Callable[[CallControlService, ActionWaiter, str, Params], Awaitable[Outcome] | Outcome]


def _opt(params: Params, name: str) -> str:
    return params.get(name, "")


# --- the twelve verbs ------------------------------------------------------------------------------------------

def _transfer(svc: CallControlService, _: ActionWaiter, op: str, p: Params) -> Outcome:
    record = svc.transfer(op, p["agent_id"], p["customer_phone"])
    return Outcome(contract.VERBS["transfer"].message(customer_phone=p["customer_phone"]),
                   {"conn_id": record.conn_id})


def _dial(svc: CallControlService, _: ActionWaiter, op: str, p: Params) -> Outcome:
    conn_id = svc.dial(op, p["agent_id"], p["customer_phone"], _opt(p, "customer_id"), _opt(p, "customer_name"))
    return Outcome(contract.VERBS["dial"].message(customer_phone=p["customer_phone"]), {"conn_id": conn_id})


async def _hang(svc: CallControlService, waiter: ActionWaiter, op: str, p: Params) -> Outcome:
    await waiter.wait(svc.hang(op, p["agent_id"]))
    return Outcome(contract.VERBS["hang"].message())


async def _hold(svc: CallControlService, waiter: ActionWaiter, op: str, p: Params) -> Outcome:
    ticket = svc.hold(op, p["agent_id"])
    await waiter.wait(ticket)
    return Outcome(contract.VERBS["hold"].message("on" if ticket.turning_on else "off"))


async def _mute(svc: CallControlService, waiter: ActionWaiter, op: str, p: Params) -> Outcome:
    ticket = svc.mute(op, p["agent_id"])
    await waiter.wait(ticket)
    return Outcome(contract.VERBS["mute"].message("on" if ticket.turning_on else "off"))


def _change_status(svc: CallControlService, _: ActionWaiter, op: str, p: Params) -> Outcome:
    svc.change_status(op, p["agent_id"], p["status"])
    return Outcome(contract.VERBS["change_status"].message(status=p["status"]))


def _type(svc: CallControlService, _: ActionWaiter, op: str, p: Params) -> Outcome:
    svc.type(op, p["agent_id"], p["cod_act"], p["cod_act_2"], _opt(p, "comments"))
    return Outcome(contract.VERBS["type"].message())


async def _hang_type_ready(svc: CallControlService, waiter: ActionWaiter, op: str, p: Params) -> Outcome:
    ticket = svc.hang_type_ready(op, p["agent_id"], p["cod_act"], _opt(p, "cod_act_2"), _opt(p, "comments"))
    await waiter.wait(ticket)
    return Outcome(contract.VERBS["hang_type_ready"].message())


async def _dtmf(svc: CallControlService, waiter: ActionWaiter, op: str, p: Params) -> Outcome:
    await waiter.wait(svc.dtmf(op, p["agent_id"], p["tones"]))
    return Outcome(contract.VERBS["dtmf"].message(), {"tones": p["tones"]})


def _aux_call(svc: CallControlService, _: ActionWaiter, op: str, p: Params) -> Outcome:
    conn_id = svc.aux_call(op, p["agent_id"], p["customer_phone"])
    return Outcome(contract.VERBS["aux_call"].message(customer_phone=p["customer_phone"]), {"conn_id": conn_id})


def _agent_display(svc: CallControlService, _: ActionWaiter, op: str, p: Params) -> Outcome:
    svc.agent_display(op, p["agent_id"], p["display"], p["button"])
    return Outcome(contract.VERBS["agent_display"].message())


def _recall(svc: CallControlService, _: ActionWaiter, op: str, p: Params) -> Outcome:
    svc.recall(op, p["agent_id"], p["customer_phone"], p["date"], p["type_recall"])
    return Outcome(contract.VERBS["recall"].message())


DISPATCH: Final[Mapping[str, Handler]] = {
    "transfer": _transfer, "dial": _dial, "hang": _hang, "hold": _hold, "mute": _mute,
    "change_status": _change_status, "type": _type, "hang_type_ready": _hang_type_ready, "dtmf": _dtmf,
    "aux_call": _aux_call, "agent_display": _agent_display, "recall": _recall,
}
assert set(DISPATCH) == set(contract.VERBS), "every verb of the contract has a handler"


# --- parameters ------------------------------------------------------------------------------------------------

class _ParameterError(Exception):
    def __init__(self, row: contract.ErrorRow) -> None:
        super().__init__(row.key)
        self.row = row


ParameterError = _ParameterError  # what the desk's handlers catch around `verb_parameters`


def parameter_problem(name: str, value: str) -> bool:
    """Whether `value` is malformed for parameter `name` (format, length, control characters)."""
    if not contract.parameter_is_well_formed(name, value):
        return True
    limit = MAX_LENGTHS.get(name)
    if limit is not None and len(value) > limit:
        return True
    return name not in _MULTILINE and _CONTROL.search(value) is not None


def verb_parameters(verb: contract.Verb, raw: Mapping[str, str]) -> dict[str, str]:
    """The verb's parameters, checked in the contract's order: missing (400) before malformed (400)."""
    if any(not raw.get(name) for name in verb.required):
        raise _ParameterError(contract.error("MISSING_PARAMETERS"))
    params = {name: raw[name] for name in verb.parameters if raw.get(name)}
    for name, value in params.items():
        if parameter_problem(name, value):
            raise _ParameterError(contract.invalid_parameter(name))
    return params


def _first(pairs: list[tuple[str, str]], into: dict[str, str]) -> None:
    for name, value in pairs:
        into.setdefault(name, value)


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """`urllib.parse.parse_qsl(text, keep_blank_values=True)`, without its generic argument handling: `&`
    separates, a field without `=` has an empty value, `+` is a space, %-escapes are UTF-8 (bad bytes replaced)."""
    pairs: list[tuple[str, str]] = []
    for field in text.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "+" in value:
            value = value.replace("+", " ")
        pairs.append((unquote(name) if "%" in name else name, unquote(value) if "%" in value else value))
    return pairs


_CONTENT_TYPE: Final = b"content-type"
_TOKEN_HEADER: Final = contract.TOKEN_HEADER.encode("latin-1")
_SERVER_HEADER: Final = contract.SERVER_HEADER.encode("latin-1")


def request_headers(scope: Mapping[str, Any]) -> tuple[str | None, str | None, str]:
    """(token, wolkvox_server, content-type) in one pass over the ASGI headers (names arrive lower-cased; the
    first occurrence of a name wins, as with Starlette's `request.headers.get`)."""
    token: str | None = None
    server: str | None = None
    content_type: str | None = None
    for name, value in scope.get("headers", ()):
        if name == _TOKEN_HEADER:
            if token is None:
                token = value.decode("latin-1")
        elif name == _SERVER_HEADER:
            if server is None:
                server = value.decode("latin-1")
        elif name == _CONTENT_TYPE and content_type is None:
            content_type = value.decode("latin-1")
    return token, server, content_type or ""


async def read_parameters(scope: Scope, receive: Receive, content_type: str) -> dict[str, str]:
    """Query string first; then a form body's fields that the query does not have."""
    raw: dict[str, str] = {}
    # The raw query string (a URL object would be built for nothing); undecodable bytes are replaced, as in a
    # form body, and then fail the parameter checks.
    query: bytes = scope.get("query_string", b"")
    if query:
        _first(parse_pairs(query.decode("utf-8", "replace")), raw)
    if content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
        body = await Request(scope, receive).body()
        if len(body) <= MAX_FORM_BYTES:
            _first(parse_pairs(body.decode("utf-8", "replace")), raw)
    return raw


# --- the endpoint ----------------------------------------------------------------------------------------------

_BODY_CACHE_SIZE = 1024  # envelopes without data: the error rows and the messages of the verbs' successes
_bodies: dict[tuple[int, str], bytes] = {}
_answers: dict[tuple[int, str], Answer] = {}
_CONTENT_TYPE_VALUE: Final = contract.CONTENT_TYPE.encode("latin-1")


def envelope_body(status: int, msg: str, data: Mapping[str, Any] | None = None) -> bytes:
    """The rendered envelope; one without `data` is rendered once and kept (a full cache starts over)."""
    if data is not None:
        return contract.render(contract.envelope(status, msg, data))
    body = _bodies.get((status, msg))
    if body is None:
        if len(_bodies) >= _BODY_CACHE_SIZE:
            _bodies.clear()
        body = _bodies[(status, msg)] = contract.render(contract.envelope(status, msg))
    return body


@dataclass(frozen=True, slots=True)
class Answer:
    """An envelope answer as its two ASGI messages' contents: the same status, headers (content-type, the extra
    ones, content-length: the order Starlette's `Response` gives them) and body as `envelope_response`."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": list(self.headers)})
        await send({"type": "http.response.body", "body": self.body})


def envelope_answer(status: int, msg: str, data: Mapping[str, Any] | None = None,
                    headers: Mapping[str, str] | None = None) -> Answer:
    """`envelope_response` as an `Answer`; one without `data` or headers (every success of change_status, type,
    aux_call's siblings, every error row) is built once and kept, like its body."""
    if data is None and headers is None:
        answer = _answers.get((status, msg))
        if answer is None:
            if len(_answers) >= _BODY_CACHE_SIZE:
                _answers.clear()
            answer = _answers[(status, msg)] = _answer(status, envelope_body(status, msg), None)
        return answer
    return _answer(status, envelope_body(status, msg, data), headers)


def _answer(status: int, body: bytes, headers: Mapping[str, str] | None) -> Answer:
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return Answer(status, ((b"content-type", _CONTENT_TYPE_VALUE), *extra,
                           (b"content-length", str(len(body)).encode("latin-1"))), body)


def row_answer(row: contract.ErrorRow, headers: Mapping[str, str] | None = None) -> Answer:
    return envelope_answer(row.status, row.msg, headers=headers)


def envelope_response(status: int, msg: str, data: Mapping[str, Any] | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
    body = envelope_body(status, msg, data)
    return Response(body, status_code=status, media_type=None,
                    headers={"content-type": contract.CONTENT_TYPE, **(headers or {})})


def row_response(row: contract.ErrorRow, headers: Mapping[str, str] | None = None) -> Response:
    return envelope_response(row.status, row.msg, headers=headers)


def refusal_row(refused: Refused) -> contract.ErrorRow:
    if refused.key == "CONCURRENCY_LIMIT":
        return contract.concurrency_limit(refused.limit or contract.DEFAULT_CONCURRENCY)
    return contract.error(refused.key)


def domain_row(exc: CallControlError) -> contract.ErrorRow | None:
    if exc.error_id not in contract.ERROR_IDS:
        return None
    parameter = exc.parameter if isinstance(exc, InvalidParameter) else None
    return contract.row_for_error_id(exc.error_id, parameter=parameter)


class AgentboxEndpoint:
    """The ASGI application of the endpoint's route; one instance per application, its dependencies given.

    A plain ASGI callable rather than a Starlette `request -> Response` endpoint: the request is read from the
    scope (a `Request` is made only to read a form body) and the answer is sent as its two messages, most of them
    built once (`envelope_answer`). Starlette's wrapping of a request endpoint (its `Request`, the exception
    wrapper around the call, the `Response` and its headers) was a measurable share of change_status
    (bench/agentbox_inprocess.py); the errors it handled reach the same middleware as before (an exception here
    propagates to Starlette's `ServerErrorMiddleware`, a 500), and the bytes on the wire are the same."""

    def __init__(self, service: CallControlService, gate: TokenGate, waiter: ActionWaiter, *,
                 request_timeout: float = contract.REQUEST_TIMEOUT_S,
                 on_answer: Callable[[str, int, float], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._service = service
        self._gate = gate
        self._waiter = waiter
        self._timeout = request_timeout
        self._on_answer = on_answer  # (verb or "-", status, seconds taken): the metrics
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = self._clock()
        api = "-"
        response: Answer
        if scope["method"] != "POST":
            response = row_answer(contract.error("METHOD_NOT_ALLOWED"), {"allow": "POST"})
        else:
            try:
                token, server, content_type = request_headers(scope)
                principal = self._gate.authenticate(token, server)
                note(scope, operation=principal.operation_id)
                admission = await self._gate.enter(principal)
            except Refused as refused:
                response = row_answer(refusal_row(refused))
            else:
                with admission:
                    raw = await read_parameters(scope, receive, content_type)
                    api = raw.get("api", "")
                    note(scope, api=api, agent=raw.get("agent_id", ""))
                    response = await self._run(principal.operation_id, api, raw)
        if self._on_answer is not None:
            self._on_answer(api if api in DISPATCH else "-", response.status, self._clock() - started)
        await response.send(send)

    async def _run(self, operation_id: str, api: str, raw: Mapping[str, str]) -> Answer:
        verb = contract.VERBS.get(api)
        handler = DISPATCH.get(api)
        if verb is None or handler is None:
            return row_answer(contract.error("UNKNOWN_API"))
        try:
            params = verb_parameters(verb, raw)
            result = handler(self._service, self._waiter, operation_id, params)
            if isinstance(result, Outcome):
                outcome = result
            else:  # it awaits call control: the request's time limit applies
                async with asyncio.timeout(self._timeout):
                    outcome = await result
        except _ParameterError as exc:
            return row_answer(exc.row)
        except ActionNotCompleted as exc:
            known = exc.error_id in ("CALL_NOT_UPDATED", "CALL_CONTROL_UNAVAILABLE")
            key = exc.error_id if known else "CALL_NOT_UPDATED"
            return row_answer(contract.error(key))
        except CallControlError as exc:
            row = domain_row(exc)
            if row is None:
                _log.exception("api=%s: unexpected domain error", api)
                return envelope_answer(500, "INTERNAL SERVER ERROR")
            return row_answer(row)
        except TimeoutError:
            return row_answer(contract.error("CALL_CONTROL_UNAVAILABLE"))
        except Exception:
            _log.exception("api=%s failed", api)
            return envelope_answer(500, "INTERNAL SERVER ERROR")
        return envelope_answer(200, outcome.msg, outcome.data)
