"""A trunk's dtmf_mode (issue #13, DTMF in the media): how api=dtmf reaches the customers of that trunk, RFC 4733
events (the default) or SIP INFO; stored and read back, refused when wrong, set by the operation file; migration
0014 up and down."""

from __future__ import annotations

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


def test_the_mode_is_stored_read_back_and_changed(engine: Engine) -> None:
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test")
        admin.create_trunk(conn, "0042", "events", "192.0.2.1")
        admin.create_trunk(conn, "0042", "info", "192.0.2.2", dtmf_mode="info")
    events, info = Directory(engine).load().list_trunks("0042")
    assert (events.name, events.dtmf_mode) == ("events", "rfc4733")  # the default
    assert (info.name, info.dtmf_mode) == ("info", "info")
    with engine.begin() as conn:
        assert ch.update_trunk(conn, "0042", "events", dtmf_mode="info").dtmf_mode == "info"


def test_a_wrong_mode_is_refused_and_nothing_is_created(engine: Engine) -> None:
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test")
    with pytest.raises(AdminError) as refused, engine.begin() as conn:
        admin.create_trunk(conn, "0042", "carrier", "192.0.2.1", dtmf_mode="inband")
    assert str(refused.value) == "dtmf_mode: 'inband' is not 'rfc4733' or 'info'"
    assert Directory(engine).load().list_trunks("0042") == []


def test_the_operation_file_sets_the_mode_and_a_changed_file_is_an_update(engine: Engine) -> None:
    doc: dict[str, Any] = ap.read_operation_file(EXAMPLE)
    ap.execute(engine, doc)
    assert ap.plan_lines(engine, doc) == []
    [trunk] = Directory(engine).load().list_trunks(doc["operation"]["id"])
    assert trunk.dtmf_mode == "rfc4733"
    doc["trunks"][0]["dtmf_mode"] = "info"
    assert ap.plan_lines(engine, doc) != []
    ap.execute(engine, doc)
    [trunk] = Directory(engine).load().list_trunks(doc["operation"]["id"])
    assert trunk.dtmf_mode == "info"


def test_0014_gives_existing_trunks_rfc4733_and_takes_the_column_away(db_url: str) -> None:
    from alembic import command
    from sqlalchemy.exc import IntegrityError

    from callbridge.storage.migrate import alembic_config

    upgrade(db_url, "0013")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test')"))
            conn.execute(text("INSERT INTO trunks (operation_id, name, host, dial_patterns, inbound_networks) "
                              "VALUES ('0042', 'carrier', '192.0.2.1', '[]', '[]')"))
        upgrade(engine, "0014")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT dtmf_mode FROM trunks")).scalar_one() == "rfc4733"
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE trunks SET dtmf_mode = 'inband'"))
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0013")
        assert "dtmf_mode" not in {c["name"] for c in inspect(engine).get_columns("trunks")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT host FROM trunks")).scalar_one() == "192.0.2.1"
    finally:
        engine.dispose()
