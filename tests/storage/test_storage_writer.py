"""The writer thread: group commit, order, flush, failures counted and never raised, nothing after close."""

from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy import Connection, Engine, func, insert, select, text

from callbridge.storage import schema as s
from callbridge.storage.writer import Writer


def _operation(i: int) -> dict[str, object]:
    return {"id": f"op{i}", "sip_domain": f"op{i}.test"}


def _hold(writer: Writer, gate: threading.Event) -> None:
    """Submit a write that keeps the thread inside its batch until `gate` is set; return once it is inside."""
    inside = threading.Event()

    def hold(conn: Connection) -> None:
        inside.set()
        gate.wait(10)

    writer.submit(hold)
    assert inside.wait(10)


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(s.operations)).scalar_one())


def test_writes_queued_while_the_thread_is_busy_commit_together(engine: Engine) -> None:
    writer = Writer(engine).start()
    gate = threading.Event()
    try:
        _hold(writer, gate)
        for i in range(50):
            writer.execute(insert(s.operations).values(_operation(i)))
        gate.set()
        assert writer.flush(10)
        assert _count(engine) == 50
        # the first batch held one write; the 50 queued behind it shared the next commit
        assert writer.stats.batches == 2
        assert writer.stats.committed == 51
        assert writer.stats.failed == 0
    finally:
        writer.close()


def test_flush_waits_for_everything_submitted_before_it(engine: Engine) -> None:
    writer = Writer(engine, max_batch=7).start()
    try:
        for i in range(100):
            writer.execute(insert(s.operations).values(_operation(i)))
        assert writer.flush(10)
        assert _count(engine) == 100
        assert writer.stats.batches >= 100 // 7
    finally:
        writer.close()


def test_a_failing_write_costs_only_itself_and_is_counted(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    writer = Writer(engine).start()
    gate = threading.Event()
    try:
        _hold(writer, gate)
        writer.execute(insert(s.operations).values(_operation(1)))
        writer.execute(insert(s.operations).values(_operation(1)))  # duplicate key: fails
        writer.execute(insert(s.operations).values(_operation(2)))
        with caplog.at_level(logging.ERROR, logger="callbridge.storage.writer"):
            gate.set()
            assert writer.flush(10)
        assert _count(engine) == 2
        assert writer.stats.failed == 1
        assert writer.stats.committed == 3
        assert any("storage write failed" in r.message for r in caplog.records)
    finally:
        writer.close()


def test_order_is_kept(engine: Engine) -> None:
    writer = Writer(engine, max_batch=3).start()
    try:
        writer.execute(insert(s.operations).values(_operation(1)))
        for i in range(20):
            writer.execute(text("UPDATE operations SET name = :n WHERE id = 'op1'"), {"n": f"v{i}"})
        assert writer.flush(10)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM operations WHERE id = 'op1'")).scalar_one() == "v19"
    finally:
        writer.close()


def test_close_writes_what_is_queued_then_drops_new_writes(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    writer = Writer(engine).start()
    for i in range(10):
        writer.execute(insert(s.operations).values(_operation(i)))
    writer.close()
    assert _count(engine) == 10
    with caplog.at_level(logging.ERROR, logger="callbridge.storage.writer"):
        writer.execute(insert(s.operations).values(_operation(99)))
    assert writer.stats.dropped == 1
    assert _count(engine) == 10


def test_flush_from_the_writer_thread_is_refused(engine: Engine) -> None:
    writer = Writer(engine).start()
    seen: list[BaseException] = []

    def inside(conn: Connection) -> None:
        try:
            writer.flush(1)
        except RuntimeError as exc:
            seen.append(exc)

    try:
        writer.submit(inside)
        assert writer.flush(10)
        assert len(seen) == 1
    finally:
        writer.close()


async def test_aflush_does_not_block_the_loop(engine: Engine) -> None:
    writer = Writer(engine).start()
    try:
        writer.execute(insert(s.operations).values(_operation(1)))
        assert await writer.aflush(10)
        assert _count(engine) == 1
    finally:
        writer.close()


def test_row_writes_in_one_batch_are_grouped_and_last_write_wins(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(s.operations).values(_operation(0)))
        conn.execute(insert(s.queues).values(operation_id="op0", name="q-old", max_wait_seconds=1))
    writer = Writer(engine).start()
    gate = threading.Event()
    try:
        _hold(writer, gate)
        writer.insert(s.operations, _operation(1))
        keys = ("operation_id", "name")
        writer.upsert(s.queues, keys, {"operation_id": "op0", "name": "q-old", "max_wait_seconds": 2.0})  # exists
        writer.upsert(s.queues, keys, {"operation_id": "op1", "name": "q-new", "max_wait_seconds": 3.0})  # new
        writer.upsert(s.queues, keys, {"operation_id": "op1", "name": "q-new", "max_wait_seconds": 4.0})  # again
        writer.insert(s.operations, _operation(2))
        # one table with both kinds: applied one by one, in order
        writer.insert(s.aux_states, {"operation_id": "op0", "id": "1", "name": "Break"})
        writer.upsert(s.aux_states, ("operation_id", "id"), {"operation_id": "op0", "id": "1", "name": "Lunch"})
        gate.set()
        assert writer.flush(10)
        assert writer.stats.batches == 2 and writer.stats.failed == 0
        with engine.connect() as conn:
            queues = conn.execute(select(s.queues.c.operation_id, s.queues.c.name, s.queues.c.max_wait_seconds)
                                  .order_by(s.queues.c.operation_id)).all()
            assert [tuple(q) for q in queues] == [("op0", "q-old", 2.0), ("op1", "q-new", 4.0)]
            assert conn.execute(select(s.aux_states.c.name)).scalar_one() == "Lunch"
        assert _count(engine) == 3
    finally:
        writer.close()
