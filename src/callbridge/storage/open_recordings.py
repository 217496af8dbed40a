"""Recordings in progress, written through: what finishes a recorded call's WAV when the node that recorded it is
gone (docs/operations.md, "Recordings").

Rules
- The recorder (b2bua/recorder.py) saves a call's recording after each start and stop the relay took
  (`RecordingJournalStore.save_recording`, an upsert on the writer thread): its first start, its pauses, whether the
  relay records now and the relay's port facing the customer, with the node that records it.
- The row leaves in the writer batch that stores the call's `recordings` row (`RecordingArchive`), so a recording is
  always either in progress here, or stored there, or both for the moment between; never neither.
- After a crash (`read_left`, start-up reconciliation): this node's rows whose call is not held by another node are
  finished by this node (stopped on the relay, the relay's call deleted, the segments joined). A row whose call
  another node holds is left to that node. A join that fails leaves its row, and the next start tries again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, or_, select

from callbridge.b2bua.ports import OpenRecording
from callbridge.storage import schema as s
from callbridge.storage.times import to_datetime, to_seconds
from callbridge.storage.writer import Writer

__all__ = ["RecordingJournalStore", "read_left", "recording_of_row"]


class RecordingJournalStore:
    """The B2BUA's `RecordingJournal` on the writer thread."""

    def __init__(self, writer: Writer, node_id: str, clock: Callable[[], float]) -> None:
        self.writer = writer
        self.node_id = node_id
        self.clock = clock

    def save_recording(self, recording: OpenRecording) -> None:
        self.writer.upsert(s.call_recordings, ("conn_id",), {
            "conn_id": recording.conn_id, "operation_id": recording.operation_id, "node_id": self.node_id,
            "started_at": to_datetime(recording.started_at), "on_relay": recording.on_relay,
            "off_since": None if recording.off_since is None else to_datetime(recording.off_since),
            "pauses": [[start, end] for start, end in recording.pauses], "customer_port": recording.customer_port,
            "updated_at": to_datetime(self.clock())})


def recording_of_row(row: Any) -> OpenRecording:
    off_since = row["off_since"]
    return OpenRecording(
        conn_id=row["conn_id"], operation_id=row["operation_id"], started_at=to_seconds(row["started_at"]),
        on_relay=bool(row["on_relay"]), off_since=None if off_since is None else to_seconds(off_since),
        pauses=tuple((float(start), float(end)) for start, end in row["pauses"]),
        customer_port=row["customer_port"])


def read_left(conn: Connection, node_id: str, operations: Collection[str] | None = None) -> list[OpenRecording]:
    """This node's recordings in progress whose call no other node holds open (see the rules), oldest first;
    `operations` narrows them to those operations (a cluster node reconciles only the operations it holds)."""
    r, c = s.call_recordings, s.calls
    query = (select(r).select_from(r.outerjoin(c, c.c.conn_id == r.c.conn_id))
             .where(r.c.node_id == node_id,
                    or_(c.c.conn_id.is_(None), c.c.ended_at.is_not(None), c.c.node_id == node_id))
             .order_by(r.c.started_at, r.c.conn_id))
    if operations is not None:
        query = query.where(r.c.operation_id.in_(list(operations)))
    left = [recording_of_row(row) for row in conn.execute(query).mappings()]
    return [rec if rec.customer_port is not None else replace(rec, customer_sdp=customer_sent_sdp(conn, rec.conn_id))
            for rec in left]


def customer_sent_sdp(conn: Connection, conn_id: str) -> bytes | None:
    """The SDP the call's customer was last sent, as its dialog was written (None: no such dialog)."""
    legs, dialogs = s.legs, s.dialogs
    sdp = conn.execute(select(dialogs.c.sent_sdp).select_from(dialogs.join(legs, legs.c.leg_id == dialogs.c.leg_id))
                       .where(legs.c.conn_id == conn_id, legs.c.role == "customer")).scalar()
    return bytes(sdp) if sdp else None
