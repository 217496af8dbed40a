"""The write-behind thread: writes never block the event loop.

Rules
- The event loop only enqueues. `submit(work)` puts a callable on a queue and returns at once; it never blocks,
  never touches the database and never raises (a write is fire-and-forget for the domain).
- One thread writes, in group commits. It sleeps until the first item arrives, then keeps the batch open for the
  group-commit window (`commit_window`, 5 ms by default) or until `max_batch` items are queued, whichever comes
  first, and runs everything queued (up to `max_batch`) in ONE transaction. Under load many writes share one
  commit (one fsync on PostgreSQL, one WAL append on SQLite); when idle a single write commits alone, one window
  after it was queued. A flush or close in the queue ends the window at once. The window changes when a write
  lands, not what is durable: a write is queued before the HTTP answer either way, and a process that dies
  loses whatever was still queued, with or without the window (SQLite: WAL, synchronous=NORMAL).
- Wake-ups are cheap for the caller: the queue is a deque, and the writer thread is signalled only when it is
  asleep and the queue reaches what it waits for (its first item, a full batch, or a flush/close marker); a write
  queued while the thread is busy or gathering costs an append under a lock. While writes keep coming the thread
  does not go to sleep between batches: it opens the next window at once and only after `QUIET_WINDOWS` empty
  windows in a row does it sleep until signalled, so under steady load no write pays for waking it.
- A failing batch is retried item by item, each in its own transaction, so one bad write costs only itself. A
  write that still fails is logged with its traceback and counted (`stats.failed`); nothing is raised to anyone.
- Order is kept: items commit in the order they were submitted (one thread, FIFO queue, retries in order).
- The caller's side is cheap: `insert(table, values)` and `upsert(table, keys, values)` queue plain tuples; the
  statements are built on the writer thread. Within a batch, row writes are grouped by table: inserts run through
  the DB-API with a statement compiled once per table and column set (SQLAlchemy's bind processors applied to the
  values): one multi-row INSERT on SQLite, one executemany elsewhere; upserts as one SELECT of the keys present,
  one executemany UPDATE and one executemany INSERT. On SQLite a batch of nothing but inserts (agent states, the
  hot path) runs on the DB-API connection alone: BEGIN, the INSERTs, COMMIT (or a lone INSERT, which SQLite runs
  as its own transaction), with no SQLAlchemy in between, so the writer holds the GIL the event loop needs only
  for a few short moments per batch.
- `flush()` waits until everything submitted before it has been committed or has failed; tests use it to read
  what they wrote and shutdown uses it (through `close()`) to lose nothing. `aflush()` is the same for a
  coroutine, waiting in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect, Engine, Executable, Table, and_, bindparam, insert, select, tuple_, update

log = logging.getLogger(__name__)

Work = Callable[[Connection], Any]

DEFAULT_COMMIT_WINDOW = 0.005  # seconds: the group-commit window (see the rules above)
QUIET_WINDOWS = 10  # empty windows in a row after which the thread sleeps until signalled (50 ms by default)


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

    def __init__(self, engine: Engine, *, max_batch: int = 1000, commit_window: float = DEFAULT_COMMIT_WINDOW,
                 name: str = "callbridge-writer") -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.commit_window = commit_window  # seconds a batch stays open after its first item; 0 = none
        self.stats = WriterStats()
        self._pending: deque[Any] = deque()
        self._markers = 0  # flush/stop markers in _pending: a batch with one does not wait for the window
        self._want = 0  # queue length the sleeping writer waits for; 0 when it is not waiting
        self._signal = threading.Lock()  # held while nobody has signalled; released to wake the writer
        self._signal.acquire()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._lock = threading.Lock()  # guards _pending, _markers, _want, _closed and the signal
        self._closed = False
        self._started = False
        self._conn: Connection | None = None  # the writer thread's own, kept between batches

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
            self._pending.append(work)  # under the lock, so nothing lands behind close()'s stop marker
            if self._want and len(self._pending) >= self._want:
                self._wake()

    def _put_marker(self, marker: object) -> None:
        with self._lock:
            self._pending.append(marker)
            self._markers += 1
            if self._want:
                self._wake()

    def _wake(self) -> None:
        """Signal the sleeping writer (the lock held)."""
        self._want = 0
        self._signal.release()

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
            return not self._pending
        marker = _Flush()
        self._put_marker(marker)
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
            self._put_marker(_STOP)
            self._thread.join(timeout)

    # -- the writer thread -------------------------------------------------------------------------------
    def _wait_for(self, length: int, timeout: float | None) -> None:
        """Sleep until the queue holds `length` items or a marker, or `timeout` seconds pass (None: no limit)."""
        with self._lock:
            if len(self._pending) >= length or self._markers:
                return
            self._want = length
        signalled = self._signal.acquire(timeout=-1 if timeout is None else timeout)
        with self._lock:
            if self._want:  # nobody signalled: the timeout ran out
                self._want = 0
            elif not signalled:  # signalled between the timeout and here: consume it (released, so at once)
                self._signal.acquire()

    def _take(self) -> list[Any]:
        with self._lock:
            pending = self._pending
            items = [pending.popleft() for _ in range(min(len(pending), self.max_batch))]
            if self._markers:
                self._markers -= sum(1 for item in items if item is _STOP or isinstance(item, _Flush))
        return items

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._disconnect()

    def _loop(self) -> None:
        stop = False
        quiet = QUIET_WINDOWS  # windows in a row that found nothing to write
        while not stop:
            if self.commit_window <= 0:
                self._wait_for(1, None)
            else:
                if quiet >= QUIET_WINDOWS:
                    self._wait_for(1, None)  # idle: asleep until the next write signals
                self._wait_for(self.max_batch, self.commit_window)  # the group-commit window
            items = self._take()
            quiet = 0 if items else quiet + 1
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

    def _connection(self) -> Connection:
        """The thread's connection: checked out once and kept, so a batch costs no pool checkout and reset."""
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.warning("storage writer: closing its connection failed", exc_info=True)

    def _write(self, work: list[Item]) -> None:
        try:
            conn = self._connection()
            if not _sqlite_inserts(conn, work):
                with conn.begin():
                    _apply(conn, work)
        except Exception:
            # The next batch takes a fresh connection from the pool (pre-pinged on PostgreSQL): a failure may
            # have been the connection's own.
            self._disconnect()
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
            _insert_rows(conn, table, [i.values for i in items])
        elif len(upserts) == len(items) and all(u.keys == upserts[0].keys for u in upserts):
            _bulk_upsert(conn, table, upserts[0].keys, [u.values for u in upserts])
        else:  # mixed kinds on one table: keep their exact order
            for i in items:
                if isinstance(i, _Insert):
                    conn.execute(insert(table).values(i.values))
                else:
                    upsert(conn, table, i.keys, i.values)


