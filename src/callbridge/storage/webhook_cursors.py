"""Webhook cursors: per stored webhook target, the last seq delivered (or given up), and each target's lag.

Rules
- A cursor is saved through the writer (`save`: an upsert by webhook id, folded per key within a batch), after
  the receiver acknowledged the event: delivery is at least once, and a restart resumes after the saved seq.
- A target without a cursor row (new, or made before the event log existed) starts at the operation's last seq.
- `webhook_status` is what `callbridge admin webhook status` prints: per target, the log's last seq, the cursor,
  the lag (last - cursor) and the age of the oldest event not yet delivered (None when nothing is waiting).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, select

from callbridge.storage import schema as s
from callbridge.storage.times import to_datetime, to_seconds
from callbridge.storage.writer import Writer


class CursorStore:
    def __init__(self, writer: Writer, engine: Engine) -> None:
        self.writer = writer
        self.engine = engine

    def load(self) -> dict[int, int]:
        """webhook id -> last seq delivered."""
        t = s.webhook_cursors
        with self.engine.connect() as conn:
            return {int(hook): int(seq) for hook, seq in conn.execute(select(t.c.webhook_id, t.c.last_seq))}

    def load_one(self, webhook_id: int) -> int | None:
        """The last seq delivered to one target; None without a cursor."""
        t = s.webhook_cursors
        with self.engine.connect() as conn:
            seq = conn.execute(select(t.c.last_seq).where(t.c.webhook_id == webhook_id)).scalar()
        return None if seq is None else int(seq)

    def save(self, webhook_id: int, last_seq: int, now: float | None = None) -> None:
        self.writer.upsert(s.webhook_cursors, ("webhook_id",), {
            "webhook_id": webhook_id, "last_seq": last_seq,
            "updated_at": to_datetime(time.time() if now is None else now)})


@dataclass(frozen=True, slots=True)
class WebhookLag:
    webhook_id: str
    operation_id: str
    url: str
    last_seq: int  # the operation's newest seq in the log
    cursor: int | None  # the last seq delivered; None = no cursor yet (starts at the last seq)
    lag: int  # events not yet delivered: last_seq - cursor
    oldest_undelivered_age_s: float | None  # age of the first event after the cursor; None when caught up


def webhook_status(conn: Connection, operation_id: str | None = None, *, now: float | None = None
                   ) -> list[WebhookLag]:
    """Each webhook target's lag behind the event log (see the rules)."""
    now = time.time() if now is None else now
    hooks, cursors, events = s.webhooks, s.webhook_cursors, s.events
    query = (select(hooks.c.id, hooks.c.operation_id, hooks.c.url, cursors.c.last_seq)
             .outerjoin(cursors, cursors.c.webhook_id == hooks.c.id).order_by(hooks.c.operation_id, hooks.c.id))
    if operation_id is not None:
        query = query.where(hooks.c.operation_id == operation_id)
    out = []
    for hook_id, op, url, cursor in conn.execute(query).all():
        last = conn.execute(select(func.max(events.c.seq)).where(events.c.operation_id == op)).scalar() or 0
        position = last if cursor is None else int(cursor)
        first_at = conn.execute(select(events.c.at).where(events.c.operation_id == op, events.c.seq > position)
                                .order_by(events.c.seq).limit(1)).scalar()
        age = None if first_at is None else max(0.0, now - to_seconds(first_at))
        out.append(WebhookLag(str(hook_id), op, url, int(last), None if cursor is None else int(cursor),
                              max(0, int(last) - position), age))
    return out
