"""A throw-away PostgreSQL server for tests: Debian's binaries, run as the `postgres` user, on loopback.

These machines run as root and `initdb`/`postgres` refuse root, so the cluster lives in a temporary directory
owned by `postgres`, is created and started with `runuser -u postgres`, listens on 127.0.0.1 on a free port with
its Unix socket inside that directory, trusts local connections, and is stopped and deleted at the end.

Missing binaries are a failure, not a skip: the project's setup (`scripts/setup --test`) installs them, so their
absence means the machine is not set up and a green run would be a lie.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

PG_BIN_DIRS = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15", "14", "13")]


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be found or started; the message says why and what to do."""


def find_pg_bin() -> Path:
    """The directory holding `initdb` and `pg_ctl`: $CALLBRIDGE_PG_BIN, Debian's newest, or the PATH."""
    env = os.environ.get("CALLBRIDGE_PG_BIN")
    candidates = ([Path(env)] if env else []) + PG_BIN_DIRS
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH; "
        "run `scripts/setup --test` (it installs Debian's postgresql package) or set CALLBRIDGE_PG_BIN"
    )


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_postgres(args: list[str], *, timeout: float = 60) -> None:
    """Run a command as the `postgres` user when we are root (as these machines are), else as ourselves."""
    command = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise PostgresUnavailable(
            f"{' '.join(args[:1])} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
        )


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a fresh PostgreSQL cluster; yield its SQLAlchemy URL (psycopg 3); stop and delete it afterwards."""
    pg_bin = find_pg_bin()
    base = Path(tempfile.mkdtemp(prefix="callbridge-pg-"))
    data = base / "data"
    log = base / "log"
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(base, user="postgres", group="postgres")
        _as_postgres([str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                      "--no-sync"])
        port = free_loopback_port()
        options = f"-k {base} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_postgres([str(pg_bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"])
        started = True
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            _as_postgres([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a PostgreSQL server started for this session. Missing PostgreSQL fails the tests. A conftest
    shares it with `from pg import postgres_url`."""
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


# The migrated template of each server (by its URL), made on first use: `CREATE DATABASE ... TEMPLATE` copies it
# in one statement instead of running every migration again for each test (the migrations themselves are tested
# from an empty database in tests/storage/test_storage_migrations.py and the per-migration tests).
_MIGRATED_TEMPLATES: dict[str, str] = {}


def migrated_template(postgres_url: str) -> str:
    """The name of a database of the server at the newest schema, made once per server; never connected to after
    it is made (PostgreSQL copies a template only while nobody is connected to it)."""
    name = _MIGRATED_TEMPLATES.get(postgres_url)
    if name is None:
        from callbridge.storage.migrate import upgrade  # here: pg.py is also imported where callbridge is not

        name = f"migrated_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(_admin(postgres_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        upgrade(postgres_url.rsplit("/", 1)[0] + "/" + name)  # its engine is disposed: no connection is left
        _MIGRATED_TEMPLATES[postgres_url] = name
    return name


def _admin(postgres_url: str) -> str:
    return postgres_url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def fresh_database(postgres_url: str, prefix: str = "t", *, migrated: bool = False) -> Iterator[str]:
    """A new database on the server of `postgres_url`, as a URL: empty, or with `migrated` a copy of the server's
    migrated template (the newest schema, no rows but Alembic's version); dropped (connections forced out) at the
    end."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    template = f' TEMPLATE "{migrated_template(postgres_url)}"' if migrated else ""
    with psycopg.connect(_admin(postgres_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{template}')
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(_admin(postgres_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
