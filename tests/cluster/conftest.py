"""Fixtures of the cluster tests: one real PostgreSQL per session (tests/pg.py), a fresh migrated database per test
with operations 0042 and 0043."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS, TESTS / "cluster"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import pg  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402
from pg import fresh_database  # noqa: E402

postgres_url = pg.postgres_url  # the session's PostgreSQL server (tests/pg.py), shared with the other suites


@pytest.fixture
def cluster_url(postgres_url: str) -> Iterator[str]:
    """A fresh database at the newest schema, with operations 0042 and 0043."""
    with fresh_database(postgres_url, "c", migrated=True) as url:  # a copy of the migrated template (tests/pg.py)
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operations (id, sip_domain) VALUES ('0042', 'a.test'), ('0043', 'b.test')"))
        engine.dispose()
        yield url


@pytest.fixture
def cluster_engine(cluster_url: str) -> Iterator[Engine]:
    engine = make_engine(cluster_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
async def world(postgres_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Nodes, phones and a loaded database for the end-to-end tests (cluster_world.py)."""
    from cluster_nodes import loaded_database
    from cluster_world import World, operation_doc

    with loaded_database(postgres_url, operation_doc()) as (url, [token]):
        made = World(url, token, tmp_path)
        try:
            yield made
        finally:
            await made.close()
