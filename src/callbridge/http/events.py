"""The event log: the domain's `EventSink`, a ring buffer of wire events per operation, and their streams.

Rules (`openapi.json`, `Event`, `GET /v2/events`, `x-websocket`):
- An Event is `{"seq", "type", "at", "operation", "data"}`. `seq` is per operation: it starts at 1, has no gaps and
  only grows. The domain numbers all its events in one sequence and publishes some that have no wire type (action
  outcomes, queueing, dispositions, recalls); the log gives each wire event its operation's next number, so the
  wire sequence has no gaps.
- `data` is built when the event is published, from the service's state at that moment (`callbridge.http.wire`:
  which domain events have a wire type, and their `data`), and serialised at most once, when something first
  reads the event's `text` or `line` (its `at` formatted then too): the durable log keeps the text, streams,
  webhooks and call histories share its UTF-8 bytes (encoded once, when first sent); without a store, an event
  nobody reads costs no JSON at all.
- Retention: an event is dropped only when it is both older than 7 days and not among the operation's last
  100000 (the document's "whichever is more"). Durable (built with a `store`, as `bootstrap` does): the database
  keeps the events for `retention_s` (pruned off the loop, `prune`) and memory keeps the last `ring` per operation
  as a cache; a read older than the ring goes to the database.
- Durable: each wire event's text is serialised once at publish and its row queued on the writer in the same loop
  turn as the state change it reports (one transaction, `storage.event_log`). Consumers (streams, webhooks,
  `committed_seq`) see an event only once the writer reports its batch committed: one `call_soon_threadsafe` per
  batch moves the operations' visible seq forward, wakes their waiters and calls the wire listeners. At start-up
  `restore` takes each operation's stored oldest and newest seq, so a restart continues the sequence and never
  reuses a seq.
- A call's history (its events and its transfers', `call_history`): from memory while memory has all of them;
  durable, once the ring moved past the call's first event or after a restart, from the database
  (`EventStore.of_call`). A transfer's `ringing_at`/`answered_at` likewise (`transfer_times_of`).
- Consumers resume with `after=<seq>`: the events with a greater seq that are still kept, then live ones. An
  `after` older than the oldest kept event (minus one) answers 410 EVENTS_EXPIRED with `oldest_seq`.

Theory of operation: `publish` runs on the event loop's thread, inside the service's call. It appends, then wakes
the operation's waiters (futures resolved without awaiting) and calls the listeners (the action waiter sees every
domain event; webhooks see wire events). A stream keeps a cursor (the last seq it sent) and, when woken, reads the
ring after its cursor, so a slow consumer never loses events while they are kept, and a burst wakes it once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from callbridge.callcontrol.events import DomainEvent
from callbridge.callcontrol.model import LOGOUT
from callbridge.callcontrol.restart import AgentRestart
from callbridge.http.resources import agent_state, rfc3339
from callbridge.http.wire import EventContext, WireMapper
from callbridge.storage.event_log import Bounds, EventStore, row

_log = logging.getLogger(__name__)

RETENTION_S = 7 * 24 * 3600.0
RETENTION_COUNT = 100_000
RING = 10_000  # durable: the events kept in memory per operation
_DB_PAGE = 1000
_KEEP_ENDED_CALLS = 1000
_KEEP_TRUNCATED = 10_000


@dataclass(frozen=True, slots=True)
class WireEvent:
    seq: int
    type: str
    at: float
    operation: str
    data: dict[str, Any]
    conn_id: str | None
    _line: bytes | None = field(default=None, repr=False, compare=False)  # `line`, once something read it
    _text: str | None = field(default=None, repr=False, compare=False)  # `text`, once something read it

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "at": rfc3339(self.at), "operation": self.operation,
                "data": self.data}

    @property
    def text(self) -> str:
        """The JSON object as text, no trailing newline; serialised on first use, then shared (the durable log
        keeps it as it is). The same text as `json.dumps(self.to_json(), separators=(",", ":"),
        ensure_ascii=False)`, built around `data`'s JSON alone (the durable log serialises every event on the
        loop: this is its cost)."""
        text = self._text
        if text is None:
            line = self._line
            if line is not None:
                text = line.decode("utf-8")
            else:
                text = (f'{{"seq":{self.seq},"type":{_quoted(self.type)},"at":"{_stamp(self.at)}",'
                        f'"operation":{_quoted(self.operation)},"data":{_encode(self.data)}}}')
            object.__setattr__(self, "_text", text)  # a cache of a frozen event's own text
        return text

    @property
    def line(self) -> bytes:
        """`text` in UTF-8: what streams and webhooks send; encoded on first use, then shared."""
        line = self._line
        if line is None:
            line = self.text.encode()
            object.__setattr__(self, "_line", line)  # a cache of a frozen event's own bytes
        return line


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# `_JSON.encode` of a dict, without building an encoder per call (what `JSONEncoder.iterencode` does): the C
# encoder `iterencode` would make, made once. Its circular-reference markers are shared between calls, so they are
# cleared after a call that failed half-way (the C encoder leaves its markers behind then).
_MARKERS: dict[int, Any] = {}
_C_ENCODER = (None if c_make_encoder is None else
              c_make_encoder(_MARKERS, _JSON.default, encode_basestring, None, ":", ",", False, False, True))


def _encode(value: Any) -> str:
    if _C_ENCODER is None or not isinstance(value, dict):
        return _JSON.encode(value)
    try:
        return "".join(_C_ENCODER(value, 0))
    except BaseException:
        _MARKERS.clear()
        raise


_QUOTED: dict[str, str] = {}
_SECOND: list[Any] = [None, ""]  # the whole second last formatted, and its "YYYY-MM-DDTHH:MM:SS."


def _time(text: Any) -> float | None:
    """An event's RFC 3339 time (`rfc3339`) back to unix seconds; None for null."""
    return None if text is None else datetime.fromisoformat(str(text)).timestamp()


