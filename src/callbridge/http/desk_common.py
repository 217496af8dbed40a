"""What the desk's handlers share: its configuration, the directory it reads, JSON in and out, the same-origin
check, and how a domain error is written back (the contract's row for its `error_id`, as the agentbox does).

The desk's JSON answers are `{"ok": true, "message": ..., ...}` or `{"ok": false, "error_id": ..., "message": ...}`
with the contract's HTTP status for the error (`docs/agentbox-contract.md`): the page shows `message` as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from callbridge.callcontrol.errors import CallControlError, InvalidParameter
from callbridge.callcontrol.model import ActivityCode, Agent, AuxState, Operation, Queue
from callbridge.http import contract
from callbridge.http.agentbox import parse_pairs
from callbridge.http.desk_sessions import FailureCounter

MAX_BODY = 16 * 1024
# repository/web/node_modules: where `npm ci` (scripts/setup) puts the page's browser library
DEFAULT_LIBRARY_DIR = Path(__file__).resolve().parents[3] / "web" / "node_modules"


class DeskDirectory(Protocol):
    """What the desk reads of the directory (`storage.directory.Directory` has it)."""

    def get_operation(self, operation_id: str) -> Operation | None: ...

    def operation_for_domain(self, sip_domain: str) -> Operation | None: ...

    def get_agent(self, operation_id: str, extension: str) -> Agent | None: ...

    def list_aux_states(self, operation_id: str) -> Sequence[AuxState]: ...

    def list_activity_codes(self, operation_id: str) -> Sequence[ActivityCode]: ...

    def list_queues(self, operation_id: str) -> Sequence[Queue]: ...


class SupervisorVerifier(Protocol):
    """`storage.supervisors.SupervisorAccounts`: blocking, called off the loop."""

    def verify(self, operation_id: str, username: str, password: str) -> Any | None: ...


class PageListening(Protocol):
    """The media side of a supervisor listening in the board's page (`b2bua.monitor.CallListeners` has it): the
    relay's WebRTC offer for a page listener's leg (None: the relay refused it, or the listener is gone), and the
    page's answer to it: "taken"; "invalid" (not one media section per offered one; nothing changed); "refused"
    (by the relay, or the listener is gone or answered already)."""

    async def page_offer(self, leg_id: str) -> bytes | None: ...

    async def page_answer(self, leg_id: str, sdp: bytes) -> Literal["taken", "invalid", "refused"]: ...


@dataclass(frozen=True, slots=True)
class DeskConfig:
    """The desk's wiring: `sip_ws` is where the page's SIP.js connects ((host, port), the host None when the
    listener is on every address: the page then uses the host it was loaded from); `sip_wss` says it is TLS."""

    directory: DeskDirectory
    supervisors: SupervisorVerifier | None = None
    sip_ws: tuple[str | None, int] | None = None
    sip_wss: bool = False
    library_dir: Path = DEFAULT_LIBRARY_DIR
    failures: FailureCounter | None = None  # None: sign-in failures are not counted
    clock: Callable[[], float] | None = None
    page_listening: PageListening | None = None  # None: the board listens on phones only


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def answer(body: Mapping[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False).encode("utf-8"), status_code=status,
                    media_type="application/json", headers={"cache-control": "no-store"})


def refuse(message: str, status: int, error_id: str) -> Response:
    return answer({"ok": False, "error_id": error_id, "message": message}, status)


def domain_error(exc: CallControlError) -> Response:
    """The contract's row for the error's id (as `api=` answers it), else the native API's problem title."""
    if exc.error_id in contract.ERROR_IDS:
        parameter = exc.parameter if isinstance(exc, InvalidParameter) else None
        row = contract.row_for_error_id(exc.error_id, parameter=parameter or "parameter")
        return refuse(row.msg, row.status, exc.error_id)
    if exc.error_id in contract.PROBLEM_KEYS:
        body = contract.problem(exc.error_id)
        return refuse(body["title"], body["status"], exc.error_id)
    return refuse("INTERNAL SERVER ERROR", 500, "INTERNAL")


def same_origin(conn: HTTPConnection) -> bool:
    """A browser's Origin, when it sends one, names this server (a cross-site form post is refused even before
    the SameSite cookie rule: sign-in has no cookie yet)."""
    origin = conn.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = conn.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def read_fields(request: Request) -> dict[str, str]:
    """A JSON object of strings, or an urlencoded form; anything else is a clear 400."""
    if not same_origin(request):
        raise BadRequest("This request came from another site's page.", 403)
    body = await request.body()
    if len(body) > MAX_BODY:
        raise BadRequest("The request body is too large.", 413)
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not body:
        return {}
    if kind == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("The request body is not valid JSON.") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise BadRequest("The request body must be a JSON object of strings.")
        return data
    if kind == "application/x-www-form-urlencoded":
        fields: dict[str, str] = {}
        for name, value in parse_pairs(body.decode("utf-8", "replace")):
            fields.setdefault(name, value)
        return fields
    raise BadRequest("Send JSON (application/json) or a form (application/x-www-form-urlencoded).", 415)


def find_operation(directory: DeskDirectory, given: str) -> Operation | None:
    """An operation by its id ("0042") or by its SIP domain, as the sign-in form accepts either."""
    given = given.strip()
    if not given:
        return None
    return directory.get_operation(given) or directory.operation_for_domain(given.lower())
