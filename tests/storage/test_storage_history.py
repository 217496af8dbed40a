"""The history reads (`storage.history`), on SQLite and PostgreSQL: ended calls newest first and CDRs oldest first,
keyset-paged so that every record comes once, time ranges `since` inclusive and `until` exclusive, and nothing
of another operation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from callbridge.callcontrol.model import CallRecord, Cdr, LegRecord, TransferRecord
from callbridge.storage import administration as admin
from callbridge.storage.history import History, Position, TimeRange
from callbridge.storage.store import Storage

T0 = 1_790_000_000.25
# started_at of c0..c6: c2 and c3 start at the same instant (the conn_id breaks the tie)
STARTS = {"c0": T0, "c1": T0 + 10, "c2": T0 + 20, "c3": T0 + 20, "c4": T0 + 30, "c5": T0 + 40.5, "c6": T0 + 50}


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def call(conn_id: str, op: str = "0042", started: float | None = None, ended: bool = True) -> CallRecord:
    t = STARTS.get(conn_id, T0) if started is None else started
    return CallRecord(conn_id=conn_id, operation_id=op, node_id="node-a", direction="inbound",
                      customer_number="3105550000", state="ended" if ended else "connected", queue="support",
                      agent="1001", created_at=t, answered_at=t + 1, ended_at=t + 5 if ended else None,
                      hangup_by="customer" if ended else None, sip_cause=None, transfer_count=0,
                      related_conn_id=None)


def cdr(record: CallRecord) -> Cdr:
    leg = LegRecord(f"{record.conn_id}-l1", record.conn_id, "customer", "3105550000", "ended", None,
                    record.created_at, record.answered_at, record.ended_at, None, "customer")
    assert record.ended_at is not None
    return Cdr(conn_id=record.conn_id, operation_id=record.operation_id, node_id="node-a", direction="inbound",
               customer_number="3105550000", queue="support", agents=("1001",), started_at=record.created_at,
               answered_at=record.answered_at, ended_at=record.ended_at, hangup_by="customer", sip_cause=None,
               transfer_count=0, legs=(leg,))


@pytest.fixture
def history(engine: Engine) -> Iterator[History]:
    with engine.begin() as conn:
        for op in ("0042", "0077"):
            admin.create_operation(conn, id=op, sip_domain=f"{op}.callbridge.test")
    storage = Storage(engine, node_id="node-a", migrate=False)
    try:
        for conn_id in STARTS:
            record = call(conn_id)
            storage.calls.save_call(record)
            storage.calls.save_cdr(cdr(record))
        storage.calls.save_leg(LegRecord("c1-agent", "c1", "agent", "1001", "ended", "1001", T0 + 11, T0 + 12,
                                         T0 + 15, None, "agent"))
        storage.calls.save_call(call("live", started=T0 + 60, ended=False))
        foreign = call("x1", op="0077", started=T0 + 5)
        storage.calls.save_call(foreign)
        storage.calls.save_cdr(cdr(foreign))
        for tid, op in (("t-42", "0042"), ("t-77", "0077")):
            storage.calls.save_transfer(TransferRecord(
                id=tid, conn_id="c1" if op == "0042" else "x1", operation_id=op, kind="blind", agent="1001",
                target="1002", target_kind="agent", state="completed", created_at=T0 + 12, updated_at=T0 + 13,
                outcome="completed", ended_at=T0 + 13, timeout=30.0))
        storage.writer.flush()
        yield History(engine)
    finally:
        storage.writer.close()


def test_ended_calls_page_newest_first_each_once(history: History) -> None:
    seen: list[str] = []
    after: Position | None = None
    while True:
        page = history.ended_calls("0042", after=after, limit=3)
        seen.extend(c.conn_id for c in page)
        if len(page) < 3:
            break
        after = Position(at(page[-1].created_at), page[-1].conn_id)
    assert seen == ["c6", "c5", "c4", "c3", "c2", "c1", "c0"]  # the live call and 0077's never


def test_cdrs_page_oldest_first_each_once(history: History) -> None:
    seen: list[str] = []
    after: Position | None = None
    while True:
        page = history.cdrs("0042", after=after, limit=2)
        seen.extend(c.conn_id for c in page)
        if len(page) < 2:
            break
        after = Position(at(page[-1].started_at), page[-1].conn_id)
    assert seen == ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]
    assert history.cdrs("0042", limit=1)[0].legs[0].leg_id == "c0-l1"


def test_time_range_is_since_inclusive_until_exclusive(history: History) -> None:
    span = TimeRange(at(T0 + 10), at(T0 + 40.5))
    assert [c.conn_id for c in history.cdrs("0042", span=span)] == ["c1", "c2", "c3", "c4"]
    assert [c.conn_id for c in history.ended_calls("0042", span=span)] == ["c4", "c3", "c2", "c1"]
    assert [c.conn_id for c in history.cdrs("0042", span=TimeRange(since=at(T0 + 40.5)))] == ["c5", "c6"]
    assert [c.conn_id for c in history.cdrs("0042", span=TimeRange(until=at(T0 + 10)))] == ["c0"]
    assert history.ended_calls("0042", span=TimeRange(at(T0 + 30), at(T0 + 30))) == []


def test_one_call_with_its_legs_and_one_transfer_of_the_operation_only(history: History) -> None:
    found = history.call("0042", "c1")
    assert found is not None
    record, legs = found
    assert (record.conn_id, record.created_at, record.state) == ("c1", T0 + 10, "ended")
    assert [leg.leg_id for leg in legs] == ["c1-agent"]
    assert history.call("0077", "c1") is None and history.call("0042", "x1") is None
    assert history.call("0042", "nope") is None
    transfer = history.transfer("0042", "t-42")
    assert transfer is not None and transfer.state == "completed"
    assert history.transfer("0042", "t-77") is None and history.transfer("0077", "t-42") is None
    assert [c.conn_id for c in history.ended_calls("0077")] == ["x1"]
    assert [c.conn_id for c in history.ended_calls("0042", agent="1002")] == []
