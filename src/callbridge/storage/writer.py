"""The write-behind thread: writes never block the event loop.

Rules
- The event loop only enqueues. `submit(work)` puts a callable on a queue and returns at once; it never blocks,
  never touches the database and never raises (a write is fire-and-forget for the domain).
- One thread writes. It sleeps on the queue, wakes on the first item, takes everything queued behind it (up to
  `max_batch`) and runs the lot in ONE transaction: group commit. Under load many writes share one commit (one
  fsync on PostgreSQL, one WAL append on SQLite); when idle a single write commits alone, at once.
- A failing batch is retried item by item, each in its own transaction, so one bad write costs only itself. A
  write that still fails is logged with its traceback and counted (`stats.failed`); nothing is raised to anyone.
- Order is kept: items commit in the order they were submitted (one thread, FIFO queue, retries in order).
- The caller's side is cheap: `insert(table, values)` and `upsert(table, keys, values)` queue plain tuples; the
  statements are built on the writer thread. Within a batch, row writes are grouped by table: inserts run as one
  executemany, upserts as one SELECT of the keys present, one executemany UPDATE and one executemany INSERT.
- `flush()` waits until everything submitted before it has been committed or has failed; tests use it to read
  what they wrote and shutdown uses it (through `close()`) to lose nothing. `aflush()` is the same for a
  coroutine, waiting in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Executable, Table, and_, bindparam, insert, select, tuple_, update

log = logging.getLogger(__name__)

Work = Callable[[Connection], Any]


def upsert(conn: Connection, table: Table, keys: Sequence[str], values: dict[str, Any]) -> None:
    """Update the row whose `keys` columns equal those in `values`, or insert it when there is none."""
    condition = and_(*(table.c[k] == values[k] for k in keys))
    changed = {k: v for k, v in values.items() if k not in keys}
    if changed:
        if conn.execute(update(table).where(condition).values(changed)).rowcount:
            return
    elif conn.execute(select(table.c[keys[0]]).where(condition)).first() is not None:
        return
    conn.execute(insert(table).values(values))


class _Insert(NamedTuple):
    table: Table
    values: dict[str, Any]


class _Upsert(NamedTuple):
    table: Table
    keys: Sequence[str]
    values: dict[str, Any]


Item = Callable[[Connection], Any] | _Insert | _Upsert


@dataclass
class WriterStats:
    submitted: int = 0
    committed: int = 0
    failed: int = 0
    batches: int = 0
    dropped: int = 0  # submitted after close(): logged, counted, not written


class _Flush:
    """A marker in the queue: set once everything queued before it is done."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class Writer:
    """One thread applying queued writes in group-committed transactions. Start it, submit, flush, close."""

    def __init__(self, engine: Engine, *, max_batch: int = 1000, name: str = "callbridge-writer") -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.stats = WriterStats()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._lock = threading.Lock()
        self._closed = False
        self._started = False

    # -- the event loop's side ---------------------------------------------------------------------------
    def start(self) -> Writer:
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()
        return self

    def insert(self, table: Table, values: dict[str, Any]) -> None:
        """Queue the insertion of one row (built and executed on the writer thread)."""
        self._put(_Insert(table, values))

    def upsert(self, table: Table, keys: Sequence[str], values: dict[str, Any]) -> None:
        """Queue an insert-or-update of one row by its `keys` columns."""
        self._put(_Upsert(table, keys, values))

    def submit(self, work: Work) -> None:
        """Queue `work(connection)` to run inside the next batch's transaction. Never blocks or raises."""
        self._put(work)

    def _put(self, work: Item) -> None:
        with self._lock:
            if self._closed:
                self.stats.dropped += 1
                log.error("storage writer closed: write dropped (%r)", work)
                return
            self.stats.submitted += 1
            self._queue.put(work)  # under the lock, so nothing lands behind close()'s stop marker

    def execute(self, statement: Executable, parameters: Any = None) -> None:
        """Queue one statement (with optional parameters, a dict or a list of dicts for executemany)."""
        if parameters is None:
            self.submit(lambda conn: conn.execute(statement))
        else:
            self.submit(lambda conn: conn.execute(statement, parameters))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every write submitted so far is committed or failed. False if `timeout` ran out first."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() called from the writer thread would wait for itself")
        if not self._started or not self._thread.is_alive():
            return self._queue.empty()
        marker = _Flush()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    async def aflush(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.flush, timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Refuse new writes, write everything queued, stop the thread. The engine stays the caller's."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._started:
            self._queue.put(_STOP)
            self._thread.join(timeout)

    # -- the writer thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            items = [first]
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            work: list[Item] = []
            markers: list[_Flush] = []
            for item in items:
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Flush):
                    # A marker may only be released after the writes queued before it; since a batch commits
                    # all its writes before any marker of the batch is set, collecting them is enough.
                    markers.append(item)
                else:
                    work.append(item)
            if work:
                self._write(work)
            for marker in markers:
                marker.done.set()

    def _write(self, work: list[Item]) -> None:
        try:
            with self.engine.begin() as conn:
                _apply(conn, work)
        except Exception:
            if len(work) == 1:
                self.stats.failed += 1
                log.exception("storage write failed")
                return
            log.warning("storage batch of %d failed; retrying its writes one by one", len(work))
            for item in work:
                self._write([item])
            return
        self.stats.batches += 1
        self.stats.committed += len(work)



