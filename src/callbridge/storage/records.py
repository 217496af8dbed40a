"""What the domain writes through: agent states, console buttons, calls, legs, CDRs, transfers, dispositions and
recalls. These classes implement the domain's `StateRepository`, `CallRecordRepository` and `RecallRepository`.

Rules
- Every write method returns at once: it builds the row from the (frozen) record on the caller's thread, then
  queues the statement to the `Writer` thread. Nothing here raises into the domain; a write that fails is logged
  and counted by the writer.
- "Save" means insert or update by the record's key. With one writer per node and each call owned by one node,
  update-then-insert-if-missing in one transaction is race-free and the same SQL on SQLite and PostgreSQL.
- The `read_*` functions turn rows back into the domain's records; the server uses them at start-up and tests and
  tools use them to check what was written (always after `writer.flush()`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, select

from callbridge.callcontrol.model import (
    AgentStateChange,
    CallRecord,
    Cdr,
    DisplayChange,
    Disposition,
    LegRecord,
    Recall,
    TransferRecord,
)
from callbridge.storage import schema as s
from callbridge.storage.times import to_datetime, to_datetime_or_none, to_seconds, to_seconds_or_none
from callbridge.storage.writer import Writer


class WriteThrough:
    """Base of the write-through repositories: a writer to queue on and the node the writes come from."""

    def __init__(self, writer: Writer, node_id: str) -> None:
        self.writer = writer
        self.node_id = node_id

    def _upsert(self, table: Table, keys: Sequence[str], values: dict[str, Any]) -> None:
        self.writer.upsert(table, keys, values)

    def _insert(self, table: Table, values: dict[str, Any]) -> None:
        self.writer.insert(table, values)


class StateRecords(WriteThrough):
    """`StateRepository`: the agent state history and the agent's console buttons."""

    def record_agent_state(self, change: AgentStateChange) -> None:
        self._insert(s.agent_state_history, {
            "operation_id": change.operation_id, "extension": change.agent, "state": change.state,
            "previous_state": change.previous, "reason": change.reason, "conn_id": change.conn_id,
            "entered_at": to_datetime(change.at), "node_id": self.node_id,
        })

    def record_display(self, change: DisplayChange) -> None:
        self._upsert(s.agent_display, ("operation_id", "extension", "button"), {
            "operation_id": change.operation_id, "extension": change.agent, "button": change.button,
            "visible": change.visible, "changed_at": to_datetime(change.at),
        })


def _leg_json(leg: LegRecord) -> dict[str, Any]:
    """`dataclasses.asdict(leg)` (every field a plain value, so nothing to copy deeply), written out: a CDR has one
    per leg, and `asdict` was most of the cost of building a CDR's row."""
    return {"leg_id": leg.leg_id, "conn_id": leg.conn_id, "role": leg.role, "party": leg.party, "state": leg.state,
            "agent": leg.agent, "created_at": leg.created_at, "answered_at": leg.answered_at,
            "ended_at": leg.ended_at, "sip_status": leg.sip_status, "ended_by": leg.ended_by}


def cdr_values(cdr: Cdr) -> dict[str, Any]:
    return {
        "conn_id": cdr.conn_id, "operation_id": cdr.operation_id, "node_id": cdr.node_id,
        "direction": cdr.direction, "customer_number": cdr.customer_number, "queue": cdr.queue,
        "agents": list(cdr.agents), "started_at": to_datetime(cdr.started_at),
        "answered_at": to_datetime_or_none(cdr.answered_at), "ended_at": to_datetime(cdr.ended_at),
        "hangup_by": cdr.hangup_by, "sip_cause": cdr.sip_cause, "transfer_count": cdr.transfer_count,
        "legs": [_leg_json(leg) for leg in cdr.legs], "related_conn_id": cdr.related_conn_id,
        "end_reason": cdr.end_reason,
    }


