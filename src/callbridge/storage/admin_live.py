"""What a delete must not orphan: live work the write-through records hold, and directory objects that name the
one being deleted.

Rules
- Live work is read from what the server writes through (`records`): a call is live while its row has no
  `ended_at` (start-up reconciliation closes the rows a crashed node left open); a leg likewise; an agent is busy
  while its latest state (`agent_state_history`) is `ringing` or `on_call`.
- Each function returns the reason to refuse, one line naming what is in the way (the call, the DID, the agent),
  or None when the delete may go ahead. The caller raises it as an `AdminError`, before writing anything.
- References are refused rather than cascaded: the schema's `ON DELETE CASCADE` would silently take a DID away
  with its queue, so the operator is told to change or delete the DID first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, func, select

from callbridge.storage import schema as s

BUSY_STATES = ("ringing", "on_call")


def _live_calls(operation_id: str) -> Select[Any]:
    c = s.calls
    return select(c.c.conn_id).where(c.c.operation_id == operation_id, c.c.ended_at.is_(None),
                                     c.c.state != "ended").order_by(c.c.conn_id)


def _names(values: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def operation_in_use(conn: Connection, operation_id: str) -> str | None:
    live = list(conn.execute(_live_calls(operation_id)).scalars())
    if live:
        return f"operation {operation_id!r} has {len(live)} live call(s) ({_names(live)}): wait until they end"
    return None


def agent_in_use(conn: Connection, operation_id: str, extension: str) -> str | None:
    c, leg = s.calls, s.legs
    talking = list(conn.execute(_live_calls(operation_id).where(c.c.extension == extension))
                   .scalars())
    legs = list(conn.execute(
        select(leg.c.conn_id).join(c, c.c.conn_id == leg.c.conn_id)
        .where(c.c.operation_id == operation_id, leg.c.extension == extension, leg.c.ended_at.is_(None),
               leg.c.state != "ended", c.c.ended_at.is_(None))).scalars())
    calls = sorted(set(talking) | set(legs))
    if calls:
        return f"agent {extension!r} is on live call(s) {_names(calls)}: wait until they end"
    h = s.agent_state_history
    latest = conn.execute(select(h.c.state).where(h.c.operation_id == operation_id, h.c.extension == extension)
                          .order_by(h.c.entered_at.desc(), h.c.id.desc()).limit(1)).scalar()
    if latest in BUSY_STATES:
        return f"agent {extension!r} is {latest.replace('_', ' ')}: wait until the call ends"
    return None


def queue_in_use(conn: Connection, operation_id: str, name: str) -> str | None:
    c = s.calls
    waiting = conn.execute(select(func.count()).select_from(c).where(
        c.c.operation_id == operation_id, c.c.queue == name, c.c.state == "queued",
        c.c.ended_at.is_(None))).scalar_one()
    if waiting:
        return f"queue {name!r} has {waiting} caller(s) waiting: wait until they are answered or leave"
    d = s.dids
    dids = list(conn.execute(select(d.c.number).where(d.c.operation_id == operation_id, d.c.queue == name)
                             .order_by(d.c.number)).scalars())
    if dids:
        return f"queue {name!r} is where DID(s) {_names(dids)} route: change or delete those DIDs first"
    o = s.operations
    if conn.execute(select(o.c.id).where(o.c.id == operation_id, o.c.default_queue == name)).first():
        return f"queue {name!r} is the default_queue of operation {operation_id!r}: change it first"
    aq = s.agent_queues
    agents = list(conn.execute(select(aq.c.extension).where(aq.c.operation_id == operation_id, aq.c.queue == name)
                               .order_by(aq.c.extension)).scalars())
    if agents:
        return f"queue {name!r} has agent(s) {_names(agents)} in it: take them out of the queue first"
    return None


def trunk_in_use(conn: Connection, operation_id: str, name: str) -> str | None:
    d = s.dids
    dids = list(conn.execute(select(d.c.number).where(d.c.operation_id == operation_id, d.c.trunk == name)
                             .order_by(d.c.number)).scalars())
    if dids:
        return f"trunk {name!r} delivers DID(s) {_names(dids)}: change or delete those DIDs first"
    return None
