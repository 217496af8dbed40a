"""What the native API's verbs on one live call share (listening: monitor.py; recording: recordings.py): the
checks before the verb, in the order the contract lists them (openapi.json), and the mapping of the call-control
error the verb raises to its problem (RFC 9457).

1. a `conn_id` that is not an id, an unknown call, another operation's call: 404 CALL_NOT_FOUND (the same answer);
2. a call that ended: 409 CALL_ENDED;
3. the verb itself; a `CallControlError` of the contract becomes its problem, with the error's text as `detail`
   when its id starts with `detail_for` (the recording errors say why); any other error is the server's (500).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from callbridge.callcontrol.errors import CallControlError, CallNotFound
from callbridge.http.calls import CallReads
from callbridge.http.native import Problem, domain_problem, json_object

__all__ = ["json_body", "on_live_call"]

CONN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # as native.py accepts in paths

T = TypeVar("T")


async def on_live_call(reads: CallReads, operation_id: str, conn_id: str, verb: Callable[[], T], *,
                       detail_for: str | None = None) -> T:
    """Run `verb` on the operation's live call `conn_id` after the checks above; its result."""
    if not CONN_ID.fullmatch(conn_id):
        raise CallNotFound()
    view = await reads.call(operation_id, conn_id)  # CALL_NOT_FOUND, other operations' calls too
    if view.state == "ended":
        raise Problem("CALL_ENDED")
    try:
        return verb()
    except CallControlError as exc:
        problem = domain_problem(exc)
        if problem is None:
            raise
        if detail_for is not None and exc.error_id.startswith(detail_for):
            problem.extensions["detail"] = str(exc)
        raise problem from None


def json_body(raw: bytes, key: str) -> dict[str, Any]:
    """The request's JSON object, which must have `key`: 400 MISSING_PARAMETERS for an empty body or one without
    `key`, 400 INVALID_PARAMETER (`body`) for one that is not a JSON object. The value is the caller's to check."""
    value = json_object(raw)
    if key not in value:
        raise Problem("MISSING_PARAMETERS")
    return value