class CallRecords(WriteThrough):
    """`CallRecordRepository`: calls, legs, CDRs, transfer records and dispositions."""

    def save_call(self, call: CallRecord) -> None:
        self._upsert(s.calls, ("conn_id",), {
            "conn_id": call.conn_id, "operation_id": call.operation_id, "node_id": call.node_id,
            "direction": call.direction, "customer_number": call.customer_number, "state": call.state,
            "queue": call.queue, "extension": call.agent, "started_at": to_datetime(call.created_at),
            "answered_at": to_datetime_or_none(call.answered_at), "ended_at": to_datetime_or_none(call.ended_at),
            "hangup_by": call.hangup_by, "sip_cause": call.sip_cause, "transfer_count": call.transfer_count,
            "related_conn_id": call.related_conn_id,
        })

    def save_leg(self, leg: LegRecord) -> None:
        self._upsert(s.legs, ("leg_id",), {
            "leg_id": leg.leg_id, "conn_id": leg.conn_id, "role": leg.role, "party": leg.party, "state": leg.state,
            "extension": leg.agent, "started_at": to_datetime(leg.created_at),
            "answered_at": to_datetime_or_none(leg.answered_at), "ended_at": to_datetime_or_none(leg.ended_at),
            "sip_status": leg.sip_status, "ended_by": leg.ended_by,
        })

    def save_cdr(self, cdr: Cdr) -> None:
        self._upsert(s.cdrs, ("conn_id",), cdr_values(cdr))

    def save_transfer(self, transfer: TransferRecord) -> None:
        self._upsert(s.transfers, ("id",), {
            "id": transfer.id, "conn_id": transfer.conn_id, "operation_id": transfer.operation_id,
            "kind": transfer.kind, "extension": transfer.agent, "target": transfer.target,
            "target_kind": transfer.target_kind, "state": transfer.state, "outcome": transfer.outcome,
            "sip_cause": transfer.sip_cause, "created_at": to_datetime(transfer.created_at),
            "updated_at": to_datetime(transfer.updated_at), "ended_at": to_datetime_or_none(transfer.ended_at),
            "target_leg_id": transfer.target_leg_id, "dialled": transfer.dialled, "timeout": transfer.timeout,
            "customer_requeued": transfer.customer_requeued, "node_id": self.node_id,
        })

    def save_disposition(self, disposition: Disposition) -> None:
        self._insert(s.dispositions, {
            "operation_id": disposition.operation_id, "conn_id": disposition.conn_id,
            "extension": disposition.agent, "cod_act": disposition.cod_act, "cod_act_2": disposition.cod_act_2,
            "comments": disposition.comments, "typed_at": to_datetime(disposition.at),
        })


class RecallRecords(WriteThrough):
    """`RecallRepository`: recalls written through, and read back once at start-up."""

    def __init__(self, writer: Writer, node_id: str, engine: Engine) -> None:
        super().__init__(writer, node_id)
        self.engine = engine

    def save_recall(self, recall: Recall) -> None:
        self._upsert(s.recalls, ("id",), {
            "id": recall.id, "operation_id": recall.operation_id, "extension": recall.agent,
            "customer_phone": recall.customer_phone, "due_at": to_datetime(recall.due_at),
            "recall_type": recall.type_recall, "created_at": to_datetime(recall.created_at),
            "state": recall.state, "conn_id": recall.conn_id,
        })

    def pending_recalls(self) -> Sequence[Recall]:
        with self.engine.connect() as conn:
            return read_recalls(conn, states=("pending", "due"))


# --- reading records back ---------------------------------------------------------------------------------------


def call_of_row(r: Any) -> CallRecord:
    return CallRecord(
        conn_id=r["conn_id"], operation_id=r["operation_id"], node_id=r["node_id"], direction=r["direction"],
        customer_number=r["customer_number"], state=r["state"], queue=r["queue"], agent=r["extension"],
        created_at=to_seconds(r["started_at"]), answered_at=to_seconds_or_none(r["answered_at"]),
        ended_at=to_seconds_or_none(r["ended_at"]), hangup_by=r["hangup_by"], sip_cause=r["sip_cause"],
        transfer_count=r["transfer_count"], related_conn_id=r["related_conn_id"],
    )


def read_call(conn: Connection, conn_id: str) -> CallRecord | None:
    row = conn.execute(select(s.calls).where(s.calls.c.conn_id == conn_id)).mappings().first()
    return None if row is None else call_of_row(row)


def read_open_calls(conn: Connection, node_id: str) -> list[CallRecord]:
    """Calls this node held that were never closed (no `ended_at`): what a crash left behind."""
    t = s.calls
    query = select(t).where(t.c.node_id == node_id, t.c.ended_at.is_(None)).order_by(t.c.started_at)
    return [call_of_row(r) for r in conn.execute(query).mappings()]


