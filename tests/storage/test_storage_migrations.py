"""Migrations build exactly the schema's metadata, on both backends, and are idempotent."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from callbridge.storage.database import make_engine
from callbridge.storage.migrate import current_revision, head_revision, upgrade
from callbridge.storage.schema import metadata


def test_upgrade_reaches_head_and_matches_metadata(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    assert diff == []
    tables = set(inspect(engine).get_table_names())
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    upgrade(engine)
    upgrade(engine.url.render_as_string(hide_password=False))
    assert current_revision(engine) == head_revision()


def test_the_comparison_sees_a_difference(engine: Engine) -> None:
    # The metadata comparison above must be able to fail: drop a table and it must say so.
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE recalls"))
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    assert [d[0] for d in diff if d[0] == "add_table"] == ["add_table"]


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    finally:
        eng.dispose()


def test_0004_gives_existing_operations_the_45_s_dial_timeout_and_takes_the_column_away(db_url: str) -> None:
    from alembic import command

    from callbridge.storage.migrate import alembic_config

    upgrade(db_url, "0003")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test')"))
        upgrade(engine, "0004")
        assert current_revision(engine) == "0004"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT dial_timeout FROM operations WHERE id = '0042'")).scalar_one() == 45.0
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0003")
        assert "dial_timeout" not in {c["name"] for c in inspect(engine).get_columns("operations")}
        with engine.connect() as conn:  # the row itself survives the column's removal
            assert conn.execute(text("SELECT sip_domain FROM operations WHERE id = '0042'")).scalar_one() == "a.test"
    finally:
        engine.dispose()


def test_0006_adds_the_digest_offer_and_the_calls_index_and_takes_both_away(db_url: str) -> None:
    from alembic import command

    from callbridge.storage.migrate import alembic_config

    upgrade(db_url, "0005")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test')"))
        assert "ix_calls_operation_id_started_at" not in {i["name"] for i in inspect(engine).get_indexes("calls")}
        upgrade(engine, "0006")
        assert current_revision(engine) == "0006"
        with engine.connect() as conn:  # an existing operation offers the node's setting: ""
            assert conn.execute(text("SELECT digest_algorithms FROM operations WHERE id = '0042'")
                                ).scalar_one() == ""
        calls_indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("calls")}
        assert calls_indexes["ix_calls_operation_id_started_at"] == ["operation_id", "started_at"]
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0005")
        assert current_revision(engine) == "0005"
        assert "digest_algorithms" not in {c["name"] for c in inspect(engine).get_columns("operations")}
        assert "ix_calls_operation_id_started_at" not in {i["name"] for i in inspect(engine).get_indexes("calls")}
        with engine.connect() as conn:  # the row itself survives the column's removal
            assert conn.execute(text("SELECT sip_domain FROM operations WHERE id = '0042'")).scalar_one() == "a.test"
        upgrade(engine)  # and up again, to head
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_the_history_listing_of_calls_uses_the_operation_time_index(tmp_path) -> None:
    # The ended-calls listing (storage/history.py) filters on operation_id and orders by started_at: SQLite's
    # planner must reach it through ix_calls_operation_id_started_at, not by scanning calls. (PostgreSQL's planner
    # scans a table this small whatever its indexes; the index's presence there is checked above.)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT * FROM calls WHERE operation_id = '0042' AND ended_at IS NOT NULL "
                "AND started_at >= '2026-01-01' ORDER BY started_at DESC, conn_id DESC LIMIT 100"))
    finally:
        eng.dispose()
    assert "ix_calls_operation_id_started_at" in plan, plan


def test_0008_makes_existing_operations_anchored_with_direct_fallback_and_takes_the_columns_away(db_url: str) -> None:
    from alembic import command
    from sqlalchemy.exc import IntegrityError

    from callbridge.storage.migrate import alembic_config

    upgrade(db_url, "0006")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test')"))
        upgrade(engine, "0008")
        with engine.connect() as conn:
            row = conn.execute(text("SELECT media_mode, media_relay_down FROM operations WHERE id = '0042'")).one()
        assert tuple(row) == ("anchored", "direct")
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE operations SET media_mode = 'loud' WHERE id = '0042'"))
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0006")
        columns = {c["name"] for c in inspect(engine).get_columns("operations")}
        assert {"media_mode", "media_relay_down"} & columns == set()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT sip_domain FROM operations WHERE id = '0042'")).scalar_one() == "a.test"
    finally:
        engine.dispose()


def test_0011_gives_existing_operations_the_built_in_music_and_ringback_and_takes_the_columns_away(
        db_url: str) -> None:
    from alembic import command
    from sqlalchemy.exc import IntegrityError

    from callbridge.storage.migrate import alembic_config

    upgrade(db_url, "0008")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test')"))
        upgrade(engine, "0011")
        with engine.connect() as conn:
            row = conn.execute(text("SELECT hold_music, hold_music_name, transfer_audio, ringback_tone "
                                    "FROM operations WHERE id = '0042'")).one()
        assert tuple(row) == (None, "", "ringback", "etsi")
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE operations SET transfer_audio = 'silence' WHERE id = '0042'"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE operations SET ringback_tone = 'uk' WHERE id = '0042'"))
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0008")
        columns = {c["name"] for c in inspect(engine).get_columns("operations")}
        assert {"hold_music", "hold_music_name", "transfer_audio", "ringback_tone"} & columns == set()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT media_mode FROM operations WHERE id = '0042'")).scalar_one() == "anchored"
    finally:
        engine.dispose()


def test_upgrading_keeps_the_rows_that_refer_to_a_rebuilt_table(db_url: str) -> None:
    # SQLite rebuilds `operations` in 0008, 0011 and 0012 (batch mode); with foreign keys on, dropping the old
    # table cascaded to every queue and agent of the operation. They must all survive.
    upgrade(db_url, "0005")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test')"))
            conn.execute(text("INSERT INTO queues (operation_id, name) VALUES ('0042', 'sales')"))
            conn.execute(text("INSERT INTO agents (operation_id, extension, ha1_md5, ha1_sha256) "
                              "VALUES ('0042', '1001', 'm', 's')"))
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM queues")).scalars().all() == ["sales"]
            assert conn.execute(text("SELECT extension FROM agents")).scalars().all() == ["1001"]
            if engine.dialect.name == "sqlite":  # and the pool's connection has its foreign keys back on
                assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
    finally:
        engine.dispose()