def _quoted(text: str) -> str:
    quoted = _QUOTED.get(text)
    if quoted is None:
        quoted = _encode(text)
        if len(_QUOTED) < 10_000:  # event types and operation ids: a few of each
            _QUOTED[text] = quoted
    return quoted


def _stamp(t: float) -> str:
    """`rfc3339(t)`, with the date and time of the second reused: datetime's own rounding to the microsecond
    (half to even, carrying into the second), then milliseconds truncated."""
    frac, whole = math.modf(t)
    micro = round(frac * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    elif micro < 0:
        whole, micro = whole - 1, micro + 1_000_000
    if _SECOND[0] != whole:
        _SECOND[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))]
    return f"{_SECOND[1]}{micro // 1000:03d}Z"


class _OperationLog:
    __slots__ = ("ended", "events", "last_seq", "visible", "waiters")

    def __init__(self) -> None:
        self.events: deque[WireEvent] = deque()
        self.last_seq = 0  # the last seq given
        self.visible = 0  # the last seq consumers may see (durable: committed)
        self.waiters: list[asyncio.Future[None]] = []
        self.ended: OrderedDict[str, None] = OrderedDict()


class EventLog:
    """Implements the domain's EventSink port."""

    def __init__(self, *, retention_s: float = RETENTION_S, retention_count: int = RETENTION_COUNT,
                 clock: Callable[[], float] = time.time, store: EventStore | None = None,
                 ring: int = RING) -> None:
        self.retention_s = retention_s
        self.retention_count = retention_count
        self._clock = clock
        self._wire = WireMapper()
        self._ops: dict[str, _OperationLog] = {}
        self._by_call: dict[str, list[WireEvent]] = {}
        self._truncated: OrderedDict[str, None] = OrderedDict()  # durable: calls whose first event left the ring
        self._listeners: list[Callable[[DomainEvent], None]] = []
        self._wire_listeners: list[Callable[[WireEvent], None]] = []
        self.published = 0
        self._store = store
        self._ring = ring
        self._uncommitted: deque[tuple[int, WireEvent]] = deque()  # (writer item number, event)
        self._oldest_kept: dict[str, int] = {}  # durable: the oldest seq in the database, per operation
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- durability ---------------------------------------------------------------------------------------------

    def restore(self, bounds: dict[str, Bounds]) -> None:
        """Continue each operation's sequence from the stored one: at start-up, and when a cluster node takes an
        operation (back) over. Events this log still holds of an earlier ownership are dropped when others were
        numbered after them meanwhile: memory holds a run of consecutive seqs (`since` counts on it), and the
        database has them all."""
        for op, kept in bounds.items():
            log = self._ops.setdefault(op, _OperationLog())
            if kept.last > log.last_seq:
                while log.events:
                    self._forget(log.events.popleft(), durable=self._store is not None)
            log.last_seq = log.visible = max(log.last_seq, kept.last)
            self._oldest_kept[op] = kept.oldest

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Be told (on `loop`) when the writer committed events: once per batch."""
        self._loop = loop
        if self._store is not None:
            self._store.writer.on_done = self._report

    def _report(self, done: int) -> None:  # the writer's thread
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._committed, done)
            except RuntimeError:  # the loop closed in between: nobody is left to tell
                pass

    def _committed(self, done: int) -> None:
        woken: list[_OperationLog] = []
        pending = self._uncommitted
        while pending and pending[0][0] <= done:
            wire = pending.popleft()[1]
            log = self._ops[wire.operation]
            log.visible = wire.seq
            if not woken or woken[-1] is not log:
                woken.append(log)
            for wire_listener in self._wire_listeners:
                wire_listener(wire)
        for log in woken:
            self._wake(log)

    @staticmethod
    def _wake(log: _OperationLog) -> None:
        waiters, log.waiters = log.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def restarted(self, agents: Sequence[AgentRestart], at: float) -> list[WireEvent]:
        """The agent.state_changed events of the agents whose state start-up reconciliation changes (those whose
        state it keeps get none), with the restart's reason: numbered now, written by the caller in
        reconciliation's own transaction (`rows`), shown once it committed (`show`). An agent restored to a
        state other than `logout` has a registration still valid: `registered` is true."""
        made = []
        for agent in agents:
            if not agent.changed:
                continue
            state, aux = agent_state(agent.state)
            previous, _ = agent_state(agent.previous)
            data = {"agent_id": agent.extension, "state": state, "previous_state": previous, "aux_state": aux,
                    "registered": agent.state != LOGOUT, "reason": agent.reason}
            log = self._ops.setdefault(agent.operation_id, _OperationLog())
            log.last_seq += 1
            wire = WireEvent(log.last_seq, "agent.state_changed", at, agent.operation_id, data, None)
            log.events.append(wire)
            self._oldest_kept.setdefault(agent.operation_id, wire.seq)
            self.published += 1
            made.append(wire)
        return made

    @staticmethod
    def rows(wires: Sequence[WireEvent]) -> list[dict[str, Any]]:
        return [row(w.operation, w.seq, w.type, w.at, w.conn_id, w.text) for w in wires]

    def show(self, wires: Sequence[WireEvent]) -> None:
        """Events committed by someone else's transaction: visible from now on."""
        for wire in wires:
            log = self._ops[wire.operation]
            log.visible = max(log.visible, wire.seq)
            for wire_listener in self._wire_listeners:
                wire_listener(wire)
            self._wake(log)

    async def prune(self) -> None:
        """Durable: delete the stored events past retention, off the loop; `after` older than them answers 410."""
        if self._store is None:
            return
        bounds = await asyncio.to_thread(self._store.prune, self._clock() - self.retention_s)
        for op, kept in bounds.items():
            self._oldest_kept[op] = max(self._oldest_kept.get(op, 0), kept.oldest)

    async def prune_every(self, interval: float) -> None:
        while True:
            try:
                await self.prune()
            except Exception:
                _log.exception("pruning the event log failed")
            await asyncio.sleep(interval)

    def attach(self, context: EventContext) -> None:
        """The service the log reads `data` from; the service is built with the log, so this comes after."""
        self._wire.context = context

    def add_listener(self, listener: Callable[[DomainEvent], None]) -> None:
        self._listeners.append(listener)

    def add_wire_listener(self, listener: Callable[[WireEvent], None]) -> None:
        self._wire_listeners.append(listener)

    # --- the EventSink port -----------------------------------------------------------------------------------

    def publish(self, event: DomainEvent) -> None:
        for listener in self._listeners:
            listener(event)
        try:
            mapped = self._wire.to_wire(event)
        except Exception:  # the domain's move has happened: never let its report break it
            _log.exception("event %s could not be put on the wire", event.name)
            return
        if mapped is None:
            return
        kind, data, conn_id = mapped
        log = self._ops.get(event.operation_id)
        if log is None:
            log = self._ops[event.operation_id] = _OperationLog()
        log.last_seq += 1
        wire = WireEvent(log.last_seq, kind, event.at, event.operation_id, data, conn_id)
        log.events.append(wire)
        if conn_id is not None and conn_id not in self._truncated:
            self._by_call.setdefault(conn_id, []).append(wire)
        if kind == "call.ended" and conn_id is not None:
            log.ended[conn_id] = None
            while len(log.ended) > _KEEP_ENDED_CALLS:
                log.ended.popitem(last=False)
        self.published += 1
        if self._store is not None:
            self._oldest_kept.setdefault(event.operation_id, wire.seq)
            ticket = self._store.append(event.operation_id, wire.seq, kind, event.at, conn_id, wire.text)
            self._uncommitted.append((ticket, wire))
            self._prune(log)
            return  # shown to consumers once committed (`_committed`)
        log.visible = wire.seq
        self._prune(log)
        self._wake(log)
        for wire_listener in self._wire_listeners:
            wire_listener(wire)

    def _prune(self, log: _OperationLog) -> None:
        events = log.events
        if self._store is not None:  # durable: memory keeps the last `ring` (the database keeps the rest)
            while len(events) > self._ring:
                self._forget(events.popleft(), durable=True)
            return
        if len(events) <= self.retention_count:
            return
        horizon = self._clock() - self.retention_s
        while len(events) > self.retention_count and events[0].at < horizon:
            self._forget(events.popleft(), durable=False)

    def _forget(self, old: WireEvent, *, durable: bool) -> None:
        key = old.conn_id or ""
        kept = self._by_call.get(key)
        if kept and kept[0] is old:
            if durable:  # a call's history is whole in memory or read from the database (`call_history`)
                del self._by_call[key]
                self._truncated[key] = None
                while len(self._truncated) > _KEEP_TRUNCATED:
                    self._truncated.popitem(last=False)
                return
            kept.pop(0)
            if not kept:
                del self._by_call[key]

    # --- reads ------------------------------------------------------------------------------------------------

    def last_seq(self, operation_id: str) -> int:
        """The last seq given (durable: maybe not committed yet; consumers read `committed_seq`)."""
        log = self._ops.get(operation_id)
        return log.last_seq if log else 0

    def committed_seq(self, operation_id: str) -> int:
        """The last seq consumers may see (durable: the last committed; otherwise `last_seq`)."""
        log = self._ops.get(operation_id)
        return log.visible if log else 0

    def oldest_seq(self, operation_id: str) -> int:
        """The oldest seq still kept (last_seq + 1 when nothing is kept)."""
        log = self._ops.get(operation_id)
        if log is None:
            return 1
        if self._store is not None:
            return self._oldest_kept.get(operation_id, log.visible + 1)
        return log.events[0].seq if log.events else log.last_seq + 1

    def expired(self, operation_id: str, after: int) -> bool:
        """Whether events right after `after` were discarded."""
        return after < self.oldest_seq(operation_id) - 1

    def since(self, operation_id: str, after: int, limit: int | None = None) -> list[WireEvent]:
        """The visible events in memory with seq > after."""
        log = self._ops.get(operation_id)
        if log is None or not log.events or after >= log.visible:
            return []
        first = log.events[0].seq
        start = max(0, after + 1 - first)
        stop = log.visible - first + 1
        if limit is not None:
            stop = min(stop, start + limit)
        return list(islice(log.events, start, stop))

    async def read(self, operation_id: str, after: int, limit: int | None = None) -> list[WireEvent]:
        """`since`, reading the database (off the loop) when memory no longer has the events after `after`."""
        log = self._ops.get(operation_id)
        if (self._store is None or log is None or after >= log.visible
                or (log.events and log.events[0].seq <= after + 1)):
            return self.since(operation_id, after, limit)
        page = _DB_PAGE if limit is None else min(limit, _DB_PAGE)
        stored = await asyncio.to_thread(self._store.read, operation_id, after, page)
        visible = log.visible
        return [WireEvent(e.seq, e.type, e.at, operation_id, json.loads(e.line)["data"], e.conn_id, e.line)
                for e in stored if e.seq <= visible]

    async def wait(self, operation_id: str, after: int, timeout: float) -> bool:
        """Until the operation has an event with seq > after (True) or `timeout` passes (False)."""
        if self.committed_seq(operation_id) > after:
            return True
        log = self._ops.get(operation_id)
        if log is None:
            log = self._ops[operation_id] = _OperationLog()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        log.waiters.append(waiter)
        try:
            # not wait_for(shield(...)): on Python 3.11 wait_for swallows a cancellation that arrives as the waiter
            # is resolved (a wake-up in the same loop turn as a webhook task's cancel at shutdown), and the task
            # then waits on for ever; asyncio.wait never cancels the waiter and always lets a cancellation through
            done, _ = await asyncio.wait((waiter,), timeout=timeout)
        finally:
            if waiter in log.waiters:
                log.waiters.remove(waiter)
        return bool(done)

    def wake_all(self) -> None:
        """Every waiting consumer woken now (its `wait` returns True): at shutdown, so that streams see it."""
        for log in self._ops.values():
            self._wake(log)

    def history(self, conn_id: str) -> list[WireEvent]:
        """The kept events of a call and of its transfers, by seq."""
        return list(self._by_call.get(conn_id, ()))

    async def call_history(self, operation_id: str, conn_id: str, started_at: float,
                           ended_at: float | None) -> list[WireEvent]:
        """The operation's kept events of a call and of its transfers, by seq: from memory while it has them all,
        else (durable: after a restart, or once the ring moved past the call's first event) from the database,
        within the call's lifetime (`started_at`, `ended_at`)."""
        held = self._by_call.get(conn_id)
        if held is not None or self._store is None:
            return [w for w in held or () if w.operation == operation_id]
        stored = await asyncio.to_thread(self._store.of_call, operation_id, conn_id, started_at, ended_at)
        visible = self.committed_seq(operation_id)
        return [WireEvent(e.seq, e.type, e.at, operation_id, json.loads(e.line)["data"], e.conn_id, e.line)
                for e in stored if e.seq <= visible]

    async def transfer_times_of(self, operation_id: str, transfer_id: str, conn_id: str, started_at: float,
                                ended_at: float | None) -> tuple[float | None, float | None]:
        """`transfer_times`, for a transfer this process may not have seen (durable: after a restart, or once
        forgotten): then from the last kept event of the transfer in its call's history, which carries both."""
        if self.knows_transfer(transfer_id) or self._store is None:
            return self.transfer_times(transfer_id)
        ringing_at: float | None = None
        answered_at: float | None = None
        for wire in await self.call_history(operation_id, conn_id, started_at, ended_at):
            if wire.type.startswith("transfer.") and wire.data.get("id") == transfer_id:
                ringing_at, answered_at = _time(wire.data.get("ringing_at")), _time(wire.data.get("answered_at"))
        return ringing_at, answered_at

    def ended_calls(self, operation_id: str) -> list[str]:
        """conn_ids of the operation's ended calls, newest first."""
        log = self._ops.get(operation_id)
        return list(reversed(log.ended)) if log else []

    @property
    def durable(self) -> bool:
        """Whether the log is kept in the database (built with a store)."""
        return self._store is not None

    def knows_transfer(self, transfer_id: str) -> bool:
        """Whether this process saw the transfer's events (and still keeps its times)."""
        return transfer_id in self._wire.transfer_times

    def transfer_times(self, transfer_id: str) -> tuple[float | None, float | None]:
        """(ringing_at, answered_at) of a transfer, as its events said."""
        return self._wire.transfer_times.get(transfer_id, (None, None))
