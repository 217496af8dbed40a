"""Node identity in the cluster: joining under an id no live node holds, the heartbeat, and the schema version.

Rules
- A node is live while its heartbeat (`cluster_nodes.heartbeat_at`, PostgreSQL's clock) is younger than the lease
  length. Joining is one conditional upsert: a new id is inserted; a known id is taken over only when its row's
  heartbeat is older than that (its previous process died or was stopped). A second process started with a live
  node's id gets nothing back and refuses to start (`NodeIdInUse`, one line, exit 2).
- Each process joins with a fresh random `incarnation`. The heartbeat updates the row only for that incarnation:
  a process paused long enough for a new one to take its id learns it on its next heartbeat (`NodeReplaced`) and
  must stop acting.
- Draining: a node drains when it stops (SIGTERM) or when `request_drain` marks its row; the heartbeat keeps the
  mark (it only ever sets it) and tells the node, which then releases every lease and takes none. Joining again
  (a restart) clears it.
- `slot` is a small number that stays with the node id for good: Kamailio's dispatcher set of that node.
- The schema must be exactly the one this code was built for. A node migrates an older database only while no
  other node is live on it; a database migrated by a newer callbridge (a revision this code does not know) or an
  older one with live nodes on it is refused (`SchemaMismatch`, one line, exit 2).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from callbridge.storage.migrate import alembic_config, current_revision, head_revision, upgrade


class ClusterStartError(Exception):
    """Why this node may not join the cluster; the message is one line for the operator."""


class NodeIdInUse(ClusterStartError):
    pass


class NodeReplaced(ClusterStartError):
    pass


class SchemaMismatch(ClusterStartError):
    pass


@dataclass(frozen=True, slots=True)
class NodeRow:
    node_id: str
    slot: int
    sip_host: str
    sip_port: int
    http_url: str
    draining: bool
    live: bool
    heartbeat_age: float
    started_at: datetime


_JOIN = text("""
INSERT INTO cluster_nodes (node_id, slot, sip_host, sip_port, http_url, incarnation, draining, started_at,
                           heartbeat_at)
VALUES (:node, (SELECT COALESCE(MAX(slot), 0) + 1 FROM cluster_nodes), :sip_host, :sip_port, :http_url,
        :incarnation, false, now(), now())
ON CONFLICT (node_id) DO UPDATE
SET sip_host = EXCLUDED.sip_host, sip_port = EXCLUDED.sip_port, http_url = EXCLUDED.http_url,
    incarnation = EXCLUDED.incarnation, draining = false, started_at = now(), heartbeat_at = now()
WHERE cluster_nodes.heartbeat_at <= now() - make_interval(secs => CAST(:seconds AS double precision))
RETURNING slot
""")

_HEARTBEAT = text("""
UPDATE cluster_nodes SET heartbeat_at = now(), draining = draining OR :draining
WHERE node_id = :node AND incarnation = :incarnation RETURNING draining
""")

_DRAIN = text("""
UPDATE cluster_nodes SET draining = true
WHERE node_id = :node AND heartbeat_at > now() - make_interval(secs => CAST(:seconds AS double precision))
RETURNING node_id
""")

_LEAVE = text("""
UPDATE cluster_nodes SET heartbeat_at = now() - interval '1 day', draining = true
WHERE node_id = :node AND incarnation = :incarnation
""")

_READ = text("""
SELECT node_id, slot, sip_host, sip_port, http_url, draining, started_at,
       heartbeat_at > now() - make_interval(secs => CAST(:seconds AS double precision)) AS live,
       GREATEST(EXTRACT(EPOCH FROM now() - heartbeat_at), 0) AS heartbeat_age
FROM cluster_nodes ORDER BY slot
""")


def new_incarnation() -> str:
    return secrets.token_hex(8)


def join(conn: Connection, node_id: str, incarnation: str, *, sip_host: str, sip_port: int, http_url: str,
         lease_seconds: float) -> int:
    """Record this process as node `node_id`; its slot. Raises `NodeIdInUse` if a live node has that id."""
    params = {"node": node_id, "incarnation": incarnation, "sip_host": sip_host, "sip_port": sip_port,
              "http_url": http_url, "seconds": lease_seconds}
    for _ in range(5):  # two new nodes may pick the same next slot at once: the unique index decides, retry
        try:
            with conn.begin_nested():
                row = conn.execute(_JOIN, params).first()
        except IntegrityError:
            continue
        if row is not None:
            return int(row[0])
        other = next((n for n in read_nodes(conn, lease_seconds) if n.node_id == node_id), None)
        where = f" at {other.sip_host}:{other.sip_port}, heartbeat {other.heartbeat_age:.1f} s ago" if other else ""
        raise NodeIdInUse(f"node id {node_id!r} is held by a live node{where}: give this node another "
                          f"--node-id, or stop that one first")
    raise ClusterStartError(f"could not choose a slot for node {node_id!r}: too many nodes joining at once")


def heartbeat(conn: Connection, node_id: str, incarnation: str, *, draining: bool = False) -> bool:
    """Say this node is alive; whether it is to drain (it said so, or `request_drain` asked it). Raises
    `NodeReplaced` if another process has taken its id meanwhile."""
    row = conn.execute(_HEARTBEAT, {"node": node_id, "incarnation": incarnation, "draining": draining}).first()
    if row is None:
        raise NodeReplaced(f"node id {node_id!r} was taken by another process while this one was not heard from")
    return bool(row[0])


def request_drain(conn: Connection, node_id: str, lease_seconds: float) -> bool:
    """Ask live node `node_id` to drain (`callbridge admin cluster drain`): at its next heartbeat it releases every
    lease and takes none until it restarts. False when no live node has that id."""
    return conn.execute(_DRAIN, {"node": node_id, "seconds": lease_seconds}).first() is not None


def leave(conn: Connection, node_id: str, incarnation: str) -> None:
    """Mark this node gone at once (after a drain): its id is free and the planner places nothing on it."""
    conn.execute(_LEAVE, {"node": node_id, "incarnation": incarnation})


def read_nodes(conn: Connection, lease_seconds: float) -> list[NodeRow]:
    return [NodeRow(r.node_id, int(r.slot), r.sip_host, int(r.sip_port), r.http_url, bool(r.draining),
                    bool(r.live), float(r.heartbeat_age), r.started_at)
            for r in conn.execute(_READ, {"seconds": lease_seconds})]


def prepare_schema(engine: Engine, lease_seconds: float) -> None:
    """Bring the database to this code's schema, or refuse (see the rules). PostgreSQL only."""
    if engine.dialect.name != "postgresql":
        raise ClusterStartError(f"a cluster needs PostgreSQL; the database URL names {engine.dialect.name}")
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current is not None and current not in known:
        raise SchemaMismatch(f"the database schema is at revision {current}, which this callbridge does not know "
                             f"(its newest is {head}): a newer callbridge migrated it; run that version")
    if current is not None and "cluster_nodes" in inspect(engine).get_table_names():
        with engine.connect() as conn:
            live = [n.node_id for n in read_nodes(conn, lease_seconds) if n.live]
        if live:
            raise SchemaMismatch(f"the database schema is at revision {current}, this callbridge needs {head}, and "
                                 f"nodes {', '.join(live)} are live on it: migrate with `callbridge admin` once "
                                 f"they are stopped (docs/cluster.md)")
    upgrade(engine)
