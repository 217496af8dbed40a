"""The directory's change detection, on SQLite and PostgreSQL: every administrative write moves the
`directory_version` counter in its own transaction; `Directory.refresh()` reads the directory again exactly when
the counter moved, and a write that lands while a reload is reading is never lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection, Engine, func, select

from callbridge.storage import administration as admin
from callbridge.storage import schema as s
from callbridge.storage.database import make_engine
from callbridge.storage.directory import Directory, DirectorySnapshot, read_version

OP = "0042"


@pytest.fixture
def other(engine: Engine) -> Iterator[Engine]:
    """A second engine on the same database: `callbridge admin` in another process."""
    eng = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        yield eng
    finally:
        eng.dispose()


def version(engine: Engine) -> int:
    with engine.connect() as conn:
        return read_version(conn)


def test_a_migrated_database_has_one_row_at_zero(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(select(s.directory_version)).all() == [(1, 0)]
    directory = Directory(engine).load()
    assert (directory.version, directory.reloads) == (0, 1)


WRITES: list[tuple[str, Callable[[Connection], object]]] = [
    ("operation", lambda c: admin.create_operation(c, id=OP, sip_domain="op.test")),
    ("queue", lambda c: admin.create_queue(c, OP, "sales")),
    ("agent", lambda c: admin.create_agent(c, OP, "1001", "password1", queues=["sales"])),
    ("token", lambda c: admin.create_token(c, OP, label="t")),
    ("revoke", lambda c: admin.revoke_token(c, "1")),
    ("trunk", lambda c: admin.create_trunk(c, OP, "carrier", "127.0.0.2")),
    ("did", lambda c: admin.create_did(c, OP, "5550100", "sales", trunk="carrier")),
    ("aux state", lambda c: admin.create_aux_state(c, OP, "1", "Break")),
    ("activity code", lambda c: admin.create_activity_code(c, OP, 1, "sale", "Sale")),
]


async def test_every_administrative_write_moves_the_counter_and_refresh_reloads_once(
        engine: Engine, other: Engine) -> None:
    directory = Directory(engine).load()
    for n, (what, write) in enumerate(WRITES, start=1):
        with other.begin() as conn:
            write(conn)
        assert version(engine) == n, what
        assert await directory.refresh() is True, what
        assert (directory.version, directory.reloads) == (n, n + 1), what
        assert await directory.refresh() is False, what  # unchanged: no second read
        assert directory.reloads == n + 1, what
    # What the reloads brought in is what was written.
    assert directory.get_operation(OP) is not None
    assert [a.extension for a in directory.list_agents(OP)] == ["1001"]
    tokens = list(directory._snap.tokens.values())
    assert [(t.label, t.revoked) for t in tokens] == [("t", True)]
    assert directory.get_did(OP, "5550100") is not None
    assert [c.code for c in directory.list_activity_codes(OP)] == ["sale"]


async def test_a_refused_write_moves_nothing(engine: Engine, other: Engine) -> None:
    with other.begin() as conn:
        admin.create_operation(conn, id=OP, sip_domain="op.test")
    directory = Directory(engine).load()
    with pytest.raises(admin.AdminError), other.begin() as conn:
        admin.create_queue(conn, OP, "sales")
        admin.create_queue(conn, OP, "sales")  # refused: the transaction, first queue and bump included, rolls back
    with pytest.raises(admin.AdminError), other.begin() as conn:
        admin.revoke_token(conn, "99")
    assert version(engine) == 1
    assert await directory.refresh() is False
    assert directory.list_queues(OP) == []


async def test_a_write_during_a_reload_is_seen_by_the_next_refresh(
        engine: Engine, other: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    with other.begin() as conn:
        admin.create_operation(conn, id=OP, sip_domain="op.test")
    directory = Directory(engine)
    read = DirectorySnapshot.read
    written: list[str] = []

    def read_while_an_administrator_writes(conn: Connection) -> DirectorySnapshot:
        if not written:  # between the version read and the snapshot read of the first reload
            with other.begin() as admin_conn:
                written.append(admin.create_token(admin_conn, OP)[1])
        return read(conn)

    monkeypatch.setattr(DirectorySnapshot, "read", staticmethod(read_while_an_administrator_writes))
    directory.load()
    assert directory.version == 1 and written
    # Whether that read saw the token or not (SQLite's read transaction began before it; PostgreSQL's read
    # committed statements may see it), the counter moved past the version kept, so the next poll reads again.
    assert await directory.refresh() is True
    assert directory.version == 2
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(s.tokens)).scalar() == 1
    assert len(directory._snap.tokens) == 1
    assert await directory.refresh() is False


async def test_watch_polls_and_calls_back_after_each_reload(engine: Engine, other: Engine) -> None:
    directory = Directory(engine).load()
    changes: list[int] = []
    watch = asyncio.create_task(directory.watch(0.05, lambda: changes.append(directory.version)))
    try:
        await asyncio.sleep(0.3)
        assert changes == [] and directory.reloads == 1  # polls that found nothing read nothing
        with other.begin() as conn:
            admin.create_operation(conn, id=OP, sip_domain="op.test")
        async with asyncio.timeout(5):
            while not changes:
                await asyncio.sleep(0.02)
        assert changes == [1]
        assert directory.operation_for_domain("op.test") is not None
        await asyncio.sleep(0.3)
        assert changes == [1] and directory.reloads == 2
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


def test_the_dial_timeout_is_stored_per_operation_and_refused_below_a_second(engine: Engine) -> None:
    with engine.begin() as conn:
        made = admin.create_operation(conn, id="0042", sip_domain="a.test", dial_timeout=12.5)
        default = admin.create_operation(conn, id="0043", sip_domain="b.test")
    assert (made.dial_timeout, default.dial_timeout) == (12.5, 45.0)
    with engine.begin() as conn, pytest.raises(admin.AdminError, match=r"^dial_timeout: 0 is below 1$"):
        admin.create_operation(conn, id="0044", sip_domain="c.test", dial_timeout=0)
    directory = Directory(engine).load()
    assert [(op.id, op.dial_timeout) for op in directory.list_operations()] == [("0042", 12.5), ("0043", 45.0)]


def test_the_media_mode_and_relay_down_policy_are_stored_per_operation_and_checked(engine: Engine) -> None:
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test", media_mode="direct", media_relay_down="refuse")
        admin.create_operation(conn, id="0043", sip_domain="b.test")
    with engine.begin() as conn, pytest.raises(admin.AdminError, match=r"^media_mode: 'relay' is not 'anchored' or "
                                                                      r"'direct'$"):
        admin.create_operation(conn, id="0044", sip_domain="c.test", media_mode="relay")
    with engine.begin() as conn, pytest.raises(admin.AdminError, match=r"^media_relay_down: 'drop' is not 'direct' "
                                                                      r"or 'refuse'$"):
        admin.create_operation(conn, id="0044", sip_domain="c.test", media_relay_down="drop")
    directory = Directory(engine).load()
    assert [(op.id, op.media_mode, op.media_relay_down) for op in directory.list_operations()] == [
        ("0042", "direct", "refuse"), ("0043", "anchored", "direct")]
