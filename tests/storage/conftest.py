"""Fixtures of the storage contract suite: every test that takes `db_url` or `engine` runs on SQLite (a file in
tmp_path) and on a real PostgreSQL (one server per session, a fresh database per test)."""

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
from callbridge.storage.migrate import upgrade  # noqa: E402
from pg import fresh_database  # noqa: E402

postgres_url = pg.postgres_url  # the session's PostgreSQL server (tests/pg.py), shared with the other suites


@pytest.fixture
def fresh_postgres_database(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url) as url:
        yield url


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
