"""`callbridge admin` changing what it made, through Typer's CliRunner on a SQLite file: apply twice (nothing the
second time), a changed file planned with --dry-run then applied, update with --set, password reset, token
rotation, refused deletes of what other objects use, not found, webhook delivery status. (The storage functions
behind these commands are tested on both backends in tests/storage/test_storage_admin_*.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callbridge.storage import administration as adm
from callbridge.storage.database import make_engine
from test_admin import EXAMPLE, ok, refused


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'admin.db'}"


def test_apply_twice_then_a_changed_file(db: str, tmp_path: Path) -> None:
    first = ok(db, "apply", str(EXAMPLE))
    assert "changes made" in first
    assert ok(db, "apply", str(EXAMPLE)).splitlines() == ["operation 0042: nothing to change"]
    changed = tmp_path / "op.toml"
    changed.write_text(EXAMPLE.read_text(encoding="utf-8").replace("max_wait_seconds = 90", "max_wait_seconds = 120"))
    plan = ok(db, "apply", "--dry-run", str(changed)).splitlines()
    assert len(plan) == 2 and "support" in plan[0] and "120" in plan[0]
    assert plan[1] == "operation 0042: 1 changes planned (dry run: nothing changed)"
    assert ok(db, "apply", "--dry-run", str(changed)).splitlines() == plan  # the dry run changed nothing
    assert ok(db, "apply", str(changed)).splitlines()[-1] == "operation 0042: 1 changes made"
    assert ok(db, "apply", str(changed)).splitlines() == ["operation 0042: nothing to change"]


def test_update_reset_rotate_and_refused_deletes(db: str) -> None:
    ok(db, "load", str(EXAMPLE))
    assert ok(db, "queue", "update", "0042", "support", "--set", "max_wait_seconds=75") == (
        "queue support of operation 0042 updated\n")
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            assert {q.name: q.max_wait_seconds for q in adm.list_queues(conn, "0042")}["support"] == 75
            token = adm.list_tokens(conn, "0042")[0]
    finally:
        engine.dispose()
    ok(db, "agent", "reset-password", "0042", "1001", "--password", "new-secret-1001")
    rotated = ok(db, "token", "rotate", "0042", token.id).strip()
    plain = rotated.rsplit(": ", 1)[1]
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            found = adm.find_token(conn, plain)
            assert found is not None and found.id == token.id
    finally:
        engine.dispose()
    assert refused(db, "queue", "delete", "0042", "support").startswith("error: ")
    assert "not" in refused(db, "agent", "delete", "0042", "9999")
    assert ok(db, "agent", "delete", "0042", "1002") == "agent 1002 of operation 0042 deleted\n"
    status = json.loads(ok(db, "webhook", "status", "0042", "--json"))
    assert [(row["operation_id"], row["last_seq"], row["lag"]) for row in status] == [("0042", 0, 0)]
