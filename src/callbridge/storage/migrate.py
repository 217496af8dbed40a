"""Schema migrations, applied programmatically at start-up (and by `callbridge admin`).

The Alembic scripts ship inside the package (`callbridge/storage/migrations/`); no `alembic.ini` is needed or
read. `upgrade(url_or_engine)` brings a database to the newest revision, creating it from nothing on first use;
running it again is a no-op. On SQLite, concurrent first starts are serialised by SQLite's own write lock.
"""

from __future__ import annotations

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
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), revision)
    finally:
        if engine is not target:
            engine.dispose()
