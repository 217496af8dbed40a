"""Alembic's environment for callbridge: run by `callbridge.storage.migrate`, never by the `alembic` command alone.

The caller passes an open connection in `config.attributes["connection"]`; migrations run on it, in a transaction,
with batch mode on so that later ALTERs also work on SQLite (which rebuilds the table).
"""

from __future__ import annotations

from alembic import context

from callbridge.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through callbridge.storage.migrate.upgrade(url)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    compare_type=True,
    compare_server_default=False,
)
with context.begin_transaction():
    context.run_migrations()
