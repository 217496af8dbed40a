"""SIP state that must survive a crash: registrations (RFC 3261 §10) and the identity of each live dialog (§12).

The domain knows neither; the B2BUA adapter writes them through these repositories (fire-and-forget, like the
domain's records) and the server reads them back once at start-up:
- registrations not yet expired are restored, so agents' phones stay reachable across a restart without
  re-registering (the source address and transport are kept: behind NAT that is where requests must go, RFC 3581);
- dialogs left from before a crash are what reconciliation ends with a BYE on each (§15.1.1): Call-ID, tags, the
  next local CSeq, the route set and the remote target are all a BYE needs (§12.2.1.1).

The records are the B2BUA's (`callbridge.b2bua.ports`, its write-through port): these repositories implement its
`DialogStore` and `RegistrationStore`, and `bootstrap` hands them to the switch.

Rows carry the `node_id` that owns them; each node restores and reconciles only its own.

Registrations are the busiest write of a node (every REGISTER refresh rewrites its binding), so they are written
as one statement per group of saves: saves are gathered in an open group that is queued on the writer once, when
it opens, and taken (closed) by the writer thread when it runs; the group is written as ONE executemany of
`INSERT ... ON CONFLICT (key) DO UPDATE` (SQLite 3.24+, PostgreSQL 9.5+; a plain update-or-insert per row on any
other database), several saves of one binding collapsing to the last. A removal closes the open group first, so
writes still land in the order they were made.
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Any

from sqlalchemy import Connection, Dialect, Executable, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from callbridge.b2bua.ports import DialogRecord, RegistrationRecord
from callbridge.storage import schema as s
from callbridge.storage.records import WriteThrough
from callbridge.storage.rowwrites import upsert
from callbridge.storage.times import to_datetime, to_seconds
from callbridge.storage.writer import Writer

__all__ = ["DialogRecord", "DialogRecords", "RegistrationRecord", "RegistrationRecords", "dialog_of_row",
           "purge_expired_registrations", "read_active_registrations", "read_dialogs"]

_REGISTRATION_KEY = ("operation_id", "extension", "contact_uri")
_UPSERTS: dict[str, Executable | None] = {}  # dialect name -> the registrations' INSERT ... ON CONFLICT


def _registration_upsert(dialect: Dialect) -> Executable | None:
    """`INSERT ... ON CONFLICT (key) DO UPDATE SET every other column` for the dialect, or None without one."""
    if dialect.name not in _UPSERTS:
        t = s.registrations
        statement: Executable | None = None
        if dialect.name in ("sqlite", "postgresql"):
            module = sqlite if dialect.name == "sqlite" else postgresql
            inserting = module.insert(t)
            statement = inserting.on_conflict_do_update(
                index_elements=[t.c[k] for k in _REGISTRATION_KEY],
                set_={c.key: inserting.excluded[c.key] for c in t.c if c.key not in _REGISTRATION_KEY})
        _UPSERTS[dialect.name] = statement
    return _UPSERTS[dialect.name]


class RegistrationRecords(WriteThrough):
    """Registrations written through; `read_active_registrations` restores them at start-up."""

    def __init__(self, writer: Writer, node_id: str) -> None:
        super().__init__(writer, node_id)
        self._lock = threading.Lock()  # the event loop adds to the open group, the writer thread takes it
        self._open: dict[tuple[str, str, str], dict[str, Any]] | None = None

    def save_registration(self, reg: RegistrationRecord) -> None:
        """Insert or refresh a binding (by operation, extension and contact URI)."""
        row = {
            "operation_id": reg.operation_id, "extension": reg.extension, "contact_uri": reg.contact_uri,
            "source_host": reg.source_host, "source_port": reg.source_port, "transport": reg.transport,
            "expires_at": to_datetime(reg.expires_at), "call_id": reg.call_id, "cseq": reg.cseq,
            "user_agent": reg.user_agent, "node_id": self.node_id, "updated_at": to_datetime(reg.updated_at),
        }
        with self._lock:
            group = self._open
            if group is None:
                group = self._open = {}
                self.writer.submit(partial(self._write_group, group))
            group[(reg.operation_id, reg.extension, reg.contact_uri)] = row

    def _write_group(self, group: dict[tuple[str, str, str], dict[str, Any]], conn: Connection) -> None:
        """On the writer thread: close the group (later saves open the next one) and write it."""
        with self._lock:
            if self._open is group:
                self._open = None
            rows = list(group.values())
        statement = _registration_upsert(conn.dialect)
        if statement is None:
            for row in rows:
                upsert(conn, s.registrations, _REGISTRATION_KEY, row)
        else:
            conn.execute(statement, rows)

    def _close_group(self) -> None:
        """Saves made after this point go to a new group, queued behind whatever is queued next."""
        with self._lock:
            self._open = None

    def remove_registration(self, operation_id: str, extension: str, contact_uri: str) -> None:
        t = s.registrations
        self._close_group()
        self.writer.execute(delete(t).where(t.c.operation_id == operation_id, t.c.extension == extension,
                                            t.c.contact_uri == contact_uri))

    def remove_all_registrations(self, operation_id: str, extension: str) -> None:
        """`Contact: *` with `Expires: 0` (§10.2.2): every binding of the agent goes."""
        t = s.registrations
        self._close_group()
        self.writer.execute(delete(t).where(t.c.operation_id == operation_id, t.c.extension == extension))


class DialogRecords(WriteThrough):
    """Dialog identities written through while the dialog lives, removed when it ends."""

    def save_dialog(self, dialog: DialogRecord) -> None:
        """Insert or update a dialog (by leg id): on creation, and when its target, route set or CSeq change."""
        self._upsert(s.dialogs, ("leg_id",), {
            "leg_id": dialog.leg_id, "conn_id": dialog.conn_id, "call_id": dialog.call_id,
            "local_tag": dialog.local_tag, "remote_tag": dialog.remote_tag, "local_uri": dialog.local_uri,
            "remote_uri": dialog.remote_uri, "local_cseq": dialog.local_cseq, "remote_cseq": dialog.remote_cseq,
            "remote_target": dialog.remote_target, "route_set": list(dialog.route_set),
            "peer_host": dialog.peer_host, "peer_port": dialog.peer_port, "transport": dialog.transport,
            "media_relay": dialog.media_relay, "sent_sdp": dialog.sent_sdp or None,
            "remote_sdp": dialog.remote_sdp or None, "node_id": self.node_id,
            "created_at": to_datetime(dialog.created_at), "updated_at": to_datetime(dialog.updated_at),
        })

    def update_cseq(self, leg_id: str, local_cseq: int, remote_cseq: int | None, at: float) -> None:
        """The cheap update for every in-dialog request: only the sequence numbers move."""
        self.writer.update(s.dialogs, ("leg_id",), {"leg_id": leg_id, "local_cseq": local_cseq,
                                                    "remote_cseq": remote_cseq, "updated_at": to_datetime(at)})

    def update_sdp(self, leg_id: str, sent_sdp: bytes, remote_sdp: bytes, at: float) -> None:
        """A re-INVITE changed the dialog's SDPs: a node adopting the call holds and resumes from these."""
        self.writer.update(s.dialogs, ("leg_id",), {"leg_id": leg_id, "sent_sdp": sent_sdp or None,
                                                    "remote_sdp": remote_sdp or None, "updated_at": to_datetime(at)})

    def remove_dialog(self, leg_id: str) -> None:
        self.writer.delete(s.dialogs, ("leg_id",), {"leg_id": leg_id})


