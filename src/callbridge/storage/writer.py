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
- The caller's side is cheap: `insert`, `upsert`, `update` and `delete` queue plain tuples; the statements are
  planned, compiled (once) and run on the writer thread by `callbridge.storage.rowwrites`: within a batch the row
  writes of a table are folded per key and run as a few compiled statements on the DB-API cursor. On SQLite a
  batch of nothing but row writes (agent states, calls, legs, dialogs: the hot path) runs on the DB-API
  connection alone (BEGIN, the statements, COMMIT), with no SQLAlchemy in between, so the writer holds the GIL the
  event loop needs only for a few short moments per batch.
- Batches never split a loop turn (`seal_on(loop)`): a write queued on the event loop's thread is taken only once
  the loop has finished the callback that queued it (one `call_soon` per turn that writes seals the turn's
  writes), so the rows of one domain call (a state change and the event reporting it) commit in one transaction.
  Writes from other threads, flushes and close seal at once. (A turn of more than `max_batch` writes is the one
  exception, and a failing batch retried item by item is another.)
- The writer reports progress (`on_done`): after each batch, the number of items done so far (committed or
  failed), from its own thread; items are done in submission order, so item number N (`stats.submitted` right
  after queueing it) is done once the number reported reaches N.
- `flush()` waits until everything submitted before it has been committed or has failed; tests use it to read
  what they wrote and shutdown uses it (through `close()`) to lose nothing. `aflush()` is the same for a
  coroutine, waiting in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Table

from callbridge.storage import rowwrites
from callbridge.storage.rowwrites import ROW_WRITES, Delete, Insert, RowWrite, Update, Upsert

log = logging.getLogger(__name__)

Work = Callable[[Connection], Any]

DEFAULT_COMMIT_WINDOW = 0.005  # seconds: the group-commit window (see the rules above)
QUIET_WINDOWS = 10  # empty windows in a row after which the thread sleeps until signalled (50 ms by default)


