"""Fixtures of the storage contract suite: every test that takes `db_url` or `engine` runs on SQLite (a file in
tmp_path) and on a real PostgreSQL (one server per session, a fresh database per test)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # tests/pg.py; `tests` itself is not importable (a dependency ships a `tests`)
    sys.path.insert(0, str(TESTS))

from callbridge.storage.database import make_engine  # noqa: E402
from callbridge.storage.migrate import upgrade  # noqa: E402
from pg import PostgresUnavailable, postgres_server  # noqa: E402


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a PostgreSQL server started for this session. Missing PostgreSQL fails the tests."""
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def fresh_postgres_database(postgres_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend, as a URL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'callbridge.db'}"
    url: str = request.getfixturevalue("fresh_postgres_database")
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated database of each backend; the engine is disposed afterwards."""
    upgrade(db_url)
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()
