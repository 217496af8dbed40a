"""Operation leases in PostgreSQL: taken, renewed, released and handed over by single conditional statements.

Rules
- One row per operation in `cluster_leases`: its owner node, its `epoch` and `expires_at`. Expiry is always
  computed by PostgreSQL (`now()`), never by a node, so the nodes' clocks do not matter; a node only says how long
  a lease lasts.
- Every change is ONE statement whose WHERE clause is the compare-and-set: `renew` succeeds only while the row
  names this node at the epoch it holds and has not expired; `take` only when the lease is free (released, never
  placed, expired) or is this node's own from a previous incarnation. Two nodes racing for a lease both run the
  statement; PostgreSQL's row lock serialises them and the second one's WHERE no longer matches.
- The epoch grows by one whenever a lease is taken (not when it is renewed): a takeover makes every write still
  in flight from the previous holder stale, and the fencing trigger refuses it (`fencing.py`).
- `release` frees a lease (node_id NULL, expired at once) only for its holder at its epoch; `request_move` records
  an administrator's handover target, which the holder honours by releasing and the target by adopting
  (`planner.py`).
These statements need PostgreSQL (`ON CONFLICT`, `now()` as the one clock): a cluster runs on PostgreSQL only.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as the database has it; `expired` is judged by PostgreSQL's clock at the time of the read."""

    operation_id: str
    node_id: str | None
    epoch: int
    expired: bool
    move_to: str | None
    seconds_left: float


_TAKE = text("""
INSERT INTO cluster_leases (operation_id, node_id, epoch, expires_at, move_to, updated_at)
VALUES (:op, :node, 1, now() + make_interval(secs => CAST(:seconds AS double precision)), NULL, now())
ON CONFLICT (operation_id) DO UPDATE
SET node_id = EXCLUDED.node_id, epoch = cluster_leases.epoch + 1, expires_at = EXCLUDED.expires_at,
    move_to = CASE WHEN cluster_leases.move_to = EXCLUDED.node_id THEN NULL ELSE cluster_leases.move_to END,
    updated_at = now()
WHERE cluster_leases.node_id IS NULL OR cluster_leases.expires_at <= now()
   OR (cluster_leases.node_id = EXCLUDED.node_id AND cluster_leases.epoch IS DISTINCT FROM CAST(:held AS BIGINT))
RETURNING epoch
""")

_RENEW = text("""
UPDATE cluster_leases
SET expires_at = now() + make_interval(secs => CAST(:seconds AS double precision)), updated_at = now()
WHERE operation_id = :op AND node_id = :node AND epoch = :epoch AND expires_at > now()
RETURNING epoch
""")

_RELEASE = text("""
UPDATE cluster_leases SET node_id = NULL, expires_at = now(), updated_at = now()
WHERE operation_id = :op AND node_id = :node AND epoch = :epoch
RETURNING epoch
""")

_MOVE = text("""
UPDATE cluster_leases SET move_to = :target, updated_at = now() WHERE operation_id = :op RETURNING node_id
""")

_READ = text("""
SELECT operation_id, node_id, epoch, expires_at <= now() AS expired, move_to,
       GREATEST(EXTRACT(EPOCH FROM expires_at - now()), 0) AS seconds_left
FROM cluster_leases ORDER BY operation_id
""")


def take(conn: Connection, operation_id: str, node_id: str, seconds: float, held: int | None = None) -> int | None:
    """Take the lease of `operation_id` for `node_id` for `seconds`; its new epoch, or None if another node holds
    it live. `held` is the epoch this process already holds, if any (a node adopting its own lease from a previous
    incarnation takes it with a new epoch; one that still holds it must `renew`)."""
    row = conn.execute(_TAKE, {"op": operation_id, "node": node_id, "seconds": seconds, "held": held}).first()
    return None if row is None else int(row[0])


def renew(conn: Connection, operation_id: str, node_id: str, epoch: int, seconds: float) -> bool:
    """Extend a lease this node holds at `epoch`; False if it expired or changed hands (the holder lost it)."""
    return conn.execute(_RENEW, {"op": operation_id, "node": node_id, "epoch": epoch,
                                 "seconds": seconds}).first() is not None


def release(conn: Connection, operation_id: str, node_id: str, epoch: int) -> bool:
    """Free a lease this node holds at `epoch` (drain, handover); False if it was no longer this node's."""
    return conn.execute(_RELEASE, {"op": operation_id, "node": node_id, "epoch": epoch}).first() is not None


def request_move(conn: Connection, operation_id: str, target: str) -> bool:
    """Ask for `operation_id` to be handed to node `target`; False if the operation has no lease row yet."""
    return conn.execute(_MOVE, {"op": operation_id, "target": target}).first() is not None


def read_all(conn: Connection) -> list[Lease]:
    return [Lease(r.operation_id, r.node_id, int(r.epoch), bool(r.expired), r.move_to, float(r.seconds_left))
            for r in conn.execute(_READ)]
