"""The agent's page's server side: sign-in and sign-out, and `/agent/api/...`, the buttons of the page.

Rules (docs/operations.md, "The agent's page"):
- Sign-in takes the operation (its id or its SIP domain), the extension and the SIP password, and checks the
  password the way the registrar does: SHA-256(extension:realm:password) against the stored HA1 (RFC 7616
  §3.4.2), in constant time. A wrong password, an unknown extension and an unknown operation answer exactly the
  same 401, with the same work done, and each counts as a failure of the source address (the SIP defence's
  counting); a banned source gets 429 before any check.
- Every button acts through the same `CallControlService` methods as the agentbox verbs, with the agentbox's
  parameter checks (`agentbox.verb_parameters`), and ONLY on the signed-in agent: the agent is the session's, no
  request names one (an `agent_id` sent anyway is ignored), and attended transfer's complete/cancel act on the
  transfer of the agent's own call. Errors answer with the contract's row for the domain's `error_id`.
- Verbs that wait for a SIP outcome (hang, hold, mute, dtmf, hang_type_ready) answer when it comes, within the
  request's time limit, like the agentbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from callbridge.callcontrol.errors import CallControlError, NotFound
from callbridge.callcontrol.service import CallControlService
from callbridge.http import contract
from callbridge.http.actions import ActionNotCompleted, ActionWaiter
from callbridge.http.agentbox import ParameterError, verb_parameters
from callbridge.http.desk_common import (
    BadRequest,
    DeskConfig,
    answer,
    domain_error,
    find_operation,
    read_fields,
    refuse,
)
from callbridge.http.desk_sessions import Session, SessionTable
from callbridge.http.desk_signin import NOT_SIGNED_IN, read_sign_in, sign_out, signed_in
from callbridge.http.resources import agent_json, call_state, rfc3339, rfc3339_or_none

WRONG_SIGN_IN = "Wrong operation, extension or password."
_DUMMY_HA1 = "0" * 64


def ha1_sha256(user: str, realm: str, password: str) -> str:
    return hashlib.sha256(f"{user}:{realm}:{password}".encode()).hexdigest()


def agent_snapshot(service: CallControlService, operation_id: str, extension: str) -> dict[str, Any]:
    """What the page shows: the agent (state, time in it, buttons) and its live call with its transfer."""
    view = service.get_agent(operation_id, extension)
    call = None
    if view.conn_id is not None:
        try:
            call = service.get_call(operation_id, view.conn_id)
        except NotFound:
            call = None
    body: dict[str, Any] = {"now": rfc3339(time.time()), "agent": agent_json(view, call), "call": None}
    if call is not None:
        transfer = None
        if call.transfer_id is not None:
            try:
                record = service.get_transfer(operation_id, call.transfer_id)
                transfer = {"id": record.id, "kind": record.kind, "target": record.target, "state": record.state}
            except NotFound:
                transfer = None
        body["call"] = {
            "conn_id": call.conn_id, "customer_number": call.customer_number, "queue": call.queue,
            "direction": call.direction, "state": call_state(call), "held": call.held, "muted": call.muted,
            "started_at": rfc3339(call.created_at), "answered_at": rfc3339_or_none(call.answered_at),
            "transfer": transfer,
        }
    return body


Action = Callable[[CallControlService, ActionWaiter, str, str, dict[str, str]], Awaitable[dict[str, Any]]]


async def _outcome(waiter: ActionWaiter, ticket: Any) -> None:
    await waiter.wait(ticket)


def _checked(verb: str, agent: str, fields: Mapping[str, str]) -> dict[str, str]:
    """The agentbox's checks of the verb's parameters, the agent being the session's whatever was sent."""
    raw = {k: v for k, v in fields.items() if k != "agent_id"}
    raw["agent_id"] = agent
    return verb_parameters(contract.VERBS[verb], raw)


async def _state(svc: CallControlService, _: ActionWaiter, op: str, me: str, f: dict[str, str]) -> dict[str, Any]:
    p = _checked("change_status", me, f)
    svc.change_status(op, me, p["status"])
    return {"message": contract.VERBS["change_status"].message(status=p["status"])}


async def _hang(svc: CallControlService, waiter: ActionWaiter, op: str, me: str, f: dict[str, str]) -> dict[str, Any]:
    await _outcome(waiter, svc.hang(op, me))
    return {"message": contract.VERBS["hang"].message()}


