"""An operation's digest offer in storage, on SQLite and PostgreSQL: stored SHA-256 first, read back by the
node's directory (what the registrar and the INVITE challenge offer), changed and refused without a trace."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from callbridge.storage import admin_changes as ch
from callbridge.storage import administration as admin
from callbridge.storage.directory import Directory


def test_the_offer_is_stored_sha_256_first_and_read_by_the_directory(engine: Engine) -> None:
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test", digest_algorithms=["md5", "sha-256"])
        admin.create_operation(conn, id="0043", sip_domain="b.test", digest_algorithms="SHA-256")
        admin.create_operation(conn, id="0044", sip_domain="c.test")
    directory = Directory(engine).load()
    assert [(d, directory.operation_for_domain(d).digest_algorithms)  # type: ignore[union-attr]
            for d in ("a.test", "b.test", "c.test")] == [
        ("a.test", ("SHA-256", "MD5")), ("b.test", ("SHA-256",)), ("c.test", ())]
    with engine.begin() as conn:
        assert ch.update_operation(conn, "0044", digest_algorithms=["MD5"]).digest_algorithms == ("MD5",)
        assert ch.update_operation(conn, "0042", digest_algorithms=[]).digest_algorithms == ()


def test_a_bad_offer_changes_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="a.test", digest_algorithms=["SHA-256"])
    with engine.begin() as conn, pytest.raises(admin.AdminError,
                                               match=r"^digest_algorithms: 'SHA-1' is not SHA-256 or MD5$"):
        ch.update_operation(conn, "0042", digest_algorithms=["SHA-256", "SHA-1"])
    with engine.begin() as conn, pytest.raises(admin.AdminError, match=r"^digest_algorithms: 5 is not a list"):
        admin.create_operation(conn, id="0043", sip_domain="b.test", digest_algorithms=5)  # type: ignore[arg-type]
    with engine.connect() as conn:
        assert [(op.id, op.digest_algorithms) for op in admin.list_operations(conn)] == [("0042", ("SHA-256",))]
