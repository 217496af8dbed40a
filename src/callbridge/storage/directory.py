"""The directory (operations, agents, queues, trunks, DIDs, auxiliary states, activity codes, tokens, webhooks), read
from the database into memory and served from there: the domain's `DirectoryRepository` (webhooks are beyond the
port: the HTTP layer's dispatcher is configured from them).

Theory of operation
- `read_*` functions turn rows into the domain's frozen dataclasses; the administration commands use them too.
- `Directory.load()` reads everything once, synchronously (start-up, before the event loop serves anything);
  `await Directory.reload()` reads again in a worker thread and swaps the whole snapshot in one assignment, so a
  reader on the event loop sees either the old directory or the new one, never a mix.
- Change detection: every administrative write bumps the one-row `directory_version` counter in its own
  transaction (`bump_version`, called by `administration`), so the change and the bump commit together. A running
  node calls `await refresh()` every `directory_poll_seconds` (`watch`, started by `bootstrap`): one single-row
  SELECT in a worker thread, and the whole directory is read again only when the counter moved. A counter rather
  than max(updated_at): a revocation, an insert into a table without timestamps and a clock step all move it alike.
  The version is read *before* the snapshot, so a write committed between the two reads is in the snapshot and
  moves the counter past the one kept: the next poll reads once more (harmless), and no change is ever missed.
  A token created or revoked by `callbridge admin` while the server runs is thus seen within one poll.
- Every lookup is a dict access on the event loop: no I/O, no lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from callbridge.callcontrol.model import (
    ActivityCode,
    Agent,
    AuxState,
    DialPlan,
    Did,
    Operation,
    Queue,
    Token,
    Trunk,
    TrunkCredentials,
)
from callbridge.storage import schema as s

log = logging.getLogger(__name__)


def read_version(conn: Connection) -> int:
    """The directory's change counter (0 on a database that has never been administered)."""
    version = conn.execute(select(s.directory_version.c.version).where(s.directory_version.c.id == 1)).scalar()
    return 0 if version is None else int(version)


def bump_version(conn: Connection) -> None:
    """Move the change counter, in the caller's transaction: running nodes reload once it commits."""
    t = s.directory_version
    if conn.execute(update(t).where(t.c.id == 1).values(version=t.c.version + 1)).rowcount == 0:
        conn.execute(insert(t).values(id=1, version=1))  # the row migration 0002 makes was deleted by hand


def _where_operation(query: Any, table: Any, operation_id: str | None) -> Any:
    return query if operation_id is None else query.where(table.c.operation_id == operation_id)


def read_operations(conn: Connection) -> list[Operation]:
    t = s.operations
    rows = conn.execute(select(t).order_by(t.c.id)).mappings()
    return [
        Operation(
            id=r["id"], sip_domain=r["sip_domain"], realm=r["realm"], name=r["name"], time_zone=r["time_zone"],
            acw_seconds=r["acw_seconds"], after_transfer_state=r["after_transfer_state"],
            default_queue=r["default_queue"], ring_timeout=r["ring_timeout"], transfer_timeout=r["transfer_timeout"],
            dial_timeout=r["dial_timeout"], max_transfers=r["max_transfers"],
            recent_call_window=r["recent_call_window"],
            action_timeout=r["action_timeout"], token_concurrency_limit=r["token_concurrency_limit"],
            daily_quota=r["daily_quota"], media_mode=r["media_mode"], media_relay_down=r["media_relay_down"],
            hold_music=r["hold_music"], hold_music_name=r["hold_music_name"], transfer_audio=r["transfer_audio"],
            ringback_tone=r["ringback_tone"], recording=r["recording"],
            recording_retention_days=r["recording_retention_days"],
            digest_algorithms=tuple(a for a in r["digest_algorithms"].split(",") if a),
        )
        for r in rows
    ]


def read_agents(conn: Connection, operation_id: str | None = None) -> list[Agent]:
    aq = s.agent_queues
    memberships: dict[tuple[str, str], list[str]] = defaultdict(list)
    query = _where_operation(select(aq).order_by(aq.c.position, aq.c.queue), aq, operation_id)
    for r in conn.execute(query).mappings():
        memberships[(r["operation_id"], r["extension"])].append(r["queue"])
    t = s.agents
    query = _where_operation(select(t).order_by(t.c.operation_id, t.c.extension), t, operation_id)
    return [
        Agent(operation_id=r["operation_id"], extension=r["extension"], name=r["name"], ha1_md5=r["ha1_md5"],
              ha1_sha256=r["ha1_sha256"], queues=tuple(memberships[(r["operation_id"], r["extension"])]))
        for r in conn.execute(query).mappings()
    ]


def read_queues(conn: Connection, operation_id: str | None = None) -> list[Queue]:
    t = s.queues
    query = _where_operation(select(t).order_by(t.c.operation_id, t.c.name), t, operation_id)
    return [
        Queue(operation_id=r["operation_id"], name=r["name"], max_wait_seconds=r["max_wait_seconds"],
              ring_timeout=r["ring_timeout"], retry_after=r["retry_after"], recording=r["recording"],
              music=r["music"], music_name=r["music_name"], announcement=r["announcement"],
              announcement_name=r["announcement_name"], announcement_interval=r["announcement_interval"])
        for r in conn.execute(query).mappings()
    ]