Item = Callable[[Connection], Any] | RowWrite


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
        self._unsealed = 0  # items at the end of _pending queued in the loop's current turn (see seal_on)
        self._seal_loop: asyncio.AbstractEventLoop | None = None
        self._seal_thread = 0
        self._seal_scheduled = False
        self._done = 0  # items done (committed or failed), in submission order
        self.on_done: Callable[[int], None] | None = None  # called on the writer thread after each batch
        # A cluster node's fence (callbridge.cluster.fencing.Fence): declared first in every batch's transaction;
        # the writes it refuses are counted as failed without a traceback.
        self.fence: Any = None

    # -- the event loop's side ---------------------------------------------------------------------------
    def start(self) -> Writer:
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()
        return self

    def seal_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """From now on, writes queued on `loop`'s thread (the caller's) are taken per loop turn (see the rules)."""
        self._seal_loop = loop
        self._seal_thread = threading.get_ident()

    def _seal(self) -> None:
        with self._lock:
            self._seal_scheduled = False
            self._unsealed = 0
            if self._want and len(self._pending) >= self._want:
                self._wake()

    def insert(self, table: Table, values: dict[str, Any]) -> None:
        """Queue the insertion of one row (built and executed on the writer thread)."""
        self._put(Insert(table, values))

    def upsert(self, table: Table, keys: Sequence[str], values: dict[str, Any]) -> None:
        """Queue an insert-or-update of one row by its `keys` columns."""
        self._put(Upsert(table, keys, values))

    def update(self, table: Table, keys: Sequence[str], values: dict[str, Any]) -> None:
        """Queue an update of the non-key columns in `values` of the row with these `keys`; none if it is gone."""
        self._put(Update(table, keys, values))

    def delete(self, table: Table, keys: Sequence[str], values: dict[str, Any]) -> None:
        """Queue the deletion of the row whose `keys` columns equal those in `values`."""
        self._put(Delete(table, keys, values))

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
            if self._seal_loop is not None and threading.get_ident() == self._seal_thread:
                self._unsealed += 1
                if not self._seal_scheduled:
                    self._seal_scheduled = True
                    self._seal_loop.call_soon(self._seal)
                return
            self._unsealed = 0
            if self._want and len(self._pending) >= self._want:
                self._wake()

    def _put_marker(self, marker: object) -> None:
        with self._lock:
            self._pending.append(marker)
            self._markers += 1
            self._unsealed = 0
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
            if len(self._pending) - self._unsealed >= length or self._markers:
                return
            self._want = length
        signalled = self._signal.acquire(timeout=-1 if timeout is None else timeout)
        with self._lock:
            if self._want:  # nobody signalled: the timeout ran out
                self._want = 0
            elif not signalled:  # signalled between the timeout and here: consume it (released, so at once)
                self._signal.acquire()

    def _take(self) -> tuple[list[Any], bool]:
        """The next batch's items (at most `max_batch`, none of the loop's current turn), and whether a flush or
        stop marker may be among them (none is when the queue held none)."""
        with self._lock:
            pending = self._pending
            sealed = len(pending) - self._unsealed
            if sealed <= 0:
                return [], False
            count = min(sealed, self.max_batch)
            if count == len(pending):  # the whole queue (the usual case): one C-level copy
                items = list(pending)
                pending.clear()
            else:
                items = [pending.popleft() for _ in range(count)]
            markers = self._markers > 0
            if markers:
                self._markers -= sum(1 for item in items if item is _STOP or isinstance(item, _Flush))
        return items, markers

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
            items, marked = self._take()
            quiet = 0 if items else quiet + 1
            work: list[Item] = items if not marked else []
            markers: list[_Flush] = []
            for item in items if marked else ():
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
                self._done += len(work)
                if self.on_done is not None:
                    try:
                        self.on_done(self._done)
                    except Exception:
                        log.exception("storage writer: on_done failed")
            for marker in markers:
                marker.done.set()

    def _connection(self) -> Connection:
        """The thread's connection: checked out once and kept, so a batch costs no pool checkout and reset."""
        if self._conn is None:
            conn = self.engine.connect()
            if conn.dialect.name == "sqlite":
                _journals_in_memory(conn)
            self._conn = conn
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
            if self.fence is not None:
                with conn.begin():
                    self.fence.declare(conn)
                    _apply(conn, work)
            elif not rowwrites.run_sqlite_batch(conn, work):
                with conn.begin():
                    _apply(conn, work)
        except Exception as exc:
            # The next batch takes a fresh connection from the pool (pre-pinged on PostgreSQL): a failure may
            # have been the connection's own.
            self._disconnect()
            if len(work) == 1:
                self.stats.failed += 1
                if self.fence is not None and self.fence.refused(exc):
                    log.warning("storage write refused by the cluster fence: %s", str(exc).splitlines()[0])
                else:
                    log.exception("storage write failed")
                return
            log.warning("storage batch of %d failed; retrying its writes one by one", len(work))
            for item in work:
                self._write([item])
            return
        self.stats.batches += 1
        self.stats.committed += len(work)


def _journals_in_memory(conn: Connection) -> None:
    """SQLite: the writer's statement journals stay in memory (`temp_store = MEMORY`). A statement that may fail
    half-way inside a transaction (a multi-row INSERT within a batch's BEGIN ... COMMIT) keeps a copy of every page
    it changes, to undo itself alone; past 64 KiB SQLite moves that copy to a temporary file, created, written
    and deleted per statement (a batch of agent states and events touches that many index pages). The journal
    only ever undoes a statement of a transaction still open, so where it lives changes nothing of what a commit
    makes durable."""
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA temp_store = MEMORY")


def _apply(conn: Connection, work: list[Item]) -> None:
    """Run a batch in order: each run of row writes (no callable between) as `rowwrites.apply` plans it, each
    callable after the writes queued before it."""
    run: list[RowWrite] = []
    for item in work:
        if type(item) in ROW_WRITES:
            run.append(item)  # type: ignore[arg-type]
            continue
        rowwrites.apply(conn, run)
        run = []
        item(conn)  # type: ignore[operator]
    rowwrites.apply(conn, run)
