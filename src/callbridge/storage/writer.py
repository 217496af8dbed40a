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
- `flush()` waits until everything submitted before it has been committed or has failed; tests use it to read
  what they wrote and shutdown uses it (through `close()`) to lose nothing. `aflush()` is the same for a
  coroutine, waiting in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Executable

log = logging.getLogger(__name__)

Work = Callable[[Connection], Any]


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

    def submit(self, work: Work) -> None:
        """Queue `work(connection)` to run inside the next batch's transaction. Never blocks or raises."""
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
            work: list[Work] = []
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

    def _write(self, work: list[Work]) -> None:
        try:
            with self.engine.begin() as conn:
                for item in work:
                    item(conn)
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
