"""Migrations build exactly the schema's metadata, on both backends, and are idempotent."""

from __future__ import annotations

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
