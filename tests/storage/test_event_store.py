"""The event store on SQLite and PostgreSQL: rows read back as written, bounds per operation, pruning keeps a run of
consecutive seqs (the newest always), in chunks; the retention setting read by bootstrap."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from callbridge.bootstrap import retention_days_from_env
from callbridge.storage.event_log import Bounds, EventStore
from callbridge.storage.writer import Writer

DAY = 86400.0
T0 = 1_764_900_000.0


def _store(engine: Engine) -> tuple[EventStore, Writer]:
    writer = Writer(engine).start()
    return EventStore(writer, engine), writer


def test_rows_read_back_and_bounds(engine: Engine) -> None:
    store, writer = _store(engine)
    try:
        for seq in (1, 2, 3):
            line = f'{{"seq":{seq},"data":{{"n":"ñ"}}}}'.encode()
            store.append("0042", seq, "agent.state_changed", T0 + seq, None if seq != 2 else "c-1", line)
        store.append("0077", 1, "call.offered", T0, "c-9", b"{}")
        assert writer.flush(10)
        assert writer.stats.failed == 0
        assert store.bounds() == {"0042": Bounds(1, 3), "0077": Bounds(1, 1)}
        read = store.read("0042", 1)
        assert [(e.seq, e.type, e.conn_id) for e in read] == [(2, "agent.state_changed", "c-1"),
                                                             (3, "agent.state_changed", None)]
        assert read[0].line == '{"seq":2,"data":{"n":"ñ"}}'.encode() and read[0].at == pytest.approx(T0 + 2)
        assert [e.seq for e in store.read("0042", 0, limit=2)] == [1, 2]
    finally:
        writer.close()


def test_pruning_keeps_consecutive_seqs_and_the_newest(engine: Engine) -> None:
    store, writer = _store(engine)
    try:
        # seq 6's time is older than seq 5's (the wall clock stepped back): the kept part still has no hole
        ages = {1: 9, 2: 9, 3: 8, 4: 8, 5: 1, 6: 8, 7: 1, 8: 0.5}
        for seq, days in ages.items():
            store.append("0042", seq, "agent.state_changed", T0 - days * DAY, None, b"{}")
        store.append("0077", 1, "agent.state_changed", T0 - 30 * DAY, None, b"{}")  # old, but its newest
        assert writer.flush(10)
        assert store.prune(T0 - 7 * DAY, chunk=2) == {"0042": Bounds(7, 8), "0077": Bounds(1, 1)}
        assert [e.seq for e in store.read("0042", 0)] == [7, 8]
        assert store.prune(T0, chunk=2) == {"0042": Bounds(8, 8), "0077": Bounds(1, 1)}
    finally:
        writer.close()


def test_retention_is_read_from_the_environment() -> None:
    assert retention_days_from_env({}) == 7.0
    assert retention_days_from_env({"CALLBRIDGE_EVENT_RETENTION_DAYS": "0.5"}) == 0.5
    for bad in ("0", "-1", "x", "inf"):
        with pytest.raises(ValueError, match="CALLBRIDGE_EVENT_RETENTION_DAYS"):
            retention_days_from_env({"CALLBRIDGE_EVENT_RETENTION_DAYS": bad})
