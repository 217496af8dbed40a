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
  to hang up and is refused with 409), listen to a call and stop listening (the native API's `start_monitor` /
  `stop_monitor`, `callcontrol.monitor`: the extension given is rung and hears both parties; the same checks and
  error ids, each with a sentence the page shows as it is). The sign-in answers the account's `extension` (may be
  empty): the page's default phone to listen on.
- Each live call on the board says who listens (`listener`: extension and `ringing` / `listening`, or null); the
  live sockets send a fresh board on `call.monitor_started` / `call.monitor_ended`, and on Listen itself (ringing
  has no event: the board wakes its operation's sockets).
- Listening in the page (docs/operations.md, "The supervisor's board"): Listen with ``on=page`` starts
  `start_page_monitor` for the signed-in supervisor and answers the relay's WebRTC offer (``offer``, SDP) with the
  listener's ``monitor_id``; the page answers it at ``listen/answer`` (``monitor_id``, ``sdp``), accepted only from
  the supervisor who started it and only once; then its media flows. A relay that gives no offer in time or refuses
  the answer ends that listening (503 MEDIA_FAILED, said plainly). Stop listening is the same for both. The page
  names itself (``page``, 32 hex digits, also on its live socket's ``?page=``): when that socket closes, the page's
  listening ends (`page_closed`): a crashed browser or a lost network leaves no listening behind.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from callbridge.callcontrol.errors import CallControlError, CallNotAnchored
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
_EXTENSION = re.compile(r"[0-9]{1,32}")  # as the native API's monitor body (http/monitor.py)
# the listening's errors (callcontrol/monitor.py checks them in this order), said plainly on the board; the error id
# and the HTTP status stay the native API's
LISTEN_MESSAGES = {
    "CALL_NOT_FOUND": "This call does not exist in your operation.",
    "CALL_ENDED": "This call has ended: there is nothing to listen to.",
    "EXTENSION_NOT_FOUND": "Extension {extension} is not one of this operation's agents: listen on a phone "
                           "registered as one of its extensions.",
    "PHONE_NOT_REGISTERED": "Extension {extension} has no phone registered now: register its phone and try again.",
    "CALL_NOT_ANSWERED": "This call is not answered yet: nobody talks, there is nothing to listen to.",
    "MONITOR_IN_PROGRESS": "Someone listens to this call already: stop that listening first.",
    "CALL_NOT_ANCHORED": "This call's media does not go through callbridge's relay (rtpengine): it cannot be "
                         "listened to.",
    "MONITOR_NOT_STARTED": "Nobody listens to this call.",
}
MEDIA_FAILED = "The media relay did not set up the listening in this page: try again, or listen on a phone."
NOT_YOUR_LISTENING = "This page is not listening to that call (it ended, or another listening replaced it)."
NOT_AN_ANSWER = "The answer is not an SDP answer to the offer: one audio section per party (RFC 3264 §6)."
MAX_SDP = 12 * 1024  # a browser's answer with two audio streams is 2-3 kB
_PAGE_ID = re.compile(r"[0-9a-f]{32}")


def _listener(service: CallControlService, operation_id: str, conn_id: str) -> dict[str, Any] | None:
    try:
        view = service.monitor_state(operation_id, conn_id)
    except CallControlError:  # nobody listens (MONITOR_NOT_STARTED)
        return None
    return {"extension": view.supervisor, "state": view.state, "started_at": rfc3339_or_none(view.started_at),
            "on": view.on, "monitor_id": view.monitor_id}


def _listen_error(exc: CallControlError, extension: str = "") -> Response:
    text = LISTEN_MESSAGES.get(exc.error_id)
    if text is None:
        return domain_error(exc)
    return refuse(text.format(extension=extension), domain_error(exc).status_code, exc.error_id)


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
             "answered_at": rfc3339_or_none(c.answered_at),
             "listener": _listener(service, operation_id, c.conn_id)} for c in calls]
    aux_states = [{"id": i, "name": n} for i, n in aux_names.items()]
    return {"agents": agents, "queues": queues, "calls": live, "aux_states": aux_states}


