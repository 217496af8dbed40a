"""The native API's listening: a supervisor's phone hears a live call (`callcontrol.monitor`).

- `POST /v2/calls/{conn_id}/monitor` with ``{"extension": "1009"}`` rings that extension's phone; once it answers
  it hears the customer and the party the customer talks to, who do not hear it. 201 with the monitor's state.
- `GET /v2/calls/{conn_id}/monitor`: its state (`ringing`, `listening`, `ended`); `DELETE` ends it (200, `ended`).
- Errors, in the order they are checked: 404 CALL_NOT_FOUND (also another operation's call), 409 CALL_ENDED,
  404 EXTENSION_NOT_FOUND, 409 PHONE_NOT_REGISTERED, 409 CALL_NOT_ANSWERED, 409 MONITOR_IN_PROGRESS, 409
  CALL_NOT_ANCHORED (its media does not go through a relay); `DELETE` and `GET` of a call nobody listens to:
  409 MONITOR_NOT_STARTED. A body that is not ``{"extension": "<digits>"}``: 400 MISSING_PARAMETERS or
  INVALID_PARAMETER. Each error changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from callbridge.callcontrol.monitor import MonitorView
from callbridge.callcontrol.service import CallControlService
from callbridge.http.auth import Principal
from callbridge.http.calls import CallReads
from callbridge.http.live_call import json_body, on_live_call
from callbridge.http.native import Problem, json_response
from callbridge.http.resources import rfc3339, rfc3339_or_none

__all__ = ["MonitorApi", "monitor_json"]

_EXTENSION = re.compile(r"[0-9]{1,32}")

Guarded = Callable[[Request, Callable[[Principal, Request], Awaitable[Response]]], Awaitable[Response]]


def monitor_json(view: MonitorView) -> dict[str, Any]:
    return {"conn_id": view.conn_id, "monitor_id": view.monitor_id, "supervisor": view.supervisor,
            "state": view.state, "requested_at": rfc3339(view.requested_at),
            "started_at": rfc3339_or_none(view.started_at), "ended_at": rfc3339_or_none(view.ended_at),
            "reason": view.reason}


def _extension(raw: bytes) -> str:
    extension = json_body(raw, "extension")["extension"]
    if not isinstance(extension, str) or not _EXTENSION.fullmatch(extension):
        raise Problem("INVALID_PARAMETER", parameter="extension")
    return extension


class MonitorApi:
    def __init__(self, service: CallControlService, reads: CallReads, guarded: Guarded) -> None:
        self._service = service
        self._reads = reads
        self._guarded = guarded

    async def _verb(self, request: Request, act: Callable[[str, str, bytes], MonitorView],
                    status: int = 200) -> Response:
        async def run(principal: Principal, request: Request) -> Response:
            op, conn_id, raw = principal.operation_id, request.path_params["conn_id"], await request.body()
            view = await on_live_call(self._reads, op, conn_id, lambda: act(op, conn_id, raw))
            return json_response(monitor_json(view), status=status)
        return await self._guarded(request, run)

    async def start(self, request: Request) -> Response:
        return await self._verb(request, lambda op, conn_id, raw: self._service.start_monitor(
            op, conn_id, _extension(raw)), status=201)

    async def stop(self, request: Request) -> Response:
        return await self._verb(request, lambda op, conn_id, _: self._service.stop_monitor(op, conn_id))

    async def state(self, request: Request) -> Response:
        return await self._verb(request, lambda op, conn_id, _: self._service.monitor_state(op, conn_id))
