"""The daily quota counted in the database (`http.auth.QuotaLedger`), for a cluster's nodes (PostgreSQL only).

Rules
- One row per token (`token_usage`): the day and that day's count. `count` is one statement, an upsert whose
  update is conditional: a later day starts the count at 1; the same day adds 1 while the count is below the
  quota; a quota used up changes nothing and returns no row (the request is refused, not counted). PostgreSQL's
  row lock serialises two nodes counting the same token at once, so the count is exact cluster-wide.
- The day is the caller's (the operation's day by the node's clock, as on a single node). A node whose clock is a
  little behind at midnight counts into the newer day already stored rather than starting the older one again
  (`GREATEST`): the count never goes back.
- Written directly, not through the writer: the answer depends on it, and it must be durable before the request
  runs so that a `kill -9` of the node does not give the token its requests back. Not fenced: any node may count
  (in practice the operation's owner does, as every request is admitted there).
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Engine, text

_COUNT = text("""
INSERT INTO token_usage (token_id, day, used) VALUES (:token, :day, 1)
ON CONFLICT (token_id) DO UPDATE
SET used = CASE WHEN token_usage.day < EXCLUDED.day THEN 1 ELSE token_usage.used + 1 END,
    day = GREATEST(token_usage.day, EXCLUDED.day)
WHERE token_usage.day < EXCLUDED.day OR token_usage.used < :quota
RETURNING used
""")


class TokenUsage:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def count(self, token_id: str, day: date, quota: int) -> int | None:
        """The day's count with this request, or None when `quota` was used up (nothing counted)."""
        with self.engine.begin() as conn:
            used = conn.execute(_COUNT, {"token": int(token_id), "day": day, "quota": quota}).scalar()
        return None if used is None else int(used)

    def used(self, token_id: str, day: date) -> int:
        """The count of `day` (0 for another day or none)."""
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT day, used FROM token_usage WHERE token_id = :token"),
                               {"token": int(token_id)}).first()
        return int(row[1]) if row is not None and row[0] == day else 0
