"""The writer thread: group commit (its window), compiled inserts, order, flush, failures counted and never raised,
nothing after close."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, func, insert, select, text

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


def _wait_committed(writer: Writer, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while writer.stats.committed < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.stats.committed == count


def test_writes_queued_one_by_one_within_the_window_share_one_commit(engine: Engine) -> None:
    writer = Writer(engine, commit_window=2.0).start()
    try:
        for i in range(20):
            writer.insert(s.operations, _operation(i))
            time.sleep(0.002)
        _wait_committed(writer, 20)  # no flush: the window alone closes the batch
        assert writer.stats.batches == 1
        assert _count(engine) == 20
    finally:
        writer.close()


def test_a_full_batch_or_a_flush_ends_the_window_at_once(engine: Engine) -> None:
    writer = Writer(engine, max_batch=5, commit_window=60.0).start()
    try:
        for i in range(5):
            writer.insert(s.operations, _operation(i))
        _wait_committed(writer, 5)  # well before the 60 s window
        assert writer.stats.batches == 1
        writer.insert(s.operations, _operation(5))
        started = time.monotonic()
        assert writer.flush(10)
        assert time.monotonic() - started < 5
        assert writer.stats.batches == 2 and _count(engine) == 6
    finally:
        started = time.monotonic()
        writer.close()
        assert time.monotonic() - started < 5  # close does not wait for the window either


def test_inserts_run_as_compiled_executemany_keep_types_order_and_column_sets(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(s.operations).values(_operation(0)))
    at = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
    writer = Writer(engine).start()
    gate = threading.Event()
    try:
        _hold(writer, gate)
        for i in range(4):
            row: dict[str, object] = {
                "conn_id": f"c{i}", "operation_id": "op0", "node_id": "n1", "direction": "inbound",
                "customer_number": "3001", "agents": ["1001", f"10{i:02d}"], "started_at": at + timedelta(seconds=i),
                "ended_at": at + timedelta(seconds=10 + i), "hangup_by": "customer", "transfer_count": i,
                "legs": [{"leg_id": f"l{i}", "role": "customer"}],
            }
            if i % 2:  # another column set in the same batch
                row.update(answered_at=at + timedelta(seconds=5), sip_cause=486, queue="support")
            writer.insert(s.cdrs, row)
        gate.set()
        assert writer.flush(10)
        assert writer.stats.batches == 2 and writer.stats.failed == 0
        with engine.connect() as conn:
            rows = conn.execute(select(s.cdrs.c.conn_id, s.cdrs.c.agents, s.cdrs.c.started_at, s.cdrs.c.answered_at,
                                       s.cdrs.c.sip_cause, s.cdrs.c.queue, s.cdrs.c.legs)
                                .order_by(s.cdrs.c.conn_id)).all()
        assert [tuple(r) for r in rows] == [
            (f"c{i}", ["1001", f"10{i:02d}"], at + timedelta(seconds=i),
             at + timedelta(seconds=5) if i % 2 else None, 486 if i % 2 else None, "support" if i % 2 else None,
             [{"leg_id": f"l{i}", "role": "customer"}])
            for i in range(4)]
    finally:
        writer.close()


def test_an_insert_leaving_out_a_column_with_a_python_default_gets_the_default(engine: Engine) -> None:
    metadata = MetaData()
    table = Table("writer_defaults", metadata, Column("id", Integer, primary_key=True),
                  Column("label", String(20), nullable=False, default="from-python"))
    metadata.create_all(engine)
    writer = Writer(engine).start()
    try:
        writer.insert(table, {"id": 1})
        writer.insert(table, {"id": 2, "label": "given"})
        assert writer.flush(10)
        with engine.connect() as conn:
            assert [tuple(r) for r in conn.execute(select(table).order_by(table.c.id))] == [
                (1, "from-python"), (2, "given")]
    finally:
        writer.close()
        metadata.drop_all(engine)


def test_a_batch_larger_than_one_statement_allows_lands_whole_and_in_order(engine: Engine) -> None:
    writer = Writer(engine, max_batch=5000).start()
    gate = threading.Event()
    try:
        _hold(writer, gate)
        for i in range(1500):  # 3 columns: more rows than one SQLite statement of 999 variables holds
            writer.insert(s.operations, {"id": f"op{i:05d}", "sip_domain": f"op{i}.test", "name": str(i)})
        gate.set()
        assert writer.flush(30)
        assert writer.stats.batches == 2 and writer.stats.failed == 0
        with engine.connect() as conn:
            rows = conn.execute(select(s.operations.c.id, s.operations.c.name).order_by(s.operations.c.id)).all()
        assert [tuple(r) for r in rows] == [(f"op{i:05d}", str(i)) for i in range(1500)]
    finally:
        writer.close()


def test_a_batch_of_inserts_with_a_failing_row_is_rolled_back_and_retried_row_by_row(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    writer = Writer(engine).start()
    gate = threading.Event()
    try:
        _hold(writer, gate)
        writer.insert(s.operations, _operation(1))
        writer.insert(s.operations, _operation(1))  # duplicate key: fails, alone
        writer.insert(s.operations, _operation(2))
        with caplog.at_level(logging.ERROR, logger="callbridge.storage.writer"):
            gate.set()
            assert writer.flush(10)
        assert (writer.stats.failed, writer.stats.committed) == (1, 3)
        writer.insert(s.operations, _operation(3))  # the writer goes on writing afterwards
        assert writer.flush(10)
        with engine.connect() as conn:
            assert conn.execute(select(s.operations.c.id).order_by(s.operations.c.id)).scalars().all() == [
                "op1", "op2", "op3"]
    finally:
        writer.close()


def test_on_sqlite_the_writers_statement_journals_stay_in_memory(engine: Engine) -> None:
    """A multi-row INSERT inside a batch's transaction journals every page it changes; on SQLite that journal is
    kept in memory (`temp_store = MEMORY` on the writer's connection), never in a temporary file per statement."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's temp_store")
    writer = Writer(engine).start()
    seen: list[int] = []
    try:
        writer.submit(lambda conn: seen.append(int(conn.exec_driver_sql("PRAGMA temp_store").scalar_one())))
        assert writer.flush(10)
        assert seen == [2]  # MEMORY
    finally:
        writer.close()


def test_a_batch_of_two_tables_failing_in_its_second_statement_lands_nothing_twice(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    writer = Writer(engine).start()
    gate = threading.Event()
    try:
        _hold(writer, gate)
        at = datetime(2026, 1, 1, tzinfo=UTC)
        for i in range(200):  # enough rows per table for each multi-row INSERT to change many pages
            writer.insert(s.operations, {"id": f"op{i:03d}", "sip_domain": f"op{i}.test", "name": "x" * 200})
            writer.insert(s.events, {"operation_id": "op", "seq": i, "type": "t", "at": at, "conn_id": None,
                                     "line": "{}" * 100})
        writer.insert(s.events, {"operation_id": "op", "seq": 7, "type": "t", "at": at, "conn_id": None,
                                 "line": "{}"})  # a duplicate key: fails, alone
        with caplog.at_level(logging.ERROR, logger="callbridge.storage.writer"):
            gate.set()
            assert writer.flush(30)
        assert (writer.stats.failed, writer.stats.committed) == (1, 401)
        with engine.connect() as conn:
            assert _count(engine) == 200
            assert conn.execute(select(func.count()).select_from(s.events)).scalar_one() == 200
            assert conn.execute(select(s.events.c.line).where(s.events.c.seq == 7)).scalar_one() == "{}" * 100
    finally:
        writer.close()


def _model_apply(rows: dict[int, dict[str, object]], op: tuple[str, dict[str, object]]) -> None:
    """What each write means, one at a time: the model the folded batch must agree with."""
    kind, values = op
    key = int(values["id"])  # type: ignore[call-overload]
    changed = {c: v for c, v in values.items() if c != "id"}
    if kind == "delete":
        rows.pop(key, None)
    elif kind == "update":
        if key in rows:
            rows[key].update(changed)
    elif key in rows:  # upsert of a row that is there
        rows[key].update(changed)
    else:
        rows[key] = {"a": None, "b": "default-b", **changed}


def test_upserts_updates_and_deletes_in_one_batch_fold_per_key_to_what_one_by_one_would_do(engine: Engine) -> None:
    import random

    metadata = MetaData()
    table = Table("writer_fold", metadata, Column("id", Integer, primary_key=True), Column("a", Integer),
                  Column("b", String(20), server_default="default-b"))
    metadata.create_all(engine)
    chooser = random.Random(4475)
    writer = Writer(engine).start()
    try:
        model: dict[int, dict[str, object]] = {}
        for round_ in range(40):
            gate = threading.Event()
            _hold(writer, gate)
            for _ in range(chooser.randint(1, 12)):
                kind = chooser.choice(["upsert", "upsert", "update", "delete"])
                values: dict[str, object] = {"id": chooser.randint(1, 4)}
                if kind != "delete":
                    for column in chooser.sample(["a", "b"], chooser.randint(1, 2)):
                        values[column] = chooser.randint(0, 99) if column == "a" else f"r{round_}"
                getattr(writer, kind)(table, ("id",), values)
                _model_apply(model, (kind, values))
            gate.set()
            assert writer.flush(10)
            with engine.connect() as conn:
                stored = {r.id: {"a": r.a, "b": r.b} for r in conn.execute(select(table))}
            assert stored == model, f"round {round_}"
        assert writer.stats.failed == 0
    finally:
        writer.close()
        metadata.drop_all(engine)


def test_a_dialog_written_updated_and_removed_costs_one_statement_per_table_and_kind(engine: Engine) -> None:
    from callbridge.storage import rowwrites

    at = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    dialog = {"leg_id": "leg-1", "conn_id": "c1", "call_id": "call-1", "local_tag": "l", "remote_tag": "r",
              "local_uri": "sip:a@127.0.0.1", "remote_uri": "sip:b@127.0.0.1", "local_cseq": 1, "remote_cseq": 1,
              "remote_target": "sip:b@127.0.0.1:5070", "route_set": [], "peer_host": "127.0.0.1",
              "peer_port": 5070, "transport": "udp", "node_id": "n1", "created_at": at, "updated_at": at}
    cseq = {"leg_id": "leg-1", "local_cseq": 2, "remote_cseq": 1, "updated_at": at + timedelta(seconds=1)}
    run = [rowwrites.Upsert(s.dialogs, ("leg_id",), dialog), rowwrites.Update(s.dialogs, ("leg_id",), cseq),
           rowwrites.Update(s.dialogs, ("leg_id",), {**cseq, "local_cseq": 3})]
    steps = rowwrites.plan(engine.dialect, run)
    assert len(steps) == 1 and isinstance(steps[0], rowwrites.Step)
    assert "ON CONFLICT" in steps[0].statement.sql and steps[0].rows[0]["local_cseq"] == 3
    steps = rowwrites.plan(engine.dialect, [*run, rowwrites.Delete(s.dialogs, ("leg_id",), {"leg_id": "leg-1"})])
    assert len(steps) == 1 and isinstance(steps[0], rowwrites.Step)
    assert steps[0].statement.sql.startswith("DELETE") and steps[0].rows == [{"leg_id": "leg-1"}]
    writer = Writer(engine).start()
    try:
        gate = threading.Event()
        _hold(writer, gate)
        for item in run:
            getattr(writer, type(item).__name__.lower())(item.table, item.keys, item.values)
        gate.set()
        assert writer.flush(10)
        with engine.connect() as conn:
            row = conn.execute(select(s.dialogs.c.local_cseq, s.dialogs.c.updated_at)).one()
        assert tuple(row) == (3, at + timedelta(seconds=1))
        writer.update(s.dialogs, ("leg_id",), {"leg_id": "gone", "local_cseq": 9})  # no such row: nothing
        writer.delete(s.dialogs, ("leg_id",), {"leg_id": "leg-1"})
        assert writer.flush(10) and writer.stats.failed == 0
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(s.dialogs)).scalar_one() == 0
    finally:
        writer.close()


def test_the_writers_sqlite_time_text_is_sqlalchemys_own(engine: Engine) -> None:
    """`sqlite_utc_text` (the writer's binding of UtcDateTime on SQLite) writes exactly the text SQLAlchemy's
    processors write, for UTC and other zones, whole seconds, early years and None; a naive time is refused the
    same way."""
    from datetime import timezone

    from sqlalchemy.dialects import sqlite

    from callbridge.storage import rowwrites

    dialect = sqlite.dialect()
    column = s.events.c.at
    sqlalchemy_bind = column.type.dialect_impl(dialect).bind_processor(dialect)
    assert rowwrites._bind_processor(column.type, dialect) is s.sqlite_utc_text
    values = [datetime(2026, 12, 6, 3, 27, 30, 272299, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC),
              datetime(999, 2, 3, 4, 5, 6, 7, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
              datetime(2026, 6, 30, 23, 30, 0, 500000, tzinfo=timezone(timedelta(hours=-5))),
              datetime(2026, 3, 29, 1, 0, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
              datetime.fromtimestamp(1_764_990_000.123456, UTC), None]
    for value in values:
        assert s.sqlite_utc_text(value) == sqlalchemy_bind(value), value
    assert s.sqlite_utc_text(values[4]) == "2026-07-01 04:30:00.500000"
    naive = datetime(2026, 12, 6, 3, 27, 30)
    for bind in (s.sqlite_utc_text, sqlalchemy_bind):
        with pytest.raises(ValueError, match="naive datetime"):
            bind(naive)
    # PostgreSQL keeps SQLAlchemy's own processing
    from sqlalchemy.dialects import postgresql

    assert rowwrites._bind_processor(column.type, postgresql.dialect()) is not s.sqlite_utc_text
    # and the rows the writer writes read back as the same aware UTC instants
    with engine.begin() as conn:
        conn.execute(insert(s.operations).values(_operation(0)))
    writer = Writer(engine).start()
    try:
        for seq, value in enumerate(values[:-1], start=1):
            writer.insert(s.events, {"operation_id": "op0", "seq": seq, "type": "call.ended", "at": value,
                                     "conn_id": None, "line": "{}"})
        assert writer.flush(10) and writer.stats.failed == 0
        with engine.connect() as conn:
            stored = conn.execute(select(s.events.c.at).order_by(s.events.c.seq)).scalars().all()
        assert stored == [value.astimezone(UTC) for value in values[:-1]]
    finally:
        writer.close()
