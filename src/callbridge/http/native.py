"""The native API (`/v2/...`, `openapi.json`): transfers, agents and calls, with Bearer tokens and RFC 9457 errors.

Rules:
- Token: `Authorization: Bearer <token>` (the agentbox `wolkvox-token` header is accepted too), scoped to the
  token's operation: another operation's agent, call or transfer answers exactly as a missing one. The agentbox
  order of precedence holds: 401 → 403 token → 403 concurrency → 403 quota → 400 parameters → the service's own
  order → 503. The concurrency limit and the 60 s limit apply as on agentbox (the event stream is exempt; it lives
  in `streams.py`).
- Errors are `application/problem+json` built by `contract.problem` under the domain's `error_id` (the native API
  tells TRANSFER_LIMIT apart, which agentbox answers as TARGET_NOT_AVAILABLE).
- `POST /v2/transfers` with an `Idempotency-Key`: per token, for 24 hours, the same key with the same body answers
  the first 201 again (`Idempotency-Replayed: true`) and starts nothing; with another body 422
  IDEMPOTENCY_KEY_REUSED; while the first is still being answered 409 IDEMPOTENCY_KEY_IN_USE. Error answers are
  not stored: a retry after one is a new attempt.
- Calls, transfers and CDRs are read through `calls.CallReads`: the service's live state first, then the call
  records for what it no longer holds (an ended call, its legs, its transfer, its CDR, across restarts), in a worker
  thread. Listings page by an opaque `cursor` over a `from`/`to` range (`paging`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from starlette.requests import Request
from starlette.responses import Response

from callbridge.callcontrol.commands import CallView
from callbridge.callcontrol.errors import (
    CallControlError,
    CallNotFound,
    InvalidParameter,
    TransferFinished,
    TransferNotFound,
)
from callbridge.callcontrol.model import TransferRecord
from callbridge.callcontrol.service import CallControlService
from callbridge.http import contract
from callbridge.http.auth import Principal, Refused, TokenGate
from callbridge.http.calls import CallReads, CallsState
from callbridge.http.request_log import note
from callbridge.http.resources import agent_json, agent_state, call_json, transfer_json

if TYPE_CHECKING:
    from callbridge.http.events import EventLog
    from callbridge.storage.history import History

_log = logging.getLogger(__name__)

JSON_TYPE: Final = "application/json"
IDEMPOTENCY_TTL_S: Final = 24 * 3600.0
_EXTENSION = re.compile(r"[0-9]{1,32}")
_NUMBER = re.compile(r"\+?[0-9]{1,32}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_AGENT_STATES: Final = frozenset({"logout", "ready", "aux", "ringing", "on_call", "acw"})


class Problem(Exception):
    """An error answer of the native API, under a `contract.problem` key."""

    def __init__(self, key: str, *, parameter: str | None = None, headers: Mapping[str, str] | None = None,
                 **extensions: Any) -> None:
        super().__init__(key)
        self.key = key
        self.parameter = parameter
        self.headers = dict(headers or {})
        self.extensions = extensions


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
                    status_code=status, headers={"content-type": JSON_TYPE, **(headers or {})})


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    body = contract.problem(problem.key, parameter=problem.parameter, instance=instance, **problem.extensions)
    return Response(json.dumps(body, separators=(",", ":")).encode("utf-8"), status_code=body["status"],
                    headers={"content-type": contract.PROBLEM_CONTENT_TYPE, **problem.headers})


def refusal_problem(refused: Refused) -> Problem:
    if refused.key == "TOKEN_MISSING":
        return Problem("TOKEN_MISSING", headers={"www-authenticate": "Bearer"})
    if refused.key == "CONCURRENCY_LIMIT":
        return Problem("CONCURRENCY_LIMIT", detail=contract.concurrency_limit(refused.limit or 2).msg)
    return Problem(refused.key)


def bearer_token(request: Request) -> str | None:
    """The token of `Authorization: Bearer <token>`, else of the agentbox header, else None."""
    value = request.headers.get("authorization")
    if value is not None:
        scheme, _, token = value.strip().partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return request.headers.get(contract.TOKEN_HEADER)


def authenticate(gate: TokenGate, request: Request) -> Principal:
    """Raises Problem for a missing or refused token."""
    try:
        principal = gate.authenticate(bearer_token(request), request.headers.get(contract.SERVER_HEADER))
    except Refused as refused:
        raise refusal_problem(refused) from None
    note(request.scope, operation=principal.operation_id)
    return principal


def domain_problem(exc: CallControlError, *, parameter_names: Mapping[str, str] | None = None) -> Problem | None:
    if exc.error_id not in contract.PROBLEM_KEYS:
        return None
    parameter = None
    if isinstance(exc, InvalidParameter):
        parameter = (parameter_names or {}).get(exc.parameter, exc.parameter)
    if exc.error_id == "INVALID_PARAMETER":
        return Problem("INVALID_PARAMETER", parameter=parameter or "body")
    return Problem(exc.error_id, parameter=parameter)


@dataclass(slots=True)
class _Remembered:
    fingerprint: str
    expires: float
    response: tuple[int, bytes, dict[str, str]] | None = None  # None: the first request is still running


class IdempotencyStore:
    def __init__(self, *, ttl: float = IDEMPOTENCY_TTL_S, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Remembered] = OrderedDict()

    def _prune(self) -> None:
        now = self._clock()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                break
            del self._entries[key]

    def begin(self, scope: tuple[str, str], fingerprint: str) -> tuple[int, bytes, dict[str, str]] | None:
        """None: go on (the key is now in use); a stored response: replay it. Raises Problem."""
        self._prune()
        entry = self._entries.get(scope)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise Problem("IDEMPOTENCY_KEY_REUSED")
            if entry.response is None:
                raise Problem("IDEMPOTENCY_KEY_IN_USE")
            return entry.response
        self._entries[scope] = _Remembered(fingerprint, self._clock() + self.ttl)
        return None

    def finish(self, scope: tuple[str, str], response: tuple[int, bytes, dict[str, str]] | None) -> None:
        """Store a success; forget the key after an error (a retry is a new attempt)."""
        entry = self._entries.get(scope)
        if entry is None:
            return
        if response is None:
            del self._entries[scope]
        else:
            entry.response = response


class NativeApi:
    def __init__(self, service: CallControlService, gate: TokenGate, events: EventLog, *,
                 request_timeout: float = contract.REQUEST_TIMEOUT_S,
                 idempotency: IdempotencyStore | None = None, history: History | None = None) -> None:
        self._service = service
        self._gate = gate
        self._events = events
        self._reads = CallReads(service, history, events.ended_calls)
        self.reads = self._reads  # shared with the recordings' endpoints (recordings.py)
        self._timeout = request_timeout
        self.idempotency = idempotency or IdempotencyStore()

    async def _guarded(self, request: Request,
                       handler: Callable[[Principal, Request], Awaitable[Response]]) -> Response:
        try:
            principal = authenticate(self._gate, request)
            try:
                admission = await self._gate.enter(principal)
            except Refused as refused:
                raise refusal_problem(refused) from None
            with admission:
                async with asyncio.timeout(self._timeout):
                    return await handler(principal, request)
        except Problem as problem:
            return problem_response(problem)
        except CallControlError as exc:
            mapped = domain_problem(exc)
            if mapped is None:
                _log.exception("%s %s: unexpected domain error", request.method, request.url.path)
                return _internal_error()
            return problem_response(mapped)
        except TimeoutError:
            return problem_response(Problem("CALL_CONTROL_UNAVAILABLE"))

    async def guarded(self, request: Request,
                      handler: Callable[[Principal, Request], Awaitable[Response]]) -> Response:
        """A native request: the token, its limits and the error answers, around `handler`."""
        return await self._guarded(request, handler)

    # --- transfers --------------------------------------------------------------------------------------------

    def _transfer_body(self, record: TransferRecord) -> dict[str, Any]:
        ringing_at, answered_at = self._events.transfer_times(record.id)
        return transfer_json(record, ringing_at=ringing_at, answered_at=answered_at)

    async def create_transfer(self, request: Request) -> Response:
        return await self._guarded(request, self._create_transfer)

    async def _create_transfer(self, principal: Principal, request: Request) -> Response:
        raw = await request.body()
        key = request.headers.get("idempotency-key")
        if key is None:
            return self._start_transfer(principal, raw, request)
        if not 1 <= len(key) <= 255:
            raise Problem("INVALID_PARAMETER", parameter="Idempotency-Key")
        scope = (principal.token_hash, key)
        replay = self.idempotency.begin(scope, _fingerprint(raw))
        if replay is not None:
            status, body, headers = replay
            return Response(body, status_code=status, headers={**headers, "idempotency-replayed": "true"})
        stored: tuple[int, bytes, dict[str, str]] | None = None
        try:
            response = self._start_transfer(principal, raw, request)
            if response.status_code == 201:
                stored = (201, bytes(response.body), {"content-type": JSON_TYPE,
                                                      "location": response.headers["location"]})
            return response
        finally:
            self.idempotency.finish(scope, stored)

    def _start_transfer(self, principal: Principal, raw: bytes, request: Request) -> Response:
        body = json_object(raw)
        agent_id, target = body.get("agent_id"), body.get("target")
        if isinstance(agent_id, str):
            note(request.scope, agent=agent_id)  # the request's log line (checked there: digits or `invalid`)
        if agent_id in (None, "") or target in (None, ""):
            raise Problem("MISSING_PARAMETERS")
        if not isinstance(agent_id, str) or not _EXTENSION.fullmatch(agent_id):
            raise Problem("INVALID_PARAMETER", parameter="agent_id")
        if not isinstance(target, str) or not _NUMBER.fullmatch(target):
            raise Problem("INVALID_PARAMETER", parameter="target")
        kind = body.get("kind", "blind")
        if kind not in ("blind", "attended"):
            raise Problem("INVALID_PARAMETER", parameter="kind")
        timeout = body.get("timeout")
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)
                                    or not 1 <= timeout <= 300):
            raise Problem("INVALID_PARAMETER", parameter="timeout")
        try:
            record = self._service.start_transfer(principal.operation_id, agent_id, target,
                                                  kind="attended" if kind == "attended" else "blind",
                                                  timeout=None if timeout is None else float(timeout))
        except CallControlError as exc:
            problem = domain_problem(exc, parameter_names={"customer_phone": "target"})
            if problem is not None and problem.key == "TRANSFER_IN_PROGRESS":
                running = self._running_transfer(principal.operation_id, agent_id)
                if running is not None:
                    problem.extensions["transfer_id"] = running
            if problem is None:
                raise
            raise problem from None
        return json_response(self._transfer_body(record), 201, {"location": f"/v2/transfers/{record.id}"})

    def _running_transfer(self, operation_id: str, agent_id: str) -> str | None:
        try:
            conn_id = self._service.get_agent(operation_id, agent_id).conn_id
            return self._service.get_call(operation_id, conn_id).transfer_id if conn_id else None
        except CallControlError:
            return None

    async def _transfer_of(self, principal: Principal, transfer_id: str, *, running: bool = False) -> TransferRecord:
        """The operation's transfer, from the service or else the records; `running`: an attended one the service
        still runs (one only the records know has ended: TRANSFER_FINISHED, as one the service let go)."""
        if not _ID.fullmatch(transfer_id):
            raise TransferNotFound()
        record, held = await self._reads.transfer(principal.operation_id, transfer_id)
        if running and record.kind != "attended":
            raise Problem("NOT_ATTENDED")
        if running and not held:
            raise TransferFinished()
        return record

    async def get_transfer(self, request: Request) -> Response:
        async def run(principal: Principal, request: Request) -> Response:
            record = await self._transfer_of(principal, request.path_params["tid"])
            if self._events.knows_transfer(record.id) or not self._events.durable:
                return json_response(self._transfer_body(record))
            # one this process has not seen (a restart since): its times from its call's stored events
            try:
                call = await self._reads.call(principal.operation_id, record.conn_id)
            except CallNotFound:  # no record of its call: the times are unknown
                return json_response(self._transfer_body(record))
            ringing_at, answered_at = await self._events.transfer_times_of(
                principal.operation_id, record.id, record.conn_id, call.created_at, call.ended_at)
            return json_response(transfer_json(record, ringing_at=ringing_at, answered_at=answered_at))
        return await self._guarded(request, run)

    async def complete_transfer(self, request: Request) -> Response:
        async def run(principal: Principal, request: Request) -> Response:
            tid = request.path_params["tid"]
            await self._transfer_of(principal, tid, running=True)
            return json_response(self._transfer_body(self._service.complete_transfer(principal.operation_id, tid)))
        return await self._guarded(request, run)

    async def cancel_transfer(self, request: Request) -> Response:
        async def run(principal: Principal, request: Request) -> Response:
            tid = request.path_params["tid"]
            await self._transfer_of(principal, tid, running=True)
            return json_response(self._transfer_body(self._service.cancel_transfer(principal.operation_id, tid)))
        return await self._guarded(request, run)

    # --- agents -----------------------------------------------------------------------------------------------

    def _call_or_none(self, operation_id: str, conn_id: str | None) -> CallView | None:
        if conn_id is None:
            return None
        try:
            return self._service.get_call(operation_id, conn_id)
        except CallControlError:
            return None

    async def list_agents(self, request: Request) -> Response:
        async def run(principal: Principal, request: Request) -> Response:
            state = request.query_params.get("state")
            if state is not None and state not in _AGENT_STATES:
                raise Problem("INVALID_PARAMETER", parameter="state")
            op = principal.operation_id
            views = sorted(self._service.list_agents(op), key=lambda v: (int(v.extension), v.extension))
            items = [agent_json(v, self._call_or_none(op, v.conn_id)) for v in views
                     if state is None or agent_state(v.state)[0] == state]
            return json_response({"items": items})
        return await self._guarded(request, run)

    async def get_agent(self, request: Request) -> Response:
        async def run(principal: Principal, request: Request) -> Response:
            agent_id = request.path_params["agent_id"]
            if not _EXTENSION.fullmatch(agent_id):
                raise Problem("INVALID_PARAMETER", parameter="agent_id")
            view = self._service.get_agent(principal.operation_id, agent_id)
            return json_response(agent_json(view, self._call_or_none(principal.operation_id, view.conn_id)))
        return await self._guarded(request, run)

    # --- calls ------------------------------------------------------------------------------------------------

    async def list_calls(self, request: Request) -> Response:
        async def run(principal: Principal, request: Request) -> Response:
            query = request.query_params
            state = query.get("state", "active")
            if state not in ("active", "ended", "all"):
                raise Problem("INVALID_PARAMETER", parameter="state")
            agent_id = query.get("agent_id")
            if agent_id is not None and not _EXTENSION.fullmatch(agent_id):
                raise Problem("INVALID_PARAMETER", parameter="agent_id")
            scope = cast(CallsState, state)
            return json_response(await self._reads.list_calls(principal.operation_id, scope, agent_id, query))
        return await self._guarded(request, run)

    async def get_call(self, request: Request) -> Response:
        async def run(principal: Principal, request: Request) -> Response:
            conn_id = request.path_params["conn_id"]
            if not _ID.fullmatch(conn_id):
                raise Problem("CALL_NOT_FOUND")
            view = await self._reads.call(principal.operation_id, conn_id)
            history = [w.to_json() for w in await self._events.call_history(principal.operation_id, conn_id,
                                                                             view.created_at, view.ended_at)]
            return json_response(call_json(view, history))
        return await self._guarded(request, run)

    # --- CDRs -------------------------------------------------------------------------------------------------

    async def list_cdrs(self, request: Request) -> Response:
        async def run(principal: Principal, request: Request) -> Response:
            return json_response(await self._reads.list_cdrs(principal.operation_id, request.query_params))
        return await self._guarded(request, run)


def _internal_error() -> Response:
    body = {"type": "about:blank", "title": "INTERNAL SERVER ERROR", "status": 500}
    return Response(json.dumps(body).encode(), status_code=500, headers={"content-type": contract.PROBLEM_CONTENT_TYPE})


def json_object(raw: bytes) -> dict[str, Any]:
    """The request's JSON object: 400 MISSING_PARAMETERS for an empty body, INVALID_PARAMETER (`body`) for one that
    is not a JSON object."""
    if not raw.strip():
        raise Problem("MISSING_PARAMETERS")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Problem("INVALID_PARAMETER", parameter="body") from None
    if not isinstance(value, dict):
        raise Problem("INVALID_PARAMETER", parameter="body")
    return value


def _fingerprint(raw: bytes) -> str:
    """The same request: the same JSON (key order and spacing aside), else the same bytes."""
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode("utf-8")
    except (ValueError, UnicodeDecodeError):
        canonical = raw
    return hashlib.sha256(canonical).hexdigest()