def read_dids(conn: Connection, operation_id: str | None = None) -> list[Did]:
    t = s.dids
    query = _where_operation(select(t).order_by(t.c.operation_id, t.c.number), t, operation_id)
    return [
        Did(operation_id=r["operation_id"], number=r["number"], queue=r["queue"], trunk=r["trunk"] or "")
        for r in conn.execute(query).mappings()
    ]


def read_trunks(conn: Connection, operation_id: str | None = None) -> list[Trunk]:
    by_trunk: dict[tuple[str, str], list[Did]] = defaultdict(list)
    for did in read_dids(conn, operation_id):
        if did.trunk:
            by_trunk[(did.operation_id, did.trunk)].append(did)
    t = s.trunks
    query = _where_operation(select(t).order_by(t.c.operation_id, t.c.name), t, operation_id)
    out = []
    for r in conn.execute(query).mappings():
        credentials = None
        if r["auth_username"] is not None:
            credentials = TrunkCredentials(username=r["auth_username"], password=r["auth_password"] or "",
                                           realm=r["auth_realm"])
        out.append(Trunk(
            operation_id=r["operation_id"], name=r["name"], host=r["host"], port=r["port"],
            transport=r["transport"],
            dial_plan=DialPlan(allowed_patterns=tuple(r["dial_patterns"]), strip=r["dial_strip"],
                               prefix=r["dial_prefix"], min_length=r["dial_min_length"],
                               max_length=r["dial_max_length"]),
            caller_id_policy=r["caller_id_policy"], caller_id_number=r["caller_id_number"], register=r["register"],
            credentials=credentials, inbound_networks=tuple(r["inbound_networks"]), dtmf_mode=r["dtmf_mode"],
            dids=tuple(by_trunk[(r["operation_id"], r["name"])]),
        ))
    return out


def read_aux_states(conn: Connection, operation_id: str | None = None) -> list[AuxState]:
    t = s.aux_states
    query = _where_operation(select(t).order_by(t.c.operation_id, t.c.id), t, operation_id)
    return [AuxState(operation_id=r["operation_id"], id=r["id"], name=r["name"])
            for r in conn.execute(query).mappings()]


def read_activity_codes(conn: Connection, operation_id: str | None = None) -> list[ActivityCode]:
    t = s.activity_codes
    query = _where_operation(select(t).order_by(t.c.operation_id, t.c.code_group, t.c.code), t, operation_id)
    return [ActivityCode(operation_id=r["operation_id"], group=r["code_group"], code=r["code"], name=r["name"])
            for r in conn.execute(query).mappings()]


@dataclass(frozen=True, slots=True)
class Webhook:
    """An operation's webhook target as stored; `events` empty = every event type."""

    id: str
    operation_id: str
    url: str
    secret: str
    events: tuple[str, ...] = ()


def read_webhooks(conn: Connection, operation_id: str | None = None) -> list[Webhook]:
    t = s.webhooks
    query = _where_operation(select(t).order_by(t.c.operation_id, t.c.id), t, operation_id)
    return [Webhook(id=str(r["id"]), operation_id=r["operation_id"], url=r["url"], secret=r["secret"],
                    events=tuple(r["events"]))
            for r in conn.execute(query).mappings()]


def _token(r: Any) -> Token:
    return Token(id=str(r["id"]), operation_id=r["operation_id"], hash=r["token_sha256"],
                 concurrency_limit=r["concurrency_limit"], daily_quota=r["daily_quota"], label=r["label"],
                 revoked=r["revoked"])


def read_tokens(conn: Connection, operation_id: str | None = None) -> list[Token]:
    t = s.tokens
    query = _where_operation(select(t).order_by(t.c.id), t, operation_id)
    return [_token(r) for r in conn.execute(query).mappings()]


def read_token_by_hash(conn: Connection, token_hash: str) -> Token | None:
    row = conn.execute(select(s.tokens).where(s.tokens.c.token_sha256 == token_hash)).mappings().first()
    return None if row is None else _token(row)


