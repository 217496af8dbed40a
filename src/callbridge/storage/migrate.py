"""Schema migrations, applied programmatically at start-up (and by `callbridge admin`).

The Alembic scripts ship inside the package (`callbridge/storage/migrations/`); no `alembic.ini` is needed or
read. `upgrade(url_or_engine)` brings a database to the newest revision, creating it from nothing on first use;
running it again is a no-op. On SQLite, concurrent first starts are serialised by SQLite's own write lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from callbridge.storage.database import make_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(target: str | URL | Engine, revision: str = "head") -> None:
    """Migrate the database at `target` (a URL or an Engine) to `revision` (default: the newest)."""
    engine = target if isinstance(target, Engine) else make_engine(target)
    try:
        with engine.connect() as conn, foreign_keys_deferred_to_the_end(conn), conn.begin():
            command.upgrade(alembic_config(conn), revision)
            check_foreign_keys(conn)
    finally:
        if engine is not target:
            engine.dispose()


@contextmanager
def foreign_keys_deferred_to_the_end(conn: Connection) -> Iterator[None]:
    """On SQLite, foreign keys off while migrations run, on again after. Batch mode changes a table by copying it
    and dropping the old one; with foreign keys on, that DROP runs ON DELETE CASCADE and empties every table
    that refers to it (upgrading past 0008 deleted every queue, agent and trunk). The pragma is a no-op inside a
    transaction, so it is set on the driver's connection before SQLAlchemy begins one (sqlite.org/pragma.html
    #pragma_foreign_keys); `check_foreign_keys` then checks what the migration left, in its transaction."""
    if conn.dialect.name != "sqlite":
        yield
        return
    driver = conn.connection.dbapi_connection
    assert driver is not None
    driver.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        driver.execute("PRAGMA foreign_keys = ON")


def check_foreign_keys(conn: Connection) -> None:
    """Refuse (and so roll back) a migration that left a row referring to nothing; SQLite only."""
    if conn.dialect.name != "sqlite":
        return
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"the migration left rows that refer to nothing: {[tuple(r) for r in broken][:5]}")