def read_legs(conn: Connection, conn_id: str) -> list[LegRecord]:
    t = s.legs
    rows = conn.execute(select(t).where(t.c.conn_id == conn_id).order_by(t.c.started_at, t.c.leg_id)).mappings()
    return [
        LegRecord(leg_id=r["leg_id"], conn_id=r["conn_id"], role=r["role"], party=r["party"], state=r["state"],
                  agent=r["extension"], created_at=to_seconds(r["started_at"]),
                  answered_at=to_seconds_or_none(r["answered_at"]), ended_at=to_seconds_or_none(r["ended_at"]),
                  sip_status=r["sip_status"], ended_by=r["ended_by"])
        for r in rows
    ]


def read_cdr(conn: Connection, conn_id: str) -> Cdr | None:
    r = conn.execute(select(s.cdrs).where(s.cdrs.c.conn_id == conn_id)).mappings().first()
    return None if r is None else cdr_of_row(r)


def cdr_of_row(r: Any) -> Cdr:
    return Cdr(
        conn_id=r["conn_id"], operation_id=r["operation_id"], node_id=r["node_id"], direction=r["direction"],
        customer_number=r["customer_number"], queue=r["queue"], agents=tuple(r["agents"]),
        started_at=to_seconds(r["started_at"]), answered_at=to_seconds_or_none(r["answered_at"]),
        ended_at=to_seconds(r["ended_at"]), hangup_by=r["hangup_by"], sip_cause=r["sip_cause"],
        transfer_count=r["transfer_count"], legs=tuple(LegRecord(**leg) for leg in r["legs"]),
        related_conn_id=r["related_conn_id"], end_reason=r["end_reason"],
    )


def read_transfer(conn: Connection, transfer_id: str) -> TransferRecord | None:
    r = conn.execute(select(s.transfers).where(s.transfers.c.id == transfer_id)).mappings().first()
    return None if r is None else transfer_of_row(r)


def transfer_of_row(r: Any) -> TransferRecord:
    return TransferRecord(
        id=r["id"], conn_id=r["conn_id"], operation_id=r["operation_id"], kind=r["kind"], agent=r["extension"],
        target=r["target"], target_kind=r["target_kind"], state=r["state"], created_at=to_seconds(r["created_at"]),
        updated_at=to_seconds(r["updated_at"]), outcome=r["outcome"], sip_cause=r["sip_cause"],
        ended_at=to_seconds_or_none(r["ended_at"]), target_leg_id=r["target_leg_id"], dialled=r["dialled"],
        timeout=r["timeout"], customer_requeued=r["customer_requeued"],
    )


def read_dispositions(conn: Connection, conn_id: str) -> list[Disposition]:
    t = s.dispositions
    rows = conn.execute(select(t).where(t.c.conn_id == conn_id).order_by(t.c.id)).mappings()
    return [Disposition(operation_id=r["operation_id"], conn_id=r["conn_id"], agent=r["extension"],
                        cod_act=r["cod_act"], cod_act_2=r["cod_act_2"], comments=r["comments"],
                        at=to_seconds(r["typed_at"]))
            for r in rows]


def read_agent_states(conn: Connection, operation_id: str, extension: str) -> list[AgentStateChange]:
    """An agent's state history, oldest first."""
    t = s.agent_state_history
    query = (select(t).where(t.c.operation_id == operation_id, t.c.extension == extension)
             .order_by(t.c.entered_at, t.c.id))
    return [AgentStateChange(operation_id=r["operation_id"], agent=r["extension"], state=r["state"],
                             reason=r["reason"], at=to_seconds(r["entered_at"]), previous=r["previous_state"],
                             conn_id=r["conn_id"])
            for r in conn.execute(query).mappings()]


def read_recalls(conn: Connection, states: Sequence[str] | None = None) -> list[Recall]:
    t = s.recalls
    query = select(t).order_by(t.c.due_at, t.c.id)
    if states is not None:
        query = query.where(t.c.state.in_(list(states)))
    return [Recall(id=r["id"], operation_id=r["operation_id"], agent=r["extension"],
                   customer_phone=r["customer_phone"], due_at=to_seconds(r["due_at"]), type_recall=r["recall_type"],
                   created_at=to_seconds(r["created_at"]), state=r["state"], conn_id=r["conn_id"])
            for r in conn.execute(query).mappings()]