@dataclass(frozen=True)
class DirectorySnapshot:
    operations: dict[str, Operation] = field(default_factory=dict)
    agents: dict[str, dict[str, Agent]] = field(default_factory=dict)
    queues: dict[str, dict[str, Queue]] = field(default_factory=dict)
    trunks: dict[str, list[Trunk]] = field(default_factory=dict)
    dids: dict[str, dict[str, Did]] = field(default_factory=dict)
    aux_states: dict[str, list[AuxState]] = field(default_factory=dict)
    activity_codes: dict[str, list[ActivityCode]] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)  # by hash
    webhooks: dict[str, list[Webhook]] = field(default_factory=dict)
    by_domain: dict[str, Operation] = field(default_factory=dict)

    @classmethod
    def read(cls, conn: Connection) -> DirectorySnapshot:
        snap = cls(operations={o.id: o for o in read_operations(conn)})
        snap.by_domain.update((o.sip_domain, o) for o in snap.operations.values())
        for agent in read_agents(conn):
            snap.agents.setdefault(agent.operation_id, {})[agent.extension] = agent
        for queue in read_queues(conn):
            snap.queues.setdefault(queue.operation_id, {})[queue.name] = queue
        for trunk in read_trunks(conn):
            snap.trunks.setdefault(trunk.operation_id, []).append(trunk)
        for did in read_dids(conn):
            snap.dids.setdefault(did.operation_id, {})[did.number] = did
        for aux in read_aux_states(conn):
            snap.aux_states.setdefault(aux.operation_id, []).append(aux)
        for code in read_activity_codes(conn):
            snap.activity_codes.setdefault(code.operation_id, []).append(code)
        snap.tokens.update((token.hash, token) for token in read_tokens(conn))
        for hook in read_webhooks(conn):
            snap.webhooks.setdefault(hook.operation_id, []).append(hook)
        return snap


class Directory:
    """`DirectoryRepository` served from memory; `load()` at start-up, `await reload()` afterwards."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._snap = DirectorySnapshot()
        self.version = -1  # the counter the snapshot was read at; -1 before the first read
        self.reloads = 0  # snapshots read since start-up (the load included)

    def _read(self, known: int | None = None) -> tuple[int, DirectorySnapshot] | None:
        """(version, snapshot), or None when the counter still says `known`. The version is read first (see the
        module's docstring)."""
        with self.engine.connect() as conn:
            version = read_version(conn)
            if version == known:
                return None
            return version, DirectorySnapshot.read(conn)

    def _keep(self, read: tuple[int, DirectorySnapshot]) -> None:
        self.version, self._snap = read
        self.reloads += 1

    def load(self) -> Directory:
        read = self._read()
        assert read is not None
        self._keep(read)
        return self

    async def reload(self) -> None:
        """Read the whole directory again, changed or not."""
        read = await asyncio.to_thread(self._read)
        assert read is not None
        self._keep(read)

    async def refresh(self) -> bool:
        """Read the directory again if an administrative write moved the counter since the last read; whether it
        did. One single-row SELECT when nothing changed."""
        read = await asyncio.to_thread(self._read, self.version)
        if read is None:
            return False
        self._keep(read)
        return True

    async def watch(self, interval: float, on_change: Callable[[], None] = lambda: None) -> None:
        """`refresh()` every `interval` seconds until cancelled, calling `on_change` (on the loop) after each
        reload, so holders of data derived from the directory rebuild it. A failed poll (database briefly
        unreachable) is logged and retried at the next tick: the node keeps serving the directory it has."""
        while True:
            await asyncio.sleep(interval)
            try:
                changed = await self.refresh()
            except Exception:
                log.warning("could not poll the directory for changes; retrying in %gs", interval, exc_info=True)
                continue
            if changed:
                log.info("directory reloaded at version %d", self.version)
                try:
                    on_change()
                except Exception:
                    log.exception("rebuilding what depends on the directory failed")

    # -- DirectoryRepository -----------------------------------------------------------------------------
    def get_operation(self, operation_id: str) -> Operation | None:
        return self._snap.operations.get(operation_id)

    def list_operations(self) -> Sequence[Operation]:
        return list(self._snap.operations.values())

    def get_agent(self, operation_id: str, extension: str) -> Agent | None:
        return self._snap.agents.get(operation_id, {}).get(extension)

    def list_agents(self, operation_id: str) -> Sequence[Agent]:
        return list(self._snap.agents.get(operation_id, {}).values())

    def get_queue(self, operation_id: str, name: str) -> Queue | None:
        return self._snap.queues.get(operation_id, {}).get(name)

    def list_queues(self, operation_id: str) -> Sequence[Queue]:
        return list(self._snap.queues.get(operation_id, {}).values())

    def list_trunks(self, operation_id: str) -> Sequence[Trunk]:
        return list(self._snap.trunks.get(operation_id, []))

    def get_did(self, operation_id: str, number: str) -> Did | None:
        return self._snap.dids.get(operation_id, {}).get(number)

    def list_aux_states(self, operation_id: str) -> Sequence[AuxState]:
        return list(self._snap.aux_states.get(operation_id, []))

    def list_activity_codes(self, operation_id: str) -> Sequence[ActivityCode]:
        return list(self._snap.activity_codes.get(operation_id, []))

    def get_token(self, token_hash: str) -> Token | None:
        return self._snap.tokens.get(token_hash)

    # -- beyond the port ---------------------------------------------------------------------------------
    def operation_for_domain(self, sip_domain: str) -> Operation | None:
        """The operation whose SIP domain is `sip_domain` (the registrar's lookup), or None."""
        return self._snap.by_domain.get(sip_domain)

    def list_webhooks(self, operation_id: str | None = None) -> list[Webhook]:
        """An operation's webhook targets (every operation's with None), as of the last read."""
        if operation_id is not None:
            return list(self._snap.webhooks.get(operation_id, []))
        return [hook for hooks in self._snap.webhooks.values() for hook in hooks]

