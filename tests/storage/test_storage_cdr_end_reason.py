"""A CDR's end_reason (issue #13, dead media ends calls): written and read back ("media_timeout", or None for a
call the parties ended); migration 0015 up and down."""

from __future__ import annotations

import dataclasses

from sqlalchemy import Engine, inspect, text

from callbridge.callcontrol.model import Cdr, LegRecord
from callbridge.http.resources import cdr_json
from callbridge.storage import administration as admin
from callbridge.storage.database import make_engine
from callbridge.storage.migrate import upgrade
from callbridge.storage.records import read_cdr
from callbridge.storage.store import Storage

T0 = 1_796_500_000.0
CDR = Cdr(conn_id="c1", operation_id="0042", node_id="node-a", direction="inbound", customer_number="3105550000",
          queue="support", agents=("1001",), started_at=T0, answered_at=T0 + 2, ended_at=T0 + 70, hangup_by="system",
          sip_cause=None, transfer_count=0,
          legs=(LegRecord("l1", "c1", "customer", "3105550000", "ended", None, T0, T0 + 2, T0 + 70, None, "system"),),
          end_reason="media_timeout")


def test_the_end_reason_is_written_read_back_and_served(engine: Engine) -> None:
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test")
    storage = Storage(engine, node_id="node-a", migrate=False)
    try:
        storage.calls.save_cdr(CDR)
        storage.calls.save_cdr(dataclasses.replace(CDR, conn_id="c2", hangup_by="customer", end_reason=None))
        storage.writer.flush()
        with engine.connect() as conn:
            first, second = read_cdr(conn, "c1"), read_cdr(conn, "c2")
    finally:
        storage.close()
    assert first == CDR
    assert second is not None and (second.hangup_by, second.end_reason) == ("customer", None)
    assert (cdr_json(CDR)["hangup_by"], cdr_json(CDR)["end_reason"]) == ("system", "media_timeout")


def test_0015_adds_the_column_empty_and_takes_it_away(db_url: str) -> None:
    from alembic import command

    from callbridge.storage.migrate import alembic_config

    upgrade(db_url, "0014")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test')"))
            conn.execute(text(
                "INSERT INTO cdrs (conn_id, operation_id, node_id, direction, customer_number, agents, started_at, "
                "ended_at, hangup_by, transfer_count, legs) VALUES ('c1', '0042', 'node-a', 'inbound', '310', '[]', "
                "'2026-12-06 00:00:00', '2026-12-06 00:01:00', 'customer', 0, '[]')"))
        upgrade(engine, "0015")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT end_reason FROM cdrs")).scalar_one() is None
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0014")
        assert "end_reason" not in {c["name"] for c in inspect(engine).get_columns("cdrs")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT hangup_by FROM cdrs")).scalar_one() == "customer"
    finally:
        engine.dispose()
