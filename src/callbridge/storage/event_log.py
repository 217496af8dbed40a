"""The durable event log: every wire event in the `events` table, written through the writer's batches.

Rules
- `append` queues one `Insert` row on the writer, in the same loop turn as the state rows of the change the event
  reports, so both commit in one transaction (the writer never splits a loop turn: `Writer.seal_on`). It returns
  the writer's item number of that row: once the writer reports that number done (`Writer.on_done`), the event
  is committed and may be shown to consumers.
- `line` is the wire JSON, serialised once by the event (its text, or its UTF-8 bytes); the row keeps it as text
  and a read gives the same bytes.
- `seq` only grows per operation. Pruning (`prune`) deletes, per operation, every event up to the last one older
  than the horizon, but never the operation's newest row: what is kept is always a run of consecutive seqs
  (a wall clock stepping back makes no hole), and `bounds()` after any restart gives max(seq) to continue from.
  It deletes in chunks of `PRUNE_CHUNK` seqs, each its own short transaction, so the writer never waits long.
- A call's events (`of_call`, what `GET /v2/calls/{conn_id}` shows as its history once memory no longer has
  them: after a restart, or when the ring moved past them) are read by `conn_id` within the call's lifetime.
- Reads and pruning run off the event loop (callers use `asyncio.to_thread`); they open their own connections.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select

from callbridge.storage import schema as s
from callbridge.storage.times import to_datetime, to_seconds
from callbridge.storage.writer import Writer

DEFAULT_RETENTION_DAYS = 7.0
PRUNE_CHUNK = 5000
RETENTION_ENV = "CALLBRIDGE_EVENT_RETENTION_DAYS"
CALL_MARGIN_S = 60.0  # `of_call`: a call's events are emitted between its start and its end, within this margin


@dataclass(frozen=True, slots=True)
class StoredEvent:
    operation_id: str
    seq: int
    type: str
    at: float
    conn_id: str | None
    line: bytes


@dataclass(frozen=True, slots=True)
class Bounds:
    oldest: int  # the oldest seq kept
    last: int  # the newest seq written


def row(operation_id: str, seq: int, kind: str, at: float, conn_id: str | None,
        line: str | bytes) -> dict[str, Any]:
    """The `events` row of one event (for a caller that writes it in a transaction of its own)."""
    return {"operation_id": operation_id, "seq": seq, "type": kind, "at": to_datetime(at), "conn_id": conn_id,
            "line": line if isinstance(line, str) else line.decode("utf-8")}


class EventStore:
    def __init__(self, writer: Writer, engine: Engine) -> None:
        self.writer = writer
        self.engine = engine
        self._events = s.events

    def append(self, operation_id: str, seq: int, kind: str, at: float, conn_id: str | None,
               line: str | bytes) -> int:
        """Queue the event's row; returns its writer item number (see the rules)."""
        writer = self.writer
        writer.insert(self._events, row(operation_id, seq, kind, at, conn_id, line))
        return writer.stats.submitted

    def bounds(self) -> dict[str, Bounds]:
        """Per operation, the oldest and the newest seq kept."""
        t = self._events
        query = select(t.c.operation_id, func.min(t.c.seq), func.max(t.c.seq)).group_by(t.c.operation_id)
        with self.engine.connect() as conn:
            return {op: Bounds(int(low), int(high)) for op, low, high in conn.execute(query)}

    def read(self, operation_id: str, after: int, limit: int = 1000) -> list[StoredEvent]:
        """The operation's kept events with seq > `after`, oldest first, at most `limit`."""
        t = self._events
        query = (select(t.c.seq, t.c.type, t.c.at, t.c.conn_id, t.c.line)
                 .where(t.c.operation_id == operation_id, t.c.seq > after).order_by(t.c.seq).limit(limit))
        with self.engine.connect() as conn:
            return [StoredEvent(operation_id, int(seq), kind, to_seconds(at), conn_id, line.encode("utf-8"))
                    for seq, kind, at, conn_id, line in conn.execute(query)]

    def of_call(self, operation_id: str, conn_id: str, since: float, until: float | None) -> list[StoredEvent]:
        """The operation's kept events of one call and its transfers (`conn_id`), oldest first. `since`/`until`
        bound their `at` (the call's start and end, with a margin: `CALL_MARGIN_S`), so that the read walks the
        `at` index over the call's lifetime only, not the whole log."""
        t = self._events
        query = (select(t.c.seq, t.c.type, t.c.at, t.c.conn_id, t.c.line)
                 .where(t.c.operation_id == operation_id, t.c.conn_id == conn_id,
                        t.c.at >= to_datetime(since - CALL_MARGIN_S)).order_by(t.c.seq))
        if until is not None:
            query = query.where(t.c.at <= to_datetime(until + CALL_MARGIN_S))
        with self.engine.connect() as conn:
            return [StoredEvent(operation_id, int(seq), kind, to_seconds(at), conn_id, line.encode("utf-8"))
                    for seq, kind, at, conn_id, line in conn.execute(query)]

    def prune(self, horizon: float, chunk: int = PRUNE_CHUNK) -> dict[str, Bounds]:
        """Delete the events up to each operation's last one older than `horizon` (unix seconds), never its newest
        (see the rules); the bounds after."""
        t = self._events
        cutoff: datetime = to_datetime(horizon)
        query = select(t.c.operation_id, func.max(t.c.seq)).where(t.c.at < cutoff).group_by(t.c.operation_id)
        with self.engine.connect() as conn:
            old = {op: int(seq) for op, seq in conn.execute(query)}
        bounds = self.bounds()
        for op, upto in old.items():
            upto = min(upto, bounds[op].last - 1)
            low = bounds[op].oldest
            while low <= upto:
                high = min(low + chunk - 1, upto)
                with self.engine.begin() as conn:
                    conn.execute(delete(t).where(t.c.operation_id == op, t.c.seq >= low, t.c.seq <= high))
                low = high + 1
        return self.bounds()
