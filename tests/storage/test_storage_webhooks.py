"""Webhook targets in the directory, on SQLite and PostgreSQL: migration 0003 adds the table (and takes it away);
`[[webhooks]]` in an operation document is loaded with the operation, validated field by field, all or nothing;
`callbridge admin webhook` changes move the directory's counter so a running node reloads them; each operation
sees only its own targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, select
from typer.testing import CliRunner

from callbridge.cli import app
from callbridge.storage import schema as s
from callbridge.storage.administration import AdminError
from callbridge.storage.database import make_engine
from callbridge.storage.directory import Directory, Webhook, read_version
from callbridge.storage.loader import load_operation
from callbridge.storage.migrate import alembic_config, current_revision, upgrade
from callbridge.storage.webhooks import EVENT_TYPES, create_webhook, delete_webhook, list_webhooks, update_webhook

OP, OTHER = "0042", "0077"
SECRET = "whsec-0042-0123456789"
OPENAPI = Path(__file__).resolve().parents[2] / "src" / "callbridge" / "http" / "openapi.json"


def doc(op: str = OP, *, webhooks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"operation": {"id": op, "sip_domain": f"{op}.callbridge.test"},
            "webhooks": webhooks if webhooks is not None else [
                {"url": "http://127.0.0.1:9000/hook", "secret": SECRET},
                {"url": "https://127.0.0.1:9443/crm/events?tenant=42", "secret": SECRET + "-b",
                 "events": ["call.ended", "transfer.failed"]}]}


def load(engine: Engine, document: dict[str, Any]) -> dict[str, int]:
    with engine.begin() as conn:
        return load_operation(conn, document).counts


def rows(engine: Engine) -> list[tuple[Any, ...]]:
    t = s.webhooks
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(t.c.id, t.c.operation_id, t.c.url, t.c.secret, t.c.events)
                                               .order_by(t.c.id))]


def test_migration_0003_adds_the_table_after_0002_and_takes_it_away(db_url: str) -> None:
    upgrade(db_url, "0002")
    engine = make_engine(db_url)
    try:
        assert "webhooks" not in inspect(engine).get_table_names()
        upgrade(engine, "0003")
        assert current_revision(engine) == "0003"
        columns = {c["name"]: c for c in inspect(engine).get_columns("webhooks")}
        assert list(columns) == ["id", "operation_id", "url", "secret", "events", "created_at"]
        assert not any(columns[name]["nullable"] for name in columns)
        foreign = inspect(engine).get_foreign_keys("webhooks")
        assert [(f["constrained_columns"], f["referred_table"]) for f in foreign] == [(["operation_id"], "operations")]
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0002")
        assert current_revision(engine) == "0002"
        assert "webhooks" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_the_loader_stores_each_target_with_its_operation_and_the_directory_reads_them(engine: Engine) -> None:
    counts = load(engine, doc())
    assert counts["webhooks"] == 2
    load(engine, doc(OTHER, webhooks=[{"url": "http://127.0.0.1:9001/other", "secret": "whsec-0077-abcdefghij"}]))
    assert rows(engine) == [
        (1, OP, "http://127.0.0.1:9000/hook", SECRET, []),  # the secret as given: it signs
        (2, OP, "https://127.0.0.1:9443/crm/events?tenant=42", SECRET + "-b", ["call.ended", "transfer.failed"]),
        (3, OTHER, "http://127.0.0.1:9001/other", "whsec-0077-abcdefghij", []),
    ]
    directory = Directory(engine).load()
    assert directory.list_webhooks(OP) == [
        Webhook("1", OP, "http://127.0.0.1:9000/hook", SECRET, ()),
        Webhook("2", OP, "https://127.0.0.1:9443/crm/events?tenant=42", SECRET + "-b",
                ("call.ended", "transfer.failed")),
    ]
    assert directory.list_webhooks(OTHER) == [Webhook("3", OTHER, "http://127.0.0.1:9001/other",
                                                      "whsec-0077-abcdefghij", ())]
    assert [h.id for h in directory.list_webhooks()] == ["1", "2", "3"]
    assert directory.list_webhooks("9999") == []
    with engine.connect() as conn:
        assert [h.url for h in list_webhooks(conn, OTHER)] == ["http://127.0.0.1:9001/other"]


BAD_URLS = [
    ("ftp://127.0.0.1/hook", "url: 'ftp://127.0.0.1/hook' is not an http or https URL"),
    ("127.0.0.1:9000/hook", "url: '127.0.0.1:9000/hook' is not an http or https URL"),
    ("http:///hook", "url: 'http:///hook' names no host"),
    ("http://:9000/hook", "url: 'http://:9000/hook' names no host"),
    ("http://crm:s3cret@127.0.0.1/hook",
     "url: credentials in the URL (user:password@) are refused; the signature authenticates"),
    ("http://token@127.0.0.1/hook",
     "url: credentials in the URL (user:password@) are refused; the signature authenticates"),
    ("http://127.0.0.1:99999/hook", "url: 'http://127.0.0.1:99999/hook' is not a valid URL (host or port)"),
    ("http://127.0.0.1:0/hook", "url: 'http://127.0.0.1:0/hook' has port 0"),
    ("http://127.0.0.1/hook#part", "url: 'http://127.0.0.1/hook#part' has a fragment, which is never sent"),
    ("http://127.0.0.1/ho ok", "url: 'http://127.0.0.1/ho ok' has spaces, control or non-ASCII characters"),
    ("http://127.0.0.1/\r\nX-Injected: 1", "url: 'http://127.0.0.1/\\r\\nX-Injected: 1' has spaces, control or "
                                           "non-ASCII characters"),
    ("http://[::1/hook", "url: 'http://[::1/hook' is not a valid URL (host or port)"),
    ("", "url: '' is not a URL"),
    (42, "url: 42 is not a URL"),
    ("http://127.0.0.1/" + "a" * 2048, "url: longer than 2048 characters"),
]


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_a_bad_url_is_refused_naming_the_field_and_nothing_is_loaded(engine: Engine, url: object,
                                                                     message: str) -> None:
    good = {"url": "http://127.0.0.1:9000/hook", "secret": SECRET}
    with pytest.raises(AdminError) as refused:
        load(engine, doc(webhooks=[good, {"url": url, "secret": SECRET}]))
    assert str(refused.value) == f"webhooks[1]: {message}"
    with engine.connect() as conn:  # all or nothing: not even the operation
        assert conn.execute(select(s.operations.c.id)).all() == []
        assert read_version(conn) == 0
    assert rows(engine) == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/hook", "https://[::1]:8443/a/b?c=d",
                                 "HTTPS://crm.callbridge.test/events"])
def test_good_urls_are_kept_as_given(engine: Engine, url: str) -> None:
    load(engine, doc(webhooks=[{"url": url, "secret": SECRET}]))
    assert [r[2] for r in rows(engine)] == [url]


@pytest.mark.parametrize(("entry", "message"), [
    ({"url": "http://127.0.0.1/h", "secret": "short"}, "webhooks[0]: secret: 16 to 256 characters are required"),
    ({"url": "http://127.0.0.1/h", "secret": "x" * 257}, "webhooks[0]: secret: 16 to 256 characters are required"),
    ({"url": "http://127.0.0.1/h", "secret": SECRET, "events": ["call.exploded"]},
     "webhooks[0]: events: 'call.exploded' is not an event type (" + ", ".join(EVENT_TYPES) + ")"),
    ({"url": "http://127.0.0.1/h", "secret": SECRET, "events": "call.ended"},
     "webhooks[0]: events: 'call.ended' is not a list of event types"),
    ({"url": "http://127.0.0.1/h", "secret": SECRET, "events": ["call.ended", "call.ended"]},
     "webhooks[0]: events: ['call.ended', 'call.ended'] names an event type twice"),
    ({"url": "http://127.0.0.1/h"}, "webhooks[0]: missing key(s) secret"),
    ({"url": "http://127.0.0.1/h", "secret": SECRET, "retries": 3},
     "webhooks[0]: unknown key(s) retries; expected events, secret, url"),
])
def test_other_bad_entries_are_refused_naming_the_field(engine: Engine, entry: dict[str, Any],
                                                        message: str) -> None:
    with pytest.raises(AdminError) as refused:
        load(engine, doc(webhooks=[entry]))
    assert str(refused.value) == message
    assert rows(engine) == []


def test_the_same_url_twice_in_one_operation_is_refused_but_two_operations_may_share_it(engine: Engine) -> None:
    hook = {"url": "http://127.0.0.1:9000/hook", "secret": SECRET}
    with pytest.raises(AdminError) as refused:
        load(engine, doc(webhooks=[hook, hook]))
    assert str(refused.value) == ("webhooks[1]: url: 'http://127.0.0.1:9000/hook' is already a webhook of "
                                  "operation '0042'")
    load(engine, doc(webhooks=[hook]))
    load(engine, doc(OTHER, webhooks=[hook]))
    assert [(r[1], r[2]) for r in rows(engine)] == [(OP, hook["url"]), (OTHER, hook["url"])]


async def test_changes_move_the_counter_and_a_running_directory_follows(engine: Engine) -> None:
    load(engine, doc(webhooks=[{"url": "http://127.0.0.1:9000/hook", "secret": SECRET}]))
    directory = Directory(engine).load()
    before = directory.version
    with engine.begin() as conn:
        changed = update_webhook(conn, "1", url="http://127.0.0.1:9002/moved")
    assert changed == Webhook("1", OP, "http://127.0.0.1:9002/moved", SECRET, ())
    assert await directory.refresh() is True
    assert directory.version == before + 1
    assert [h.url for h in directory.list_webhooks(OP)] == ["http://127.0.0.1:9002/moved"]
    with engine.begin() as conn:
        update_webhook(conn, "1", secret="another-secret-0042", events=["agent.state_changed"])
        create_webhook(conn, OP, "http://127.0.0.1:9003/second", SECRET)
    assert await directory.refresh() is True
    assert directory.list_webhooks(OP) == [
        Webhook("1", OP, "http://127.0.0.1:9002/moved", "another-secret-0042", ("agent.state_changed",)),
        Webhook("2", OP, "http://127.0.0.1:9003/second", SECRET, ())]
    with engine.begin() as conn:
        update_webhook(conn, "1", events=[])  # every event again
        removed = delete_webhook(conn, "2")
    assert removed.url == "http://127.0.0.1:9003/second"
    assert await directory.refresh() is True
    assert directory.list_webhooks(OP) == [Webhook("1", OP, "http://127.0.0.1:9002/moved", "another-secret-0042", ())]
    assert await directory.refresh() is False  # nothing moved since


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: update_webhook(c, "9", url="http://127.0.0.1/x"), "webhook 9 does not exist"),
    (lambda c: update_webhook(c, "x1"), "webhook id: 'x1' is not a webhook id"),
    (lambda c: update_webhook(c, "1"), "nothing to change: give a url, a secret or events"),
    (lambda c: update_webhook(c, "1", url="gopher://127.0.0.1/"), "url: 'gopher://127.0.0.1/' is not an http or "
                                                                   "https URL"),
    (lambda c: update_webhook(c, "1", url="http://127.0.0.1:9003/second"),
     "url: 'http://127.0.0.1:9003/second' is already a webhook of operation '0042'"),
    (lambda c: delete_webhook(c, "7"), "webhook 7 does not exist"),
    (lambda c: create_webhook(c, "9999", "http://127.0.0.1/x", SECRET), "operation '9999' does not exist"),
    (lambda c: list_webhooks(c, "9999"), "operation '9999' does not exist"),
])
def test_refused_changes_write_nothing(engine: Engine, change: Any, message: str) -> None:
    load(engine, doc(webhooks=[{"url": "http://127.0.0.1:9000/hook", "secret": SECRET},
                               {"url": "http://127.0.0.1:9003/second", "secret": SECRET}]))
    with engine.connect() as conn:
        version = read_version(conn)
    before = rows(engine)
    with pytest.raises(AdminError) as refused, engine.begin() as conn:
        change(conn)
    assert str(refused.value) == message
    assert rows(engine) == before
    with engine.connect() as conn:
        assert read_version(conn) == version


def test_the_event_types_are_the_documents() -> None:
    document = json.loads(OPENAPI.read_text())
    assert list(EVENT_TYPES) == document["components"]["schemas"]["EventType"]["enum"]


def test_the_admin_commands_add_list_update_and_remove(db_url: str) -> None:
    def admin(*args: str, code: int = 0) -> tuple[str, str]:
        result = CliRunner().invoke(app, ["admin", "--database-url", db_url, *args])
        assert result.exit_code == code, result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        return result.stdout, result.stderr

    admin("operation", "create", OP, "--domain", "0042.callbridge.test")
    out, _ = admin("webhook", "add", OP, "http://127.0.0.1:9000/hook", "--secret", SECRET, "--event", "call.ended",
                   "--event", "transfer.failed")
    assert out == f"webhook 1 added to operation {OP}: http://127.0.0.1:9000/hook\n"
    listed = json.loads(admin("webhook", "list", OP, "--json")[0])
    assert listed == [{"id": "1", "operation_id": OP, "url": "http://127.0.0.1:9000/hook",
                       "events": ["call.ended", "transfer.failed"]}]  # no secret
    table = admin("webhook", "list")[0]
    assert "http://127.0.0.1:9000/hook" in table and SECRET not in table
    out, _ = admin("webhook", "update", "1", "--url", "http://127.0.0.1:9004/moved", "--all-events")
    assert out == f"webhook 1 of operation {OP} updated: http://127.0.0.1:9004/moved\n"
    assert json.loads(admin("webhook", "list", OP, "--json")[0])[0]["events"] == []
    _, err = admin("webhook", "update", "1", "--event", "call.ended", "--all-events", code=1)
    assert err == "error: --event and --all-events: give one or the other\n"
    _, err = admin("webhook", "add", OP, "http://user:pw@127.0.0.1/x", "--secret", SECRET, code=1)
    assert err == "error: url: credentials in the URL (user:password@) are refused; the signature authenticates\n"
    _, err = admin("webhook", "add", OP, "file:///etc/passwd", "--secret", SECRET, code=1)
    assert err == "error: url: 'file:///etc/passwd' is not an http or https URL\n"
    out, _ = admin("webhook", "remove", "1")
    assert out == f"webhook 1 of operation {OP} removed\n"
    assert json.loads(admin("webhook", "list", OP, "--json")[0]) == []
    _, err = admin("webhook", "remove", "1", code=1)
    assert err == "error: webhook 1 does not exist\n"