class _CompiledInsert(NamedTuple):
    sql: str
    names: tuple[str, ...]  # the columns, in the statement's parameter order
    processors: tuple[Callable[[Any], Any] | None, ...]  # each column type's bind processor for the dialect
    positional: bool
    values: str | None  # SQLite: the statement's "(?, ?, ...)", repeated to insert many rows in one statement


_SQLITE_MAX_VARIABLES = 999  # the lowest SQLITE_MAX_VARIABLE_NUMBER of any build (3.32+ allow 32766)

# Per dialect object (one per engine: the bind processors follow its settings, such as its JSON serialiser).
_COMPILED: weakref.WeakKeyDictionary[Dialect, dict[tuple[Table, frozenset[str]], _CompiledInsert | None]] = (
    weakref.WeakKeyDictionary())


def _compiled_insert(conn: Connection, table: Table, columns: frozenset[str]) -> _CompiledInsert | None:
    """INSERT of `columns` into `table` compiled once per dialect, or None when SQLAlchemy must run it (a column
    left out has a Python-side default, or the statement binds anything but the columns)."""
    dialect = conn.dialect
    cache = _COMPILED.setdefault(dialect, {})
    key = (table, columns)
    if key in cache:
        return cache[key]
    compiled_insert: _CompiledInsert | None = None
    unknown = columns - set(table.c.keys())
    defaulted = any(c.default is not None or c.onupdate is not None for c in table.c if c.key not in columns)
    if not unknown and not defaulted:
        compiled = insert(table).compile(dialect=dialect, column_keys=sorted(columns))
        names = tuple(compiled.positiontup or ()) if dialect.positional else tuple(compiled.binds)
        if set(names) == columns and len(names) == len(columns):
            processors = tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
            head, _, values = compiled.string.partition(" VALUES ")
            multi = dialect.name == "sqlite" and dialect.paramstyle == "qmark" and values.startswith("(")
            compiled_insert = _CompiledInsert(head + " VALUES " if multi else compiled.string, names, processors,
                                              dialect.positional, values if multi else None)
    cache[key] = compiled_insert
    return compiled_insert


