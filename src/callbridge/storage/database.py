"""Which database, and how to connect to it.

SQLite is the default: one file in the working directory, in WAL mode with `synchronous=NORMAL` (a killed process
loses at most the transactions not yet checkpointed into the WAL's last sync, never consistency), foreign keys on
(SQLite leaves them off unless asked, per connection) and a busy timeout so a second process (`callbridge admin`
while the server runs) waits for the writer instead of failing at once.

PostgreSQL is used when the URL says so (`CALLBRIDGE_DATABASE_URL=postgresql://...`, read by `callbridge.config`
and by the CLI, never here); plain `postgresql://` and
`postgres://` URLs are mapped to the psycopg 3 driver (`postgresql+psycopg://`), the one the project depends on.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

DATABASE_URL_ENV = "CALLBRIDGE_DATABASE_URL"  # the name the CLI and config read it from
DEFAULT_DATABASE_URL = "sqlite:///callbridge.db"
SQLITE_BUSY_TIMEOUT_MS = 5000


class DatabaseUrlError(ValueError):
    """The database URL names no backend callbridge supports."""


def normalise_url(url: str | URL) -> URL:
    """Parse `url`, choose the psycopg 3 driver for PostgreSQL, and refuse backends other than SQLite/PostgreSQL."""
    text = str(url) if isinstance(url, URL) else url
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://"):]
    try:
        parsed = make_url(text)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError; keep the message short for the CLI
        raise DatabaseUrlError(f"not a database URL: {text!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername in ("postgresql", "postgresql+psycopg"):
            return parsed.set(drivername="postgresql+psycopg")
        raise DatabaseUrlError(f"unsupported PostgreSQL driver {parsed.drivername!r}: use postgresql+psycopg://")
    if backend == "sqlite":
        if parsed.drivername != "sqlite":
            raise DatabaseUrlError(f"unsupported SQLite driver {parsed.drivername!r}: use sqlite:///FILE")
        return parsed
    raise DatabaseUrlError(f"unsupported database {backend!r}: use sqlite:///FILE or postgresql://...")


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # The pysqlite driver opens its own transactions lazily and breaks SAVEPOINT/BEGIN semantics; let SQLAlchemy
    # emit BEGIN itself (the documented recipe) and set the per-connection pragmas.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    # BEGIN IMMEDIATE would take the write lock up front; plain BEGIN is enough with one writer thread and keeps
    # readers from queueing behind it.
    conn.exec_driver_sql("BEGIN")


def make_engine(url: str | URL = DEFAULT_DATABASE_URL, **kwargs: Any) -> Engine:
    """An Engine for `url`, configured for callbridge. The caller disposes it (`engine.dispose()`) when done."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("check_same_thread", False)
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
