"""Start-up reconciliation: what a crash of this node left behind, and closing it in the records.

Theory of operation (docs/design.md, "Storage"): live call state is in memory, so after a crash the database still
shows the node's calls as open, its dialogs as live and its agents in call states. At start-up, before taking
traffic, the server
1. reads `find_leftovers(conn, node_id, now)`: open calls, live dialogs, registrations still valid, agents whose
   last recorded state (written by this node) is not `logout`;
2. sends a BYE on every leftover dialog (the B2BUA's job, from the `DialogRecord`s; RFC 3261 §15.1.1), deletes
   the relay's call of every anchored one and finishes the recordings the crash left in progress into their WAVs
   (`Leftovers.recordings`, `storage.open_recordings`);
3. calls `close_leftovers(conn, node_id, now)`: open calls and their legs are ended by "system", a CDR is written
   for each call that has none, the dialogs are deleted, expired registrations purged, and each logged-in agent is
   brought to the state the restart rule gives (`callcontrol.restart`: kept when its phone's registration is still
   valid and it was `ready` or in an aux state; `ready` with reason `restart` when it was on a call, rung or in
   after-call work; `logout` with reason `registration expired` when its registration ran out): an agent whose
   state changes gets a history row with that reason, and the caller's `event_rows` (the event log's rows
   reporting exactly those changes, made from the same `AgentRestart`s) are inserted in the same transaction.
Everything is scoped to `node_id`: another node's calls are never touched. `Leftovers.agents` is the rule applied
to every logged-in agent; the caller restores the kept and changed states in memory (`AgentDesk.restore`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from callbridge.b2bua.ports import OpenRecording
from callbridge.callcontrol.model import LOGOUT, CallRecord, Cdr, LegRecord
from callbridge.callcontrol.restart import AgentRestart
from callbridge.storage import schema as s
from callbridge.storage.open_recordings import read_left
from callbridge.storage.records import cdr_values, read_cdr, read_legs, read_open_calls
from callbridge.storage.rowwrites import upsert
from callbridge.storage.sip_state import (
    DialogRecord,
    RegistrationRecord,
    purge_expired_registrations,
    read_active_registrations,
    read_dialogs,
)
from callbridge.storage.times import to_datetime, to_seconds


@dataclass(frozen=True, slots=True)
class BusyAgent:
    """An agent logged in at the crash: its last state recorded by this node, that state's reason and time."""

    operation_id: str
    extension: str
    state: str
    reason: str
    entered_at: float


@dataclass(frozen=True, slots=True)
class Leftovers:
    calls: list[CallRecord]
    dialogs: list[DialogRecord]
    registrations: list[RegistrationRecord]
    busy_agents: list[BusyAgent]
    agents: list[AgentRestart]  # every busy agent through the restart rule, in the order of `busy_agents`
    recordings: list[OpenRecording] = field(default_factory=list)  # recordings in progress to finish (open_recordings)


def read_busy_agents(conn: Connection, node_id: str) -> list[BusyAgent]:
    """Agents whose latest state is anything but `logout` and was recorded by this node. An agent whose latest state
    another node recorded is that node's (a cluster node took the operation over while this one was down)."""
    h = s.agent_state_history
    latest = (select(h.c.operation_id, h.c.extension, func.max(h.c.id).label("id"))
              .group_by(h.c.operation_id, h.c.extension).subquery())
    query = (select(h.c.operation_id, h.c.extension, h.c.state, h.c.reason, h.c.entered_at)
             .join(latest, h.c.id == latest.c.id)
             .where(h.c.node_id == node_id, h.c.state != LOGOUT).order_by(h.c.operation_id, h.c.extension))
    return [BusyAgent(r.operation_id, r.extension, r.state, r.reason, to_seconds(r.entered_at))
            for r in conn.execute(query)]


def find_leftovers(conn: Connection, node_id: str, now: float) -> Leftovers:
    registrations = read_active_registrations(conn, node_id, now)
    registered = {(r.operation_id, r.extension) for r in registrations}
    busy = read_busy_agents(conn, node_id)
    return Leftovers(
        calls=read_open_calls(conn, node_id),
        dialogs=read_dialogs(conn, node_id),
        registrations=registrations,
        busy_agents=busy,
        agents=[AgentRestart.of(b.operation_id, b.extension, b.state, b.reason, b.entered_at,
                                (b.operation_id, b.extension) in registered, now) for b in busy],
        recordings=read_left(conn, node_id),
    )


def closing_cdr(call: CallRecord, legs: list[LegRecord], now: float) -> Cdr:
    return Cdr(
        conn_id=call.conn_id, operation_id=call.operation_id, node_id=call.node_id, direction=call.direction,
        customer_number=call.customer_number, queue=call.queue, agents=(call.agent,) if call.agent else (),
        started_at=call.created_at, answered_at=call.answered_at, ended_at=now, hangup_by="system",
        sip_cause=call.sip_cause, transfer_count=call.transfer_count, legs=tuple(legs),
        related_conn_id=call.related_conn_id,
    )


def close_leftovers(conn: Connection, node_id: str, now: float, *, restarts: Sequence[AgentRestart] | None = None,
                    event_rows: Sequence[dict[str, Any]] = ()) -> Leftovers:
    """Close in the records everything `find_leftovers` reports; returns what it closed. Run in a transaction.

    `restarts`: the agents' passages the caller numbered `event_rows` for (so rows and events come from the same
    decisions); None applies the rule to what is found now. Only the changed ones write a row."""
    found = find_leftovers(conn, node_id, now)
    ended = to_datetime(now)
    for call in found.calls:
        conn.execute(update(s.calls).where(s.calls.c.conn_id == call.conn_id)
                     .values(state="ended", ended_at=ended, hangup_by="system"))
        conn.execute(update(s.legs).where(s.legs.c.conn_id == call.conn_id, s.legs.c.ended_at.is_(None))
                     .values(state="ended", ended_at=ended, ended_by="system"))
        if read_cdr(conn, call.conn_id) is None:
            cdr = closing_cdr(call, read_legs(conn, call.conn_id), now)
            upsert(conn, s.cdrs, ("conn_id",), cdr_values(cdr))
    conn.execute(delete(s.dialogs).where(s.dialogs.c.node_id == node_id))
    purge_expired_registrations(conn, node_id, now)
    for agent in found.agents if restarts is None else restarts:
        if agent.changed:
            conn.execute(s.agent_state_history.insert().values(
                operation_id=agent.operation_id, extension=agent.extension, state=agent.state,
                previous_state=agent.previous, reason=agent.reason, conn_id=None, entered_at=to_datetime(agent.since),
                node_id=node_id))
    if event_rows:
        conn.execute(s.events.insert(), list(event_rows))
    return found