def _apply(conn: Connection, work: list[Item]) -> None:
    """Run a batch in order; each run of row writes (no callable between) is applied table by table, tables in
    the order they first appear, so a parent row written before its children still lands first."""
    run: list[_Insert | _Upsert] = []
    for item in work:
        if isinstance(item, _Insert | _Upsert):
            run.append(item)
            continue
        _apply_rows(conn, run)
        run = []
        item(conn)
    _apply_rows(conn, run)


def _apply_rows(conn: Connection, run: list[_Insert | _Upsert]) -> None:
    by_table: dict[Table, list[_Insert | _Upsert]] = {}
    for item in run:
        by_table.setdefault(item.table, []).append(item)
    for table, items in by_table.items():
        upserts = [i for i in items if isinstance(i, _Upsert)]
        if not upserts:
            conn.execute(insert(table), [i.values for i in items])
        elif len(upserts) == len(items) and all(u.keys == upserts[0].keys for u in upserts):
            _bulk_upsert(conn, table, upserts[0].keys, [u.values for u in upserts])
        else:  # mixed kinds on one table: keep their exact order
            for i in items:
                if isinstance(i, _Insert):
                    conn.execute(insert(table).values(i.values))
                else:
                    upsert(conn, table, i.keys, i.values)


def _bulk_upsert(conn: Connection, table: Table, keys: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """Upsert many rows with one SELECT of the keys present, one executemany UPDATE and one INSERT. Rows for the
    same key collapse to the last one (each upsert carries the whole row, so the last write wins anyway)."""
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        latest[tuple(row[k] for k in keys)] = row
    if len(keys) == 1:
        condition = table.c[keys[0]].in_([k[0] for k in latest])
    else:
        condition = tuple_(*(table.c[k] for k in keys)).in_(list(latest))
    present = {tuple(r) for r in conn.execute(select(*(table.c[k] for k in keys)).where(condition))}
    fresh = [row for key, row in latest.items() if key not in present]
    if fresh:
        conn.execute(insert(table), fresh)
    changed: dict[frozenset[str], list[dict[str, Any]]] = {}
    for key, row in latest.items():
        if key in present:
            changed.setdefault(frozenset(row) - set(keys), []).append(row)
    for columns, group in changed.items():
        if not columns:
            continue
        statement = (update(table)
                     .where(and_(*(table.c[k] == bindparam(f"k_{k}", type_=table.c[k].type) for k in keys)))
                     .values({c: bindparam(f"v_{c}", type_=table.c[c].type) for c in sorted(columns)}))
        conn.execute(statement, [{**{f"k_{k}": r[k] for k in keys}, **{f"v_{c}": r[c] for c in columns}}
                                 for r in group])
