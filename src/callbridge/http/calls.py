"""What the native API reads about calls, transfers and CDRs: live state from the service, the past from the
database records, so that an ended call, its legs, its transfer and its CDR answer the same before and after a
restart of the node.

Rules
- The service is asked first: it holds the live calls and transfers and the last ones that ended, newer than
  anything the writer may still have queued. What it no longer holds (a restart, or more than a thousand ended
  since) is read from the records (`storage.history.History`), in a worker thread with connections of its own.
- Everything is scoped to the token's operation: another operation's call or transfer is not found.
- `GET /v2/calls`: the live calls (`state=active`), the ended ones (`ended`) or both (`all`), newest first by
  (`started_at`, `conn_id`), in pages (`paging`): a page merges the service's calls after the cursor with at most
  `limit + 1` records after it, a call the service holds taking the place of its record.
- A record's call has no live flags: `held` and `muted` are false and it runs no transfer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Literal

from callbridge.callcontrol.commands import CallView, LegView
from callbridge.callcontrol.errors import CallNotFound, TransferNotFound
from callbridge.callcontrol.model import CallRecord, LegRecord, TransferRecord
from callbridge.callcontrol.service import CallControlService
from callbridge.http.paging import cursor_of, encode_cursor, limit_of, time_range_of
from callbridge.http.resources import call_summary_json, cdr_json
from callbridge.storage.history import History, Position, TimeRange
from callbridge.storage.times import to_datetime

CallsState = Literal["active", "ended", "all"]
CALLS_LISTING = "calls"
CDRS_LISTING = "cdrs"


def leg_view(leg: LegRecord) -> LegView:
    return LegView(leg.leg_id, leg.role, leg.party, leg.state, leg.agent, leg.created_at, leg.answered_at,
                   leg.ended_at, leg.sip_status)


def call_view(call: CallRecord, legs: list[LegRecord]) -> CallView:
    """The view of a call the service no longer holds, from its records."""
    return CallView(call.conn_id, call.operation_id, call.direction, call.state, call.customer_number, call.queue,
                    call.agent, False, False, call.transfer_count, None, call.created_at, call.answered_at,
                    call.ended_at, tuple(leg_view(leg) for leg in legs), ())


def _position(view: CallView) -> Position:
    return Position(to_datetime(view.created_at), view.conn_id)


def _key(position: Position) -> tuple[Any, str]:
    return position.started_at, position.conn_id


def _in_window(position: Position, span: TimeRange, after: Position | None) -> bool:
    if span.since is not None and position.started_at < span.since:
        return False
    if span.until is not None and position.started_at >= span.until:
        return False
    return after is None or _key(position) < _key(after)


class CallReads:
    """The reads behind `/v2/calls`, `/v2/calls/{conn_id}`, `/v2/transfers/{id}` and `/v2/cdrs`; `history` None:
    the service only (no database behind the application)."""

    def __init__(self, service: CallControlService, history: History | None,
                 ended_calls: Callable[[str], list[str]]) -> None:
        self._service = service
        self._history = history
        self._ended_calls = ended_calls  # operation_id -> conn_ids of the ended calls the event log keeps

    # --- one call, one transfer -------------------------------------------------------------------------------

    async def call(self, operation_id: str, conn_id: str) -> CallView:
        """Raises CallNotFound."""
        try:
            return self._service.get_call(operation_id, conn_id)
        except CallNotFound:
            if self._history is None:
                raise
        found = await asyncio.to_thread(self._history.call, operation_id, conn_id)
        if found is None:
            raise CallNotFound()
        return call_view(*found)

    async def transfer(self, operation_id: str, transfer_id: str) -> tuple[TransferRecord, bool]:
        """(the transfer, whether the service holds it). Raises TransferNotFound."""
        try:
            return self._service.get_transfer(operation_id, transfer_id), True
        except TransferNotFound:
            if self._history is None:
                raise
        record = await asyncio.to_thread(self._history.transfer, operation_id, transfer_id)
        if record is None:
            raise TransferNotFound()
        return record, False

    # --- listings ---------------------------------------------------------------------------------------------

    def _held_calls(self, operation_id: str, state: CallsState) -> dict[str, CallView]:
        """Every call the service holds for the operation, live and ended, by conn_id."""
        held = {v.conn_id: v for v in self._service.list_calls(operation_id)} if state != "ended" else {}
        if state != "active":
            for conn_id in self._ended_calls(operation_id):
                try:
                    held.setdefault(conn_id, self._service.get_call(operation_id, conn_id))
                except CallNotFound:
                    continue
        return held

    async def list_calls(self, operation_id: str, state: CallsState, agent: str | None,
                         query: Mapping[str, str]) -> dict[str, Any]:
        """A page of the operation's calls; raises InvalidParameter for a malformed limit, from, to or cursor."""
        limit, span, after = limit_of(query), time_range_of(query), cursor_of(query, CALLS_LISTING)
        held = self._held_calls(operation_id, state)

        def wanted(view: CallView) -> bool:
            ended = view.state == "ended"
            return ((state == "all" or ended == (state == "ended")) and (agent is None or view.agent == agent)
                    and _in_window(_position(view), span, after))

        views = [v for v in held.values() if wanted(v)]
        if state != "active" and self._history is not None:
            records = await asyncio.to_thread(self._history.ended_calls, operation_id, span=span, agent=agent,
                                              after=after, limit=limit + 1)
            known = set(held)  # the service's view of a call wins over its record
            views.extend(call_view(r, []) for r in records if r.conn_id not in known)
        views.sort(key=lambda v: _key(_position(v)), reverse=True)
        page = views[:limit]
        following = encode_cursor(CALLS_LISTING, _position(page[-1])) if len(views) > limit else None
        return {"items": [call_summary_json(v) for v in page], "next_cursor": following}

    async def list_cdrs(self, operation_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        limit, span, after = limit_of(query), time_range_of(query), cursor_of(query, CDRS_LISTING)
        if self._history is None:
            return {"items": [], "next_cursor": None}
        records = await asyncio.to_thread(self._history.cdrs, operation_id, span=span, after=after,
                                          limit=limit + 1)
        page = records[:limit]
        following = None
        if len(records) > limit:
            following = encode_cursor(CDRS_LISTING, Position(to_datetime(page[-1].started_at), page[-1].conn_id))
        recorded = await asyncio.to_thread(self._history.recorded, operation_id, [c.conn_id for c in page])
        return {"items": [cdr_json(c, c.conn_id in recorded) for c in page], "next_cursor": following}
