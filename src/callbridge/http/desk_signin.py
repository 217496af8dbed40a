"""The sign-in steps the agent's page and the supervisor's board share (docs/operations.md, "The agent's page").

Rules
- An address banned for its failed sign-ins gets 429 before its form is read (the ban is the flood defence's, not
  the account's: known and unknown accounts answer the same).
- A form that does not parse, or lacks a field, is refused (400) and counts as no attempt: nothing was checked.
- Every wrong sign-in (unknown operation, unknown account, wrong password) answers the same 401 with the page's own
  message, and counts as a failure of the source address.
- A sign-in that succeeds answers with the page's description and sets the session's cookie; signing out ends the
  session of the page's kind, if any, and clears the cookie (twice is harmless).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from callbridge.http.desk_common import BadRequest, DeskConfig, answer, read_fields, refuse
from callbridge.http.desk_sessions import SIGNED_OUT, Kind, Session, SessionTable, client_ip, set_cookie

__all__ = ["BANNED", "NOT_SIGNED_IN", "SignInForm", "read_sign_in", "sign_out", "signed_in"]

BANNED = "Too many failed sign-ins from your address: wait a few minutes, then try again."
NOT_SIGNED_IN = "You are not signed in (or your session ended): sign in again."


class SignInForm:
    """A sign-in's fields and where it came from; `wrong` refuses it and counts the failure."""

    def __init__(self, fields: dict[str, str], source: str, config: DeskConfig, clock: Callable[[], float]) -> None:
        self.fields = fields
        self.source = source
        self._config = config
        self._clock = clock

    def wrong(self, message: str) -> Response:
        failures = self._config.failures
        if failures is not None:
            failures.record_failure(self.source, self._clock())
        return refuse(message, 401, "SIGN_IN_FAILED")


async def read_sign_in(request: Request, config: DeskConfig, clock: Callable[[], float],
                       names: Sequence[str]) -> SignInForm | Response:
    """The form with every field of `names` filled in, or the refusal to send (see the module rules)."""
    source, failures = client_ip(request), config.failures
    if failures is not None and failures.is_banned(source, clock()):
        return refuse(BANNED, 429, "SIGN_IN_BANNED")
    try:
        fields = await read_fields(request)
    except BadRequest as exc:
        return refuse(exc.message, exc.status, "BAD_REQUEST")
    missing = [name for name in names if not fields.get(name)]
    if missing:
        return refuse(f"Fill in: {', '.join(missing)}.", 400, "MISSING_PARAMETERS")
    return SignInForm(fields, source, config, clock)


def signed_in(request: Request, sessions: SessionTable, session: Session, body: Mapping[str, Any]) -> Response:
    response = answer({"ok": True, **body})
    set_cookie(response, request, sessions.cookie_value(session), max_age=None)
    return response


def sign_out(request: Request, sessions: SessionTable, kind: Kind) -> Response:
    session = sessions.session_of(request, kind)
    if session is not None:
        sessions.end(session, SIGNED_OUT)
    response = answer({"ok": True, "message": "Signed out."})
    set_cookie(response, request, "", max_age=0)
    return response