class SupervisorBoard:
    def __init__(self, service: CallControlService, waiter: ActionWaiter, sessions: SessionTable,
                 config: DeskConfig, *, request_timeout: float = contract.REQUEST_TIMEOUT_S,
                 refresh: Callable[[str], None] | None = None) -> None:
        self._service = service
        self._refresh = refresh  # the live sockets of an operation, woken when its board changes without an event
        self._waiter = waiter
        self._sessions = sessions
        self._config = config
        self._timeout = request_timeout
        self._clock = config.clock or time.monotonic
        self._page_listenings: dict[str, set[tuple[str, str, str]]] = {}  # page id -> (operation, conn, monitor)

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
            "supervisor": {"username": found.username, "name": found.name,
                           "extension": getattr(found, "extension", "")}})

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

    async def listen(self, request: Request) -> Response:
        """`start_monitor` with the extension given: 200 with the listener (`ringing` until its phone answers); with
        ``on=page``, `start_page_monitor` and the relay's offer for this page."""
        session = self._sessions.session_of(request, "supervisor")
        if session is None:
            return refuse(NOT_SIGNED_IN, 401, "NOT_SIGNED_IN")
        extension = ""
        try:
            fields = await read_fields(request)
            on = fields.get("on", "phone")
            if on not in ("phone", "page"):
                return refuse("Listen on: page (this page) or phone (an extension).", 400, "INVALID_PARAMETER")
            if on == "page":
                page = fields.get("page", "")
                if not _PAGE_ID.fullmatch(page):
                    return refuse("The page's id (page: 32 hex digits) is missing or wrong: reload the board.", 400,
                                  "INVALID_PARAMETER")
                if self._config.page_listening is None:  # no media plane wired: nothing to listen through
                    raise CallNotAnchored()
                return await self._listen_in_page(session.operation_id, request.path_params["conn_id"],
                                                  session.user, page)
            extension = fields.get("extension", "").strip()
            if not extension:
                return refuse("Fill in: extension (the phone that listens).", 400, "MISSING_PARAMETERS")
            if not _EXTENSION.fullmatch(extension):
                return refuse("The extension is digits only (the phone that listens).", 400, "INVALID_PARAMETER")
            view = self._service.start_monitor(session.operation_id, request.path_params["conn_id"], extension)
            if self._refresh is not None:  # ringing has no event: every board of the operation shows it now
                self._refresh(session.operation_id)
        except BadRequest as exc:
            return refuse(exc.message, exc.status, "BAD_REQUEST")
        except CallControlError as exc:
            return _listen_error(exc, extension)
        return answer({"ok": True, "message": f"Ringing extension {extension}: answer it to listen.",
                       "conn_id": view.conn_id, "listener": {"extension": view.supervisor, "state": view.state,
                                                             "started_at": rfc3339_or_none(view.started_at)}})

    async def _listen_in_page(self, operation_id: str, conn_id: str, user: str, page: str) -> Response:
        listening = self._config.page_listening
        assert listening is not None
        view = self._service.start_page_monitor(operation_id, conn_id, user)
        mine = self._page_listenings.setdefault(page, set())
        mine -= {m for m in mine if not self._current(*m)}  # those ended otherwise
        mine.add((operation_id, conn_id, view.monitor_id))
        if self._refresh is not None:
            self._refresh(operation_id)
        try:
            async with asyncio.timeout(self._timeout):
                offer = await listening.page_offer(view.monitor_id)
        except TimeoutError:
            offer = None
        if offer is None:
            self._stop_if_current(operation_id, conn_id, view.monitor_id)
            return refuse(MEDIA_FAILED, 503, "MEDIA_FAILED")
        return answer({"ok": True, "message": "Connecting this page to the call…", "conn_id": conn_id,
                       "monitor_id": view.monitor_id, "offer": offer.decode("utf-8", "replace")})

    async def listen_answer(self, request: Request) -> Response:
        """The page's WebRTC answer to the offer `listen` gave it: the listening starts."""
        session = self._sessions.session_of(request, "supervisor")
        if session is None:
            return refuse(NOT_SIGNED_IN, 401, "NOT_SIGNED_IN")
        listening = self._config.page_listening
        conn_id = request.path_params["conn_id"]
        try:
            fields = await read_fields(request)
            monitor_id, sdp = fields.get("monitor_id", ""), fields.get("sdp", "")
            if not monitor_id or not sdp:
                return refuse("Fill in: monitor_id and sdp (the page's answer).", 400, "MISSING_PARAMETERS")
            if not sdp.startswith("v=0") or len(sdp) > MAX_SDP:
                return refuse(NOT_AN_ANSWER, 400, "INVALID_PARAMETER")
            view = self._service.monitor_state(session.operation_id, conn_id)
        except BadRequest as exc:
            return refuse(exc.message, exc.status, "BAD_REQUEST")
        except CallControlError as exc:
            return _listen_error(exc)
        if (listening is None or view.monitor_id != monitor_id or view.on != "page" or view.supervisor != session.user
                or view.state != "ringing"):
            return refuse(NOT_YOUR_LISTENING, 409, "NOT_YOUR_LISTENING")
        try:
            async with asyncio.timeout(self._timeout):
                outcome = await listening.page_answer(monitor_id, sdp.encode())
        except TimeoutError:
            self._stop_if_current(session.operation_id, conn_id, monitor_id)
            return refuse(MEDIA_FAILED, 503, "MEDIA_FAILED")
        if outcome == "invalid":
            return refuse(NOT_AN_ANSWER, 400, "INVALID_PARAMETER")
        if outcome != "taken":  # the relay refused it: the adapter reported the leg failed (`no_answer`)
            return refuse(MEDIA_FAILED, 503, "MEDIA_FAILED")
        return answer({"ok": True, "message": "Listening in this page.", "conn_id": conn_id})

    def page_closed(self, page: str) -> None:
        """The live socket of the board page `page` closed: that page's listening ends."""
        for operation_id, conn_id, monitor_id in self._page_listenings.pop(page, ()):
            self._stop_if_current(operation_id, conn_id, monitor_id)

    def _current(self, operation_id: str, conn_id: str, monitor_id: str) -> bool:
        try:
            return self._service.monitor_state(operation_id, conn_id).monitor_id == monitor_id
        except CallControlError:  # it ended
            return False

    def _stop_if_current(self, operation_id: str, conn_id: str, monitor_id: str) -> None:
        if self._current(operation_id, conn_id, monitor_id):
            self._service.stop_monitor(operation_id, conn_id)

    async def stop_listening(self, request: Request) -> Response:
        """`stop_monitor`: the listening phone is hung up."""
        session = self._sessions.session_of(request, "supervisor")
        if session is None:
            return refuse(NOT_SIGNED_IN, 401, "NOT_SIGNED_IN")
        try:
            await read_fields(request)  # the same-origin check
            view = self._service.stop_monitor(session.operation_id, request.path_params["conn_id"])
        except BadRequest as exc:
            return refuse(exc.message, exc.status, "BAD_REQUEST")
        except CallControlError as exc:
            return _listen_error(exc)
        who = f"{view.supervisor}'s page" if view.on == "page" else f"Extension {view.supervisor}"
        return answer({"ok": True, "message": f"{who} stopped listening.",
                       "conn_id": view.conn_id})
