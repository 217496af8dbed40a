"""Fixtures of the cluster tests: one real PostgreSQL per session (tests/pg.py), a fresh migrated database per test
with operations 0042 and 0043."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, text

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from callbridge.storage.database import make_engine  # noqa: E402
from callbridge.storage.migrate import upgrade  # noqa: E402
from pg import PostgresUnavailable, postgres_server  # noqa: E402


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def cluster_url(postgres_url: str) -> Iterator[str]:
    """A fresh database at the newest schema, with operations 0042 and 0043."""
    name = f"c_{uuid.uuid4().hex[:16]}"
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test'), ('0043', 'b.test')"))
    engine.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def cluster_engine(cluster_url: str) -> Iterator[Engine]:
    engine = make_engine(cluster_url)
    try:
        yield engine
    finally:
        engine.dispose()
