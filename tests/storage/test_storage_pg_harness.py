"""The PostgreSQL harness refuses to pass silently: no binaries means a clear failure, never a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

import pg


def test_missing_binaries_are_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "PG_BIN_DIRS", [tmp_path / "none"])
    monkeypatch.delenv("CALLBRIDGE_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pg.PostgresUnavailable, match=r"run `scripts/setup --test`"):
        pg.find_pg_bin()


def test_the_free_port_is_on_loopback_and_bindable() -> None:
    import socket

    port = pg.free_loopback_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