def _column_runs(rows: list[dict[str, Any]]) -> list[tuple[frozenset[str], list[dict[str, Any]]]]:
    """`rows` cut into runs of the same column set, in order."""
    runs: list[tuple[frozenset[str], list[dict[str, Any]]]] = []
    for row in rows:
        if runs and row.keys() == runs[-1][0]:
            runs[-1][1].append(row)
        else:
            runs.append((frozenset(row), [row]))
    return runs


def _insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` through the DB-API, one statement per column set, in the order given (a change of column
    set starts the next statement), skipping SQLAlchemy's per-execution compilation and bookkeeping."""
    for columns, group in _column_runs(rows):
        compiled = _compiled_insert(conn, table, columns)
        if compiled is None:
            conn.execute(insert(table), group)
            continue
        cursor = conn.connection.cursor()
        try:
            _execute_insert(cursor, compiled, group)
        finally:
            cursor.close()


def _execute_insert(cursor: Any, compiled: _CompiledInsert, rows: list[dict[str, Any]]) -> None:
    pairs = tuple(zip(compiled.names, compiled.processors, strict=True))
    if compiled.values is not None:
        # SQLite: one multi-row INSERT per chunk, so the batch costs one prepare and one step (each one a release
        # and re-take of the GIL, contended by the event loop) instead of one step per row.
        per_statement = max(1, _SQLITE_MAX_VARIABLES // len(pairs))
        for chunk in range(0, len(rows), per_statement):
            part = rows[chunk:chunk + per_statement]
            flat = [row[n] if p is None else p(row[n]) for row in part for n, p in pairs]
            cursor.execute(compiled.sql + ", ".join([compiled.values] * len(part)), flat)
    elif compiled.positional:
        cursor.executemany(compiled.sql, [tuple(row[n] if p is None else p(row[n]) for n, p in pairs)
                                          for row in rows])
    else:
        cursor.executemany(compiled.sql, [{n: row[n] if p is None else p(row[n]) for n, p in pairs}
                                          for row in rows])


def _sqlite_inserts(conn: Connection, work: list[Item]) -> bool:
    """A batch of nothing but row inserts on SQLite, run on the DB-API connection itself: BEGIN, the multi-row
    INSERTs (tables in order of first appearance, as `_apply` does), COMMIT; a batch that is one statement runs
    alone, in the implicit transaction SQLite gives a statement outside BEGIN. The writer thread then holds the GIL
    only briefly between those few calls. False (nothing done) for any other batch: it runs through SQLAlchemy."""
    if conn.dialect.name != "sqlite" or not all(type(item) is _Insert for item in work):
        return False
    by_table: dict[Table, list[dict[str, Any]]] = {}
    for item in work:
        assert isinstance(item, _Insert)
        by_table.setdefault(item.table, []).append(item.values)
    plan: list[tuple[_CompiledInsert, list[dict[str, Any]]]] = []
    for table, rows in by_table.items():
        for columns, group in _column_runs(rows):
            compiled = _compiled_insert(conn, table, columns)
            if compiled is None or compiled.values is None:
                return False
            plan.append((compiled, group))
    raw = conn.connection.driver_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        if len(plan) == 1 and len(plan[0][1]) * len(plan[0][0].names) <= _SQLITE_MAX_VARIABLES:
            # One statement: SQLite runs it as a transaction of its own (all rows or none), so BEGIN and
            # COMMIT would only add two more GIL hand-overs to the event loop.
            _execute_insert(cursor, *plan[0])
            return True
        cursor.execute("BEGIN")
        try:
            for compiled, group in plan:
                _execute_insert(cursor, compiled, group)
            cursor.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.rollback()
            raise
    finally:
        cursor.close()
    return True


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
