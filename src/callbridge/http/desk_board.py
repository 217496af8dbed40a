"""The supervisor's board's server side: sign-in and sign-out, the board's view and its two actions.

Rules (docs/operations.md, "The supervisor's board"):
- A supervisor belongs to one operation and sees and acts on nothing else: every read and action takes the
  session's operation, so another operation's agent or call answers exactly as one that does not exist (404, the
  contract's AGENT DOES NOT EXIST / CALL DOES NOT EXIST).
- Sign-in: operation (id or SIP domain), username, password, checked against the salted scrypt hash off the
  event loop; wrong password, unknown username and unknown operation answer the same 401, and count as failures of
  the source address like the agents' sign-ins.
- The board: agents (state, time in it, current call), queues (callers waiting, the longest wait), live calls.
- Actions: change an agent's state (the agentbox's change_status checks and rules), end a call (the agent's leg is
  hung up as `api=hang` does, which ends a call with no transfer running; a call waiting in a queue has no agent
  to hang up and is refused with 409).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from callbridge.callcontrol.errors import CallControlError
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
from callbridge.http.desk_sessions import SessionTable
from callbridge.http.desk_signin import NOT_SIGNED_IN, read_sign_in, sign_out, signed_in
from callbridge.http.resources import agent_state, call_state, rfc3339, rfc3339_or_none

WRONG_SIGN_IN = "Wrong operation, username or password."


def board_snapshot(service: CallControlService, config: DeskConfig, operation_id: str) -> dict[str, Any]:
    """The operation's agents, queues and live calls (without the time: the socket adds `now`)."""
    aux_names = {a.id: a.name for a in config.directory.list_aux_states(operation_id)}
    calls = [c for c in service.list_calls(operation_id) if c.state != "ended"]
    by_conn = {c.conn_id: c for c in calls}
    agents = []
    for view in service.list_agents(operation_id):
        state, aux = agent_state(view.state)
        call = by_conn.get(view.conn_id) if view.conn_id else None
        agents.append({"agent_id": view.extension, "name": view.name, "state": state, "aux_state": aux,
                       "aux_name": aux_names.get(aux or "", ""), "registered": view.registered,
                       "state_since": rfc3339(view.state_since), "conn_id": view.conn_id,
                       "customer_number": call.customer_number if call else None})
    queues = []
    for queue in config.directory.list_queues(operation_id):
        waiting = [c for c in calls if c.state == "queued" and c.queue == queue.name]
        oldest = min((c.created_at for c in waiting), default=None)
        queues.append({"name": queue.name, "waiting": len(waiting), "oldest_since": rfc3339_or_none(oldest)})
    live = [{"conn_id": c.conn_id, "customer_number": c.customer_number, "queue": c.queue, "agent_id": c.agent,
             "state": call_state(c), "direction": c.direction, "started_at": rfc3339(c.created_at),
             "answered_at": rfc3339_or_none(c.answered_at)} for c in calls]
    aux_states = [{"id": i, "name": n} for i, n in aux_names.items()]
    return {"agents": agents, "queues": queues, "calls": live, "aux_states": aux_states}


class SupervisorBoard:
    def __init__(self, service: CallControlService, waiter: ActionWaiter, sessions: SessionTable,
                 config: DeskConfig, *, request_timeout: float = contract.REQUEST_TIMEOUT_S) -> None:
        self._service = service
        self._waiter = waiter
        self._sessions = sessions
        self._config = config
        self._timeout = request_timeout
        self._clock = config.clock or time.monotonic

    async def sign_in(self, request: Request) -> Response:
        form = await read_sign_in(request, self._config, self._clock, ("operation", "username", "password"))
        if isinstance(form, Response):
            return form
        operation = find_operation(self._config.directory, form.fields["operation"])
        accounts = self._config.supervisors
        found = None
        if accounts is not None:  # an unknown operation is checked too: the same work, the same answer
            found = await asyncio.to_thread(accounts.verify, operation.id if operation else "",
                                            form.fields["username"], form.fields["password"])
        if found is None or operation is None:
            return form.wrong(WRONG_SIGN_IN)
        session = self._sessions.create("supervisor", operation.id, found.username, found.name)
        return signed_in(request, self._sessions, session, {
            "operation": {"id": operation.id, "name": operation.name},
            "supervisor": {"username": found.username, "name": found.name}})

    async def sign_out(self, request: Request) -> Response:
        return sign_out(request, self._sessions, "supervisor")

    async def board(self, request: Request) -> Response:
        session = self._sessions.session_of(request, "supervisor")
        if session is None:
            return refuse(NOT_SIGNED_IN, 401, "NOT_SIGNED_IN")
        view = board_snapshot(self._service, self._config, session.operation_id)
        return answer({"ok": True, "now": rfc3339(time.time()),
                       "supervisor": {"username": session.user, "name": session.name},
                       "operation": session.operation_id, **view})

    async def agent_state(self, request: Request) -> Response:
        session = self._sessions.session_of(request, "supervisor")
        if session is None:
            return refuse(NOT_SIGNED_IN, 401, "NOT_SIGNED_IN")
        agent = request.path_params["agent_id"]
        try:
            fields = await read_fields(request)
            p = verb_parameters(contract.VERBS["change_status"],
                                {"agent_id": agent, "status": fields.get("status", "")})
            self._service.change_status(session.operation_id, agent, p["status"])
        except BadRequest as exc:
            return refuse(exc.message, exc.status, "BAD_REQUEST")
        except ParameterError as exc:
            return refuse(exc.row.msg, exc.row.status, "INVALID_PARAMETER")
        except CallControlError as exc:
            return domain_error(exc)
        return answer({"ok": True, "message": contract.VERBS["change_status"].message(status=p["status"])})

    async def end_call(self, request: Request) -> Response:
        session = self._sessions.session_of(request, "supervisor")
        if session is None:
            return refuse(NOT_SIGNED_IN, 401, "NOT_SIGNED_IN")
        try:
            await read_fields(request)  # the same-origin check
            call = self._service.get_call(session.operation_id, request.path_params["conn_id"])
            if call.agent is None or call.state == "ended":
                return refuse("This call has no agent to hang up (it is waiting in a queue or has ended).", 409,
                              "NO_AGENT_ON_CALL")
            async with asyncio.timeout(self._timeout):
                await self._waiter.wait(self._service.hang(session.operation_id, call.agent))
        except BadRequest as exc:
            return refuse(exc.message, exc.status, "BAD_REQUEST")
        except ActionNotCompleted:
            row = contract.error("CALL_NOT_UPDATED")
            return refuse(row.msg, row.status, "CALL_NOT_UPDATED")
        except CallControlError as exc:
            return domain_error(exc)
        except TimeoutError:
            row = contract.error("CALL_CONTROL_UNAVAILABLE")
            return refuse(row.msg, row.status, "CALL_CONTROL_UNAVAILABLE")
        return answer({"ok": True, "message": contract.VERBS["hang"].message(), "conn_id": call.conn_id})
