"""An operation's digest offer (`digest_algorithms`) through `callbridge admin`, on a SQLite file: create, update
with --set, load and apply from an operation file (stored SHA-256 first however it is written; the same set twice
is no change), refusals that name the field and change nothing, and what a node's directory reads back.
(The storage side runs on both backends: tests/storage/test_storage_admin_digest.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callbridge.storage.database import make_engine
from callbridge.storage.directory import read_operations
from test_admin import EXAMPLE, ok, refused


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'admin.db'}"


def offers(db: str) -> dict[str, tuple[str, ...]]:
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            return {op.id: op.digest_algorithms for op in read_operations(conn)}
    finally:
        engine.dispose()


def test_create_with_and_without_an_offer_then_update_it(db: str) -> None:
    ok(db, "operation", "create", "0042", "--domain", "a.test", "--digest-algorithms", "md5,SHA-256")
    ok(db, "operation", "create", "0043", "--domain", "b.test")
    assert offers(db) == {"0042": ("SHA-256", "MD5"), "0043": ()}  # () = the node's --digest-algorithms
    listed = {o["id"]: o["digest_algorithms"] for o in json.loads(ok(db, "operation", "list", "--json"))}
    assert listed == {"0042": ["SHA-256", "MD5"], "0043": []}

    assert ok(db, "operation", "update", "0043", "--set", 'digest_algorithms=["SHA-256"]') == (
        "operation 0043 updated\n")
    ok(db, "operation", "update", "0042", "--set", "digest_algorithms=MD5")
    assert offers(db) == {"0042": ("MD5",), "0043": ("SHA-256",)}
    ok(db, "operation", "update", "0042", "--set", 'digest_algorithms=""')  # back to the node's
    assert offers(db)["0042"] == ()


@pytest.mark.parametrize(("value", "message"), [
    ("SHA-512", "error: digest_algorithms: 'SHA-512' is not SHA-256 or MD5"),
    ("MD5,md5", "error: digest_algorithms: 'MD5,md5' names MD5 twice"),
    ("MD5,", "error: digest_algorithms: '' is not SHA-256 or MD5"),
])
def test_a_bad_offer_is_refused_with_the_field_and_nothing_is_made(db: str, value: str, message: str) -> None:
    assert refused(db, "operation", "create", "0042", "--domain", "a.test", "--digest-algorithms", value) == message
    assert offers(db) == {}
    ok(db, "operation", "create", "0042", "--domain", "a.test", "--digest-algorithms", "SHA-256")
    assert refused(db, "operation", "update", "0042", "--set", f"digest_algorithms={value}") == message
    assert refused(db, "operation", "update", "0042", "--set", "digest_algorithms=[1]") == (
        "error: digest_algorithms: [1] is not a list of algorithms (SHA-256, MD5)")
    assert offers(db) == {"0042": ("SHA-256",)}


def test_load_and_apply_an_operation_file_with_an_offer(db: str, tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "\ndigest_algorithms" not in text  # the example names it in a comment only: the node's setting
    with_offer = tmp_path / "op.toml"
    with_offer.write_text(text.replace("[operation]\n", '[operation]\ndigest_algorithms = ["MD5", "SHA-256"]\n', 1),
                          encoding="utf-8")
    ok(db, "load", str(with_offer))
    assert offers(db) == {"0042": ("SHA-256", "MD5")}
    # written in another order, the same set: nothing to change
    assert ok(db, "apply", str(with_offer)).splitlines() == ["operation 0042: nothing to change"]
    sha_only = tmp_path / "sha.toml"
    sha_only.write_text(text.replace("[operation]\n", '[operation]\ndigest_algorithms = ["SHA-256"]\n', 1),
                        encoding="utf-8")
    assert ok(db, "apply", "--dry-run", str(sha_only)).splitlines() == [
        "update operation '0042': digest_algorithms 'SHA-256,MD5' -> 'SHA-256'",
        "operation 0042: 1 changes planned (dry run: nothing changed)"]
    ok(db, "apply", str(sha_only))
    assert offers(db) == {"0042": ("SHA-256",)}
    ok(db, "apply", str(EXAMPLE))  # the key left out: the node's setting again
    assert offers(db) == {"0042": ()}
