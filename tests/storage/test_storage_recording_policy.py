"""Recording policy (issue #13): per operation (always | never | on_demand, days kept) and per queue (or the
operation's), stored and read back, refused with the field and the value when wrong; migration 0012 up and down."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text

from callbridge.storage import admin_apply as ap
from callbridge.storage import admin_changes as ch
from callbridge.storage import administration as admin
from callbridge.storage.admin_checks import AdminError
from callbridge.storage.database import make_engine
from callbridge.storage.directory import Directory
from callbridge.storage.migrate import upgrade

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "operation.toml"


def test_the_operation_and_queue_policies_are_stored_and_read_back(engine: Engine) -> None:
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test", recording="on_demand",
                               recording_retention_days=30)
        admin.create_operation(conn, id="0043", sip_domain="b.test")
        admin.create_queue(conn, "0042", "sales", recording="always")
        admin.create_queue(conn, "0042", "support")
    directory = Directory(engine).load()
    first, second = directory.list_operations()
    assert (first.recording, first.recording_retention_days) == ("on_demand", 30)
    assert (second.recording, second.recording_retention_days) == ("never", None)  # off, kept forever
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, recording FROM queues ORDER BY name")).all()
    assert [tuple(r) for r in rows] == [("sales", "always"), ("support", None)]  # None: the operation's


@pytest.mark.parametrize(("fields", "message"), [
    ({"recording": "sometimes"}, "recording: 'sometimes' is not 'always', 'never' or 'on_demand'"),
    ({"recording_retention_days": 0}, "recording_retention_days: 0 is below 1"),
    ({"recording_retention_days": 1.5}, "recording_retention_days: 1.5 is not an integer"),
])
def test_a_wrong_operation_policy_is_refused_and_nothing_is_created(engine: Engine, fields: dict[str, object],
                                                                   message: str) -> None:
    with pytest.raises(AdminError) as refused, engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test", **fields)  # type: ignore[arg-type]
    assert str(refused.value) == message
    assert Directory(engine).load().list_operations() == []


def test_a_wrong_queue_policy_is_refused_and_nothing_is_created(engine: Engine) -> None:
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test")
    with pytest.raises(AdminError) as refused, engine.begin() as conn:
        admin.create_queue(conn, "0042", "sales", recording="loud")
    assert str(refused.value) == "recording: 'loud' is not 'always', 'never' or 'on_demand'"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM queues")).scalar_one() == 0


def test_0012_gives_existing_operations_no_recording_and_takes_the_columns_away(db_url: str) -> None:
    from alembic import command
    from sqlalchemy.exc import IntegrityError

    from callbridge.storage.migrate import alembic_config

    upgrade(db_url, "0011")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test')"))
            conn.execute(text("INSERT INTO queues (operation_id, name) VALUES ('0042', 'sales')"))
        upgrade(engine, "0012")
        with engine.connect() as conn:
            row = conn.execute(text("SELECT recording, recording_retention_days FROM operations")).one()
            assert tuple(row) == ("never", None)
            assert conn.execute(text("SELECT recording FROM queues")).scalar_one() is None
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE operations SET recording = 'sometimes' WHERE id = '0042'"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE queues SET recording = 'sometimes' WHERE name = 'sales'"))
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0011")
        assert {"recording", "recording_retention_days"} & {
            c["name"] for c in inspect(engine).get_columns("operations")} == set()
        assert "recording" not in {c["name"] for c in inspect(engine).get_columns("queues")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT transfer_audio FROM operations")).scalar_one() == "ringback"
    finally:
        engine.dispose()


def test_the_operation_file_sets_the_policies_and_a_changed_file_is_an_update(engine: Engine) -> None:
    doc: dict[str, Any] = ap.read_operation_file(EXAMPLE)
    ap.execute(engine, doc)
    assert ap.plan_lines(engine, doc) == []
    [op] = Directory(engine).load().list_operations()
    assert (op.recording, op.recording_retention_days) == ("on_demand", 90)
    with engine.connect() as conn:
        assert ch.queue_fields(conn, "0042", "sales")["recording"] == "always"
        assert ch.queue_fields(conn, "0042", "support")["recording"] is None

    changed = copy.deepcopy(doc)
    changed["operation"]["recording"] = "always"
    del changed["operation"]["recording_retention_days"]
    [sales] = [q for q in changed["queues"] if q["name"] == "sales"]
    sales["recording"] = "never"
    assert sorted(ap.execute(engine, changed).lines()) == [
        "update operation '0042': recording 'on_demand' -> 'always', recording_retention_days 90 -> None",
        "update queue 'sales': recording 'always' -> 'never'",
    ]

    broken = copy.deepcopy(changed)
    broken["operation"]["recording"] = "sometimes"
    with pytest.raises(AdminError) as refused:
        ap.execute(engine, broken)
    assert str(refused.value) == "operation.recording: 'sometimes' is not 'always', 'never' or 'on_demand'"
    [op] = Directory(engine).load().list_operations()
    assert op.recording == "always"  # nothing changed