async def _hold(svc: CallControlService, waiter: ActionWaiter, op: str, me: str, f: dict[str, str]) -> dict[str, Any]:
    ticket = svc.hold(op, me)
    await _outcome(waiter, ticket)
    return {"message": contract.VERBS["hold"].message("on" if ticket.turning_on else "off")}


async def _mute(svc: CallControlService, waiter: ActionWaiter, op: str, me: str, f: dict[str, str]) -> dict[str, Any]:
    ticket = svc.mute(op, me)
    await _outcome(waiter, ticket)
    return {"message": contract.VERBS["mute"].message("on" if ticket.turning_on else "off")}


async def _dtmf(svc: CallControlService, waiter: ActionWaiter, op: str, me: str, f: dict[str, str]) -> dict[str, Any]:
    p = _checked("dtmf", me, f)
    await _outcome(waiter, svc.dtmf(op, me, p["tones"]))
    return {"message": contract.VERBS["dtmf"].message(), "tones": p["tones"]}


async def _transfer(svc: CallControlService, _: ActionWaiter, op: str, me: str,
                    f: dict[str, str]) -> dict[str, Any]:
    p = _checked("transfer", me, {"customer_phone": f.get("target", "")})
    record = svc.transfer(op, me, p["customer_phone"])
    return {"message": contract.VERBS["transfer"].message(customer_phone=p["customer_phone"]),
            "conn_id": record.conn_id, "transfer_id": record.id}


async def _attended(svc: CallControlService, _: ActionWaiter, op: str, me: str,
                    f: dict[str, str]) -> dict[str, Any]:
    p = _checked("transfer", me, {"customer_phone": f.get("target", "")})
    record = svc.start_transfer(op, me, p["customer_phone"], kind="attended")
    return {"message": f"Consulting {p['customer_phone']}", "conn_id": record.conn_id, "transfer_id": record.id}


def _my_transfer(svc: CallControlService, op: str, me: str) -> str:
    """The transfer of the agent's own call: the only one its page may complete or cancel."""
    view = svc.get_agent(op, me)
    call = svc.get_call(op, view.conn_id) if view.conn_id is not None else None
    if call is None or call.transfer_id is None:
        raise _NoTransfer()
    return call.transfer_id


class _NoTransfer(Exception):
    pass


async def _complete(svc: CallControlService, _: ActionWaiter, op: str, me: str,
                    f: dict[str, str]) -> dict[str, Any]:
    record = svc.complete_transfer(op, _my_transfer(svc, op, me))
    return {"message": "Transfer completed", "transfer_id": record.id}


async def _cancel(svc: CallControlService, _: ActionWaiter, op: str, me: str, f: dict[str, str]) -> dict[str, Any]:
    record = svc.cancel_transfer(op, _my_transfer(svc, op, me))
    return {"message": "Transfer cancelled", "transfer_id": record.id}


async def _disposition(svc: CallControlService, _: ActionWaiter, op: str, me: str,
                       f: dict[str, str]) -> dict[str, Any]:
    p = _checked("type", me, f)
    svc.type(op, me, p["cod_act"], p["cod_act_2"], p.get("comments", ""))
    return {"message": contract.VERBS["type"].message()}


async def _recall(svc: CallControlService, _: ActionWaiter, op: str, me: str, f: dict[str, str]) -> dict[str, Any]:
    p = _checked("recall", me, f)
    svc.recall(op, me, p["customer_phone"], p["date"], p["type_recall"])
    return {"message": contract.VERBS["recall"].message()}


ACTIONS: Mapping[str, Action] = {
    "state": _state, "hang": _hang, "hold": _hold, "mute": _mute, "dtmf": _dtmf, "transfer": _transfer,
    "attended": _attended, "attended/complete": _complete, "attended/cancel": _cancel,
    "disposition": _disposition, "recall": _recall,
}


