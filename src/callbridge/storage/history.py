"""Reading the call records back for the API: ended calls with their legs, transfers, CDRs and recordings of an
operation, by time range and position, whatever restarts happened since they were written.

Rules
- Every read is scoped to one operation: a record of another operation is not found, exactly as a missing one.
- Listings are keyset-paged on (`started_at`, `conn_id`): a `Position` names the last row a page gave, and the next
  page starts strictly after it, so paging returns every row once even while new rows are written. Ended calls
  come newest first (`started_at` descending, then `conn_id` descending); CDRs and recordings oldest first
  (ascending; a recording's `started_at` is its WAV's first sample).
- A time range is on `started_at`: `since` inclusive, `until` exclusive; either may be None (unbounded).
- Each method is blocking and opens its own connection from the engine's pool (never the writer's): call it from
  a worker thread (`asyncio.to_thread`), never on the event loop. What the writer has not committed yet is not
  seen; the API merges what the service still holds in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, or_, select

from callbridge.callcontrol.model import CallRecord, Cdr, LegRecord, TransferRecord
from callbridge.storage import schema as s
from callbridge.storage.records import call_of_row, cdr_of_row, read_legs, transfer_of_row


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the (`started_at`, `conn_id`) of its last row."""

    started_at: datetime
    conn_id: str


@dataclass(frozen=True, slots=True)
class RecordingRecord:
    """A stored recording (`callbridge.storage.recordings`): the WAV's path, and offsets from its start."""

    conn_id: str
    operation_id: str
    path: str
    started_at: datetime
    duration: float
    segments: list[dict[str, Any]]
    pauses: list[dict[str, Any]]
    created_at: datetime

    @property
    def position(self) -> Position:
        return Position(self.started_at, self.conn_id)


@dataclass(frozen=True, slots=True)
class TimeRange:
    """`since` <= started_at < `until`; None is unbounded."""

    since: datetime | None = None
    until: datetime | None = None


def _window(started_at: Any, conn_id: Any, span: TimeRange, after: Position | None,
            newest_first: bool) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if span.since is not None:
        where.append(started_at >= span.since)
    if span.until is not None:
        where.append(started_at < span.until)
    if after is not None:
        if newest_first:
            where.append(or_(started_at < after.started_at,
                             and_(started_at == after.started_at, conn_id < after.conn_id)))
        else:
            where.append(or_(started_at > after.started_at,
                             and_(started_at == after.started_at, conn_id > after.conn_id)))
    return where


def _ordered(query: Select[Any], started_at: Any, conn_id: Any, newest_first: bool, limit: int) -> Select[Any]:
    if newest_first:
        return query.order_by(started_at.desc(), conn_id.desc()).limit(limit)
    return query.order_by(started_at, conn_id).limit(limit)


class History:
    """The records of past calls, read with connections of their own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ended_calls(self, operation_id: str, *, span: TimeRange = TimeRange(), agent: str | None = None,
                    after: Position | None = None, limit: int = 100) -> list[CallRecord]:
        """The operation's ended calls in the range, newest first, strictly after `after`, at most `limit`."""
        t = s.calls
        where = [t.c.operation_id == operation_id, t.c.ended_at.is_not(None),
                 *_window(t.c.started_at, t.c.conn_id, span, after, True)]
        if agent is not None:
            where.append(t.c.extension == agent)
        query = _ordered(select(t).where(*where), t.c.started_at, t.c.conn_id, True, limit)
        with self.engine.connect() as conn:
            return [call_of_row(r) for r in conn.execute(query).mappings()]

    def call(self, operation_id: str, conn_id: str) -> tuple[CallRecord, list[LegRecord]] | None:
        """A call of the operation with its legs (oldest first), or None."""
        t = s.calls
        with self.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.conn_id == conn_id, t.c.operation_id == operation_id)
                               ).mappings().first()
            if row is None:
                return None
            return call_of_row(row), read_legs(conn, conn_id)

    def transfer(self, operation_id: str, transfer_id: str) -> TransferRecord | None:
        t = s.transfers
        with self.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.id == transfer_id, t.c.operation_id == operation_id)
                               ).mappings().first()
        return None if row is None else transfer_of_row(row)

    def cdrs(self, operation_id: str, *, span: TimeRange = TimeRange(), after: Position | None = None,
             limit: int = 100) -> list[Cdr]:
        """The operation's CDRs in the range, oldest first, strictly after `after`, at most `limit`."""
        t = s.cdrs
        where = [t.c.operation_id == operation_id, *_window(t.c.started_at, t.c.conn_id, span, after, False)]
        query = _ordered(select(t).where(*where), t.c.started_at, t.c.conn_id, False, limit)
        with self.engine.connect() as conn:
            return [cdr_of_row(r) for r in conn.execute(query).mappings()]

    def recording(self, operation_id: str, conn_id: str) -> RecordingRecord | None:
        t = s.recordings
        with self.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.conn_id == conn_id, t.c.operation_id == operation_id)
                               ).mappings().first()
        return None if row is None else RecordingRecord(**row)

    def recordings(self, operation_id: str, *, span: TimeRange = TimeRange(), after: Position | None = None,
                   limit: int = 100) -> list[RecordingRecord]:
        """The operation's recordings in the range, oldest first, strictly after `after`, at most `limit`."""
        t = s.recordings
        where = [t.c.operation_id == operation_id, *_window(t.c.started_at, t.c.conn_id, span, after, False)]
        query = _ordered(select(t).where(*where), t.c.started_at, t.c.conn_id, False, limit)
        with self.engine.connect() as conn:
            return [RecordingRecord(**r) for r in conn.execute(query).mappings()]

    def recorded(self, operation_id: str, conn_ids: list[str]) -> set[str]:
        """Which of `conn_ids` have a recording (the CDRs name it)."""
        if not conn_ids:
            return set()
        t = s.recordings
        with self.engine.connect() as conn:
            return set(conn.execute(select(t.c.conn_id).where(t.c.operation_id == operation_id,
                                                              t.c.conn_id.in_(conn_ids))).scalars())