def registration_of_row(r: Any) -> RegistrationRecord:
    return RegistrationRecord(
        operation_id=r["operation_id"], extension=r["extension"], contact_uri=r["contact_uri"],
        source_host=r["source_host"], source_port=r["source_port"], transport=r["transport"],
        expires_at=to_seconds(r["expires_at"]), call_id=r["call_id"], cseq=r["cseq"],
        updated_at=to_seconds(r["updated_at"]), user_agent=r["user_agent"],
    )


def read_active_registrations(conn: Connection, node_id: str, now: float) -> list[RegistrationRecord]:
    """This node's bindings that have not expired at `now`, oldest first."""
    t = s.registrations
    query = (select(t).where(t.c.node_id == node_id, t.c.expires_at > to_datetime(now))
             .order_by(t.c.updated_at, t.c.operation_id, t.c.extension, t.c.contact_uri))
    return [registration_of_row(r) for r in conn.execute(query).mappings()]


def purge_expired_registrations(conn: Connection, node_id: str, now: float) -> int:
    """Delete this node's bindings expired at `now`; the number deleted."""
    t = s.registrations
    result = conn.execute(delete(t).where(t.c.node_id == node_id, t.c.expires_at <= to_datetime(now)))
    return int(result.rowcount)


def read_dialogs(conn: Connection, node_id: str) -> list[DialogRecord]:
    """The dialogs this node recorded as live."""
    t = s.dialogs
    rows = conn.execute(select(t).where(t.c.node_id == node_id).order_by(t.c.created_at, t.c.leg_id)).mappings()
    return [dialog_of_row(r) for r in rows]


def dialog_of_row(r: Any) -> DialogRecord:
    return DialogRecord(
        leg_id=r["leg_id"], conn_id=r["conn_id"], call_id=r["call_id"], local_tag=r["local_tag"],
        remote_tag=r["remote_tag"], local_uri=r["local_uri"], remote_uri=r["remote_uri"],
        local_cseq=r["local_cseq"], remote_cseq=r["remote_cseq"], remote_target=r["remote_target"],
        route_set=tuple(r["route_set"]), peer_host=r["peer_host"], peer_port=r["peer_port"],
        transport=r["transport"], created_at=to_seconds(r["created_at"]), updated_at=to_seconds(r["updated_at"]),
        media_relay=r["media_relay"], sent_sdp=bytes(r["sent_sdp"] or b""), remote_sdp=bytes(r["remote_sdp"] or b""),
    )

