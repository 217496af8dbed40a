"""The native API's recordings: a call's WAV, the list by time range, and on-demand start, stop and pause.

Rules (openapi.json; docs/operations.md, "Recordings")
- Scoped to the token's operation like every native read: another operation's call answers 404 CALL_NOT_FOUND,
  exactly as an unknown one.
- `GET /v2/calls/{conn_id}/recording` serves the stored WAV (`audio/wav`, `Accept-Ranges: bytes`). One byte range
  (RFC 9110 §14: ``bytes=first-last``, ``bytes=first-``, ``bytes=-suffix``) answers 206 with `Content-Range`; a
  range that is malformed, names several ranges or starts past the end answers 416 RANGE_NOT_SATISFIABLE with
  ``Content-Range: bytes */<size>``. A call without a stored recording (not recorded, still live, deleted by
  retention) answers 404 RECORDING_NOT_FOUND. The bytes are read in a worker thread.
- `POST`, `DELETE` and `PATCH {"paused": true|false}` on the same path start, stop, pause and resume a live call's
  recording (`CallControlService.start_recording`...). A call that ended answers 409 CALL_ENDED; the policy and the
  call's state answer RECORDING_NOT_ALLOWED, RECORDING_UNAVAILABLE or RECORDING_NOT_STARTED, with the reason as
  `detail`. The answer is the recording's state: `{"conn_id", "policy", "state"}`.
- `GET /v2/recordings?from=&to=&limit=&cursor=` lists the stored recordings, oldest first by the WAV's start,
  keyset-paged like `/v2/cdrs` (`paging`).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from callbridge.callcontrol.errors import CallNotFound
from callbridge.callcontrol.recordings import RecordingView
from callbridge.callcontrol.service import CallControlService
from callbridge.http.auth import Principal
from callbridge.http.calls import CallReads
from callbridge.http.live_call import CONN_ID, json_body, on_live_call
from callbridge.http.native import Problem, json_response
from callbridge.http.paging import cursor_of, encode_cursor, limit_of, time_range_of
from callbridge.http.resources import recording_url, rfc3339
from callbridge.storage.history import History, RecordingRecord

__all__ = ["RecordingsApi", "byte_range"]

RECORDINGS_LISTING = "recordings"
_RANGE = re.compile(r"bytes=(?:([0-9]{1,18})-([0-9]{0,18})|-([0-9]{1,18}))")

Guarded = Callable[[Request, Callable[[Principal, Request], Awaitable[Response]]], Awaitable[Response]]


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The (first, last) byte of one RFC 9110 range within `size` bytes; None when it cannot be served."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or size == 0:
        return None
    first_text, last_text, suffix = match.groups()
    if suffix is not None:
        length = int(suffix)
        return None if length == 0 else (max(0, size - length), size - 1)
    first = int(first_text)
    last = size - 1 if not last_text else min(int(last_text), size - 1)
    if first >= size or (last_text and int(last_text) < first):
        return None
    return first, last


def _read(path: str, first: int, length: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(first)
        return file.read(length)


def recording_json(record: RecordingRecord) -> dict[str, Any]:
    return {"conn_id": record.conn_id, "url": recording_url(record.conn_id),
            "started_at": rfc3339(record.started_at.timestamp()), "duration": record.duration,
            "segments": record.segments, "pauses": record.pauses,
            "created_at": rfc3339(record.created_at.timestamp())}


def state_json(view: RecordingView) -> dict[str, Any]:
    return {"conn_id": view.conn_id, "policy": view.policy, "state": view.state}


class RecordingsApi:
    def __init__(self, service: CallControlService, reads: CallReads, history: History | None,
                 guarded: Guarded) -> None:
        self._service = service
        self._reads = reads
        self._history = history
        self._guarded = guarded

    async def _stored(self, principal: Principal, conn_id: str) -> RecordingRecord:
        if not CONN_ID.fullmatch(conn_id):
            raise CallNotFound()
        record = None
        if self._history is not None:
            record = await asyncio.to_thread(self._history.recording, principal.operation_id, conn_id)
        if record is None:
            await self._reads.call(principal.operation_id, conn_id)  # CALL_NOT_FOUND before RECORDING_NOT_FOUND
            raise Problem("RECORDING_NOT_FOUND")
        return record

    async def get_recording(self, request: Request) -> Response:
        async def run(principal: Principal, request: Request) -> Response:
            record = await self._stored(principal, request.path_params["conn_id"])
            try:
                size = await asyncio.to_thread(os.path.getsize, record.path)
            except OSError:
                raise Problem("RECORDING_NOT_FOUND") from None
            headers = {"content-type": "audio/wav", "accept-ranges": "bytes"}
            wanted = request.headers.get("range")
            if wanted is None:
                body = await asyncio.to_thread(_read, record.path, 0, size)
                return Response(body, 200, headers=headers)
            span = byte_range(wanted, size)
            if span is None:
                raise Problem("RANGE_NOT_SATISFIABLE", headers={"content-range": f"bytes */{size}"})
            first, last = span
            body = await asyncio.to_thread(_read, record.path, first, last - first + 1)
            return Response(body, 206, headers={**headers, "content-range": f"bytes {first}-{last}/{size}"})
        return await self._guarded(request, run)

    async def list_recordings(self, request: Request) -> Response:
        async def run(principal: Principal, request: Request) -> Response:
            query = request.query_params
            limit, span, after = limit_of(query), time_range_of(query), cursor_of(query, RECORDINGS_LISTING)
            if self._history is None:
                return json_response({"items": [], "next_cursor": None})
            records = await asyncio.to_thread(self._history.recordings, principal.operation_id, span=span,
                                              after=after, limit=limit + 1)
            page = records[:limit]
            following = encode_cursor(RECORDINGS_LISTING, page[-1].position) if len(records) > limit else None
            return json_response({"items": [recording_json(r) for r in page], "next_cursor": following})
        return await self._guarded(request, run)

    async def _verb(self, request: Request, act: Callable[[str, str, dict[str, Any]], RecordingView],
                    body: bool = False) -> Response:
        async def run(principal: Principal, request: Request) -> Response:
            op, conn_id = principal.operation_id, request.path_params["conn_id"]
            parameters = _paused(await request.body()) if body else {}  # 400 before the call is looked up
            view = await on_live_call(self._reads, op, conn_id, lambda: act(op, conn_id, parameters),
                                      detail_for="RECORDING_")
            return json_response(state_json(view))
        return await self._guarded(request, run)

    async def start_recording(self, request: Request) -> Response:
        return await self._verb(request, lambda op, conn_id, _: self._service.start_recording(op, conn_id))

    async def stop_recording(self, request: Request) -> Response:
        return await self._verb(request, lambda op, conn_id, _: self._service.stop_recording(op, conn_id))

    async def pause_recording(self, request: Request) -> Response:
        return await self._verb(request, lambda op, conn_id, body: self._service.pause_recording(
            op, conn_id, body["paused"]), body=True)


def _paused(raw: bytes) -> dict[str, Any]:
    paused = json_body(raw, "paused")["paused"]
    if not isinstance(paused, bool):
        raise Problem("INVALID_PARAMETER", parameter="paused")
    return {"paused": paused}