class AgentDesk:
    """The handlers; one instance per application."""

    def __init__(self, service: CallControlService, waiter: ActionWaiter, sessions: SessionTable,
                 config: DeskConfig, *, request_timeout: float = contract.REQUEST_TIMEOUT_S) -> None:
        self._service = service
        self._waiter = waiter
        self._sessions = sessions
        self._config = config
        self._timeout = request_timeout
        self._clock = config.clock or time.monotonic

    # --- sign-in ------------------------------------------------------------------------------------------------
    async def sign_in(self, request: Request) -> Response:
        form = await read_sign_in(request, self._config, self._clock, ("operation", "extension", "password"))
        if isinstance(form, Response):
            return form
        fields, directory = form.fields, self._config.directory
        operation = find_operation(directory, fields["operation"])
        agent = directory.get_agent(operation.id, fields["extension"]) if operation is not None else None
        realm = operation.digest_realm if operation is not None else "unknown.invalid"
        given = ha1_sha256(fields["extension"], realm, fields["password"])  # the same work, known or not
        stored = agent.ha1_sha256 if agent is not None and agent.ha1_sha256 else _DUMMY_HA1
        if not hmac.compare_digest(given, stored) or agent is None or operation is None:
            return form.wrong(WRONG_SIGN_IN)
        session = self._sessions.create("agent", operation.id, agent.extension, agent.name)
        return signed_in(request, self._sessions, session, self._describe(session))

    async def sign_out(self, request: Request) -> Response:
        return sign_out(request, self._sessions, "agent")

    def _describe(self, session: Session) -> dict[str, Any]:
        """What the page needs to run: who, where SIP.js connects, the operation's states and codes."""
        op, me = session.operation_id, session.user
        directory = self._config.directory
        operation = directory.get_operation(op)
        sip = None
        if self._config.sip_ws is not None and operation is not None:
            host, port = self._config.sip_ws
            sip = {"ws_host": host, "ws_port": port, "wss": self._config.sip_wss,
                   "uri": f"sip:{me}@{operation.sip_domain}", "username": me, "realm": operation.digest_realm}
        return {
            "operation": {"id": op, "name": operation.name if operation else "",
                          "sip_domain": operation.sip_domain if operation else ""},
            "agent": {"extension": me, "name": session.name},
            "sip": sip,
            "aux_states": [{"id": a.id, "name": a.name} for a in directory.list_aux_states(op)],
            "activity_codes": [{"group": c.group, "code": c.code, "name": c.name}
                               for c in directory.list_activity_codes(op)],
        }

    # --- the API ------------------------------------------------------------------------------------------------
    async def session_info(self, request: Request) -> Response:
        session = self._sessions.session_of(request, "agent")
        if session is None:
            return refuse(NOT_SIGNED_IN, 401, "NOT_SIGNED_IN")
        try:
            snapshot = agent_snapshot(self._service, session.operation_id, session.user)
        except CallControlError as exc:
            return domain_error(exc)
        return answer({"ok": True, **self._describe(session), "snapshot": snapshot})

    async def available_agents(self, request: Request) -> Response:
        """Agents of the operation available now (registered and ready), for the transfer picker."""
        session = self._sessions.session_of(request, "agent")
        if session is None:
            return refuse(NOT_SIGNED_IN, 401, "NOT_SIGNED_IN")
        agents = [{"extension": a.extension, "name": a.name}
                  for a in self._service.list_agents(session.operation_id)
                  if a.available and a.extension != session.user]
        return answer({"ok": True, "agents": agents})

    async def act(self, request: Request) -> Response:
        session = self._sessions.session_of(request, "agent")
        if session is None:
            return refuse(NOT_SIGNED_IN, 401, "NOT_SIGNED_IN")
        action = ACTIONS.get(request.path_params["action"])
        if action is None:
            return refuse("No such action.", 404, "UNKNOWN_ACTION")
        try:
            fields = await read_fields(request)
            async with asyncio.timeout(self._timeout):
                body = await action(self._service, self._waiter, session.operation_id, session.user, fields)
        except BadRequest as exc:
            return refuse(exc.message, exc.status, "BAD_REQUEST")
        except ParameterError as exc:
            return refuse(exc.row.msg, exc.row.status, "INVALID_PARAMETER")
        except _NoTransfer:
            return refuse("Your call has no transfer running.", 409, "NO_TRANSFER")
        except ActionNotCompleted as exc:
            key = exc.error_id if exc.error_id in ("CALL_NOT_UPDATED", "CALL_CONTROL_UNAVAILABLE") \
                else "CALL_NOT_UPDATED"
            row = contract.error(key)
            return refuse(row.msg, row.status, key)
        except CallControlError as exc:
            return domain_error(exc)
        except TimeoutError:
            row = contract.error("CALL_CONTROL_UNAVAILABLE")
            return refuse(row.msg, row.status, "CALL_CONTROL_UNAVAILABLE")
        return answer({"ok": True, **body})
