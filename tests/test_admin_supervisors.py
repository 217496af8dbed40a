"""`callbridge admin supervisor ...` and `[[supervisors]]` in an operation file, through Typer's CliRunner on a
SQLite file: the password stored as a salted scrypt hash only, verified with the same answer for wrong passwords
and unknown accounts, listed without it, updated, reset, deleted; apply creates, changes and deletes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callbridge.storage import supervisors as sv
from callbridge.storage.database import make_engine
from test_admin import EXAMPLE, ok, refused


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'admin.db'}"
    ok(url, "operation", "create", "0042", "--domain", "0042.callbridge.test")
    ok(url, "operation", "create", "0077", "--domain", "0077.callbridge.test")
    return url


def accounts(db: str) -> sv.SupervisorAccounts:
    return sv.SupervisorAccounts(make_engine(db))


def test_create_list_verify_update_reset_delete(db: str) -> None:
    assert ok(db, "supervisor", "create", "0042", "maria", "--name", "María", "--password", "board-pass-1") == (
        "supervisor maria created in operation 0042\n")
    with make_engine(db).connect() as conn:
        [stored] = sv.list_supervisors(conn, "0042")
    assert stored.password_hash.startswith("scrypt$16384$8$1$") and "board-pass-1" not in stored.password_hash
    listed = json.loads(ok(db, "supervisor", "list", "0042", "--json"))
    assert listed == [{"operation_id": "0042", "username": "maria", "name": "María", "extension": ""}]
    assert accounts(db).verify("0042", "maria", "board-pass-1") == stored
    assert accounts(db).verify("0042", "maria", "board-pass-2") is None
    assert accounts(db).verify("0077", "maria", "board-pass-1") is None  # another operation's supervisor
    assert accounts(db).verify("0042", "nobody", "board-pass-1") is None

    ok(db, "supervisor", "update", "0042", "maria", "--set", "name=Maria P", "--set", "extension=1009")
    assert accounts(db).verify("0042", "maria", "board-pass-1").extension == "1009"  # type: ignore[union-attr]
    ok(db, "supervisor", "update", "0042", "maria", "--set", "extension=")
    assert accounts(db).verify("0042", "maria", "board-pass-1").extension == ""  # type: ignore[union-attr]
    ok(db, "supervisor", "reset-password", "0042", "maria", "--password", "board-pass-2")
    assert accounts(db).verify("0042", "maria", "board-pass-1") is None
    assert accounts(db).verify("0042", "maria", "board-pass-2").name == "Maria P"  # type: ignore[union-attr]
    assert ok(db, "supervisor", "delete", "0042", "maria") == "supervisor maria of operation 0042 deleted\n"
    assert accounts(db).verify("0042", "maria", "board-pass-2") is None


@pytest.mark.parametrize(("args", "message"), [
    (("supervisor", "create", "0042", "maria", "--password", "short"),
     "error: password: at least 8 characters are required"),
    (("supervisor", "create", "0099", "maria", "--password", "board-pass-1"), "error: operation '0099' does not exist"),
    (("supervisor", "create", "0042", "ma ria", "--password", "board-pass-1"),
     "error: username: 'ma ria' is not a username (letters, digits, _ . @ -, up to 32)"),
    (("supervisor", "create", "0042", "maria2", "--extension", "10a9", "--password", "board-pass-1"),
     "error: extension: '10a9' is not an extension (digits, up to 32)"),
    (("supervisor", "update", "0042", "maria", "--set", "extension=-1009"),
     "error: extension: -1009 is not an extension (digits, up to 32)"),
    (("supervisor", "update", "0042", "maria", "--set", "extension=1 009"),
     "error: extension: '1 009' is not an extension (digits, up to 32)"),
    (("supervisor", "update", "0042", "nobody", "--set", "name=X"),
     "error: supervisor 'nobody' of operation '0042' does not exist"),
    (("supervisor", "delete", "0077", "maria"), "error: supervisor 'maria' of operation '0077' does not exist"),
])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(db: str, args: tuple[str, ...], message: str) -> None:
    ok(db, "supervisor", "create", "0042", "maria", "--password", "board-pass-1")
    assert refused(db, *args) == message
    assert json.loads(ok(db, "supervisor", "list", "0042", "--json")) == [
        {"operation_id": "0042", "username": "maria", "name": "", "extension": ""}]


def test_operation_file_supervisors_are_loaded_and_applied(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'apply.db'}"
    text = EXAMPLE.read_text(encoding="utf-8") + (
        '\n[[supervisors]]\nusername = "maria"\npassword = "board-pass-1"\nname = "Maria"\n')
    first = tmp_path / "op.toml"
    first.write_text(text, encoding="utf-8")
    ok(db, "load", str(first))
    assert accounts(db).verify("0042", "maria", "board-pass-1") is not None
    assert ok(db, "apply", str(first)).splitlines() == ["operation 0042: nothing to change"]
    changed = tmp_path / "changed.toml"
    changed.write_text(text.replace("board-pass-1", "board-pass-2").replace('name = "Maria"', 'name = "M"')
                       + 'extension = "1009"\n', encoding="utf-8")
    plan = ok(db, "apply", str(changed)).splitlines()
    assert plan[0] == "update supervisor 'maria': name 'Maria' -> 'M', extension '' -> '1009', password (changed)"
    assert accounts(db).verify("0042", "maria", "board-pass-2").extension == "1009"  # type: ignore[union-attr]
    ok(db, "apply", str(EXAMPLE))  # the file no longer names her
    assert accounts(db).verify("0042", "maria", "board-pass-2") is None
