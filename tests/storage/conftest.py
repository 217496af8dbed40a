"""Fixtures of the storage contract suite: every test that takes `db_url` or `engine` runs on SQLite (a file in
tmp_path) and on a real PostgreSQL (one server per session, a fresh database per test). `db_url` is empty (the
migration tests start there); `engine`'s database is a copy of one migrated once per session (tests/migrated.py,
`pg.fresh_database(..., migrated=True)`), the same schema as migrating it from nothing, in a fraction of the time."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # tests/pg.py; `tests` itself is not importable (a dependency ships a `tests`)
    sys.path.insert(0, str(TESTS))

import pg  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402
from callbridge.storage.migrate import current_revision, head_revision  # noqa: E402
from migrated import migrated_sqlite  # noqa: E402
from pg import fresh_database  # noqa: E402

postgres_url = pg.postgres_url  # the session's PostgreSQL server (tests/pg.py), shared with the other suites


@pytest.fixture
def fresh_postgres_database(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn; its name is the test id's suffix ([sqlite], [postgresql])."""
    name: str = request.param
    return name


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database of each backend, as a URL."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'callbridge.db'}"
    url: str = request.getfixturevalue("fresh_postgres_database")
    return url


@pytest.fixture
def migrated_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of each backend at the newest schema, as a URL: a copy of the session's migrated one."""
    if backend == "sqlite":
        yield migrated_sqlite(tmp_path / "callbridge.db")
        return
    with fresh_database(request.getfixturevalue("postgres_url"), migrated=True) as url:
        yield url


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    """A migrated database of each backend; the engine is disposed afterwards."""
    eng = make_engine(migrated_db_url)
    try:
        assert current_revision(eng) == head_revision()  # the copy is at the newest schema
        yield eng
    finally:
        eng.dispose()
