"""`admin apply`, on SQLite and PostgreSQL: the example operation file applied to an empty database creates it;
the same file again is an empty plan and moves nothing; a changed file changes exactly what changed (secrets shown
as "(changed)"), deletes what it no longer names unless live work needs it; a dry run checks and changes nothing; a
malformed file is refused whole, naming the line or the key at fault."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from callbridge.callcontrol.model import CallRecord
from callbridge.storage import admin_apply as ap
from callbridge.storage import administration as admin
from callbridge.storage import credentials
from callbridge.storage import schema as s
from callbridge.storage.admin_changes import password_matches
from callbridge.storage.admin_checks import AdminError
from callbridge.storage.directory import Directory, read_version
from callbridge.storage.store import Storage

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "operation.toml"
OP = "0042"


@pytest.fixture
def doc() -> dict[str, Any]:
    return ap.read_operation_file(EXAMPLE)


def version(engine: Engine) -> int:
    with engine.connect() as conn:
        return read_version(conn)


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    tables = (s.operations, s.queues, s.agents, s.agent_queues, s.aux_states, s.activity_codes, s.trunks, s.dids,
              s.tokens, s.webhooks, s.directory_version)
    with engine.connect() as conn:
        return {t.name: sorted(tuple(map(repr, r)) for r in conn.execute(select(t))) for t in tables}


def test_the_same_file_twice_changes_nothing_the_second_time(engine: Engine, doc: dict[str, Any]) -> None:
    first = ap.execute(engine, doc)
    assert first.lines()[0] == "create operation '0042': sip_domain '0042.callbridge.test', name 'Acme customer care'"
    assert "create agent '1001': name 'Ana Gómez', password (changed), queues ['support', 'sales']" in first.lines()
    assert not any("change-me" in line for line in first.lines())  # passwords and secrets are never shown
    assert [(t.label, len(plain)) for t, plain in first.tokens] == [("crm", 43)]
    directory = Directory(engine).load()
    assert [a.extension for a in directory.list_agents(OP)] == ["1001", "1002"]
    assert directory.get_token(credentials.token_sha256(first.tokens[0][1])) is not None
    before, tables = version(engine), snapshot(engine)
    assert ap.plan_lines(engine, doc) == []
    assert ap.execute(engine, doc).lines() == []
    assert version(engine) == before and snapshot(engine) == tables  # no rehash, no new token secret


def test_a_changed_file_changes_exactly_what_changed(engine: Engine, doc: dict[str, Any]) -> None:
    token = ap.execute(engine, doc).tokens[0][1]
    changed = copy.deepcopy(doc)
    changed["operation"]["acw_seconds"] = 20
    changed["queues"][1]["max_wait_seconds"] = 50
    changed["agents"][0]["password"] = "another-password"
    changed["agents"][1]["name"] = "Luis P."
    changed["agents"][1]["queues"] = ["support", "sales"]
    changed["agents"].append({"extension": "1003", "password": "change-me-1003", "name": "Eva"})
    changed["trunks"][0]["inbound_networks"] = ["10.0.0.0/8"]
    del changed["dids"][1]
    del changed["aux_states"][1]
    changed["activity_codes"][0]["name"] = "Big sale"
    changed["tokens"][0]["concurrency_limit"] = 3
    changed["webhooks"][0]["secret"] = "another-long-secret-0123"
    expected = [
        "update operation '0042': acw_seconds 15.0 -> 20",
        "update queue 'sales': max_wait_seconds 45.0 -> 50",
        "update agent '1001': password (changed)",
        "update agent '1002': name 'Luis Pérez' -> 'Luis P.', queues ['support'] -> ['support', 'sales']",
        "create agent '1003': name 'Eva', password (changed)",
        "update activity_code 1/'10': name 'Sale' -> 'Big sale'",
        "update trunk 'carrier': inbound_networks ['127.0.0.1/32'] -> ['10.0.0.0/8']",
        "update token 'crm' (id 1): concurrency_limit 2 -> 3",
        "update webhook 'http://127.0.0.1:9000/callbridge/events': secret (changed)",
        "delete did '6015550101'",
        "delete aux_state '2'",
    ]
    before, tables = version(engine), snapshot(engine)
    assert ap.plan_lines(engine, changed) == expected  # the dry run: the plan, and nothing written
    assert version(engine) == before and snapshot(engine) == tables
    assert ap.execute(engine, changed).lines() == expected
    assert version(engine) > before
    directory = Directory(engine).load()
    assert directory.get_operation(OP).acw_seconds == 20  # type: ignore[union-attr]
    assert directory.get_queue(OP, "sales").max_wait_seconds == 50  # type: ignore[union-attr]
    ana = directory.get_agent(OP, "1001")
    assert ana is not None and password_matches(ana, "0042.callbridge.test", "another-password")
    assert directory.get_agent(OP, "1002").queues == ("support", "sales")  # type: ignore[union-attr]
    assert directory.get_did(OP, "6015550101") is None
    assert [x.id for x in directory.list_aux_states(OP)] == ["1"]
    assert directory.list_trunks(OP)[0].inbound_networks == ("10.0.0.0/8",)
    kept = directory.get_token(credentials.token_sha256(token))  # the label only: the secret stays
    assert kept is not None and kept.concurrency_limit == 3
    assert ap.plan_lines(engine, changed) == []


def test_removing_a_queue_updates_its_agents_and_dids_first(engine: Engine, doc: dict[str, Any]) -> None:
    ap.execute(engine, doc)
    changed = copy.deepcopy(doc)
    changed["queues"] = [q for q in changed["queues"] if q["name"] != "sales"]
    changed["agents"][0]["queues"] = ["support"]
    changed["dids"] = changed["dids"][:1]
    changed["tokens"] = []
    changed["webhooks"] = []
    assert ap.execute(engine, changed).lines() == [
        "update agent '1001': queues ['support', 'sales'] -> ['support']",
        "delete token 'crm' (id 1)",
        "delete webhook 'http://127.0.0.1:9000/callbridge/events'",
        "delete did '6015550101'",
        "delete queue 'sales'",
    ]
    assert Directory(engine).load().get_queue(OP, "sales") is None


def test_a_delete_refused_for_live_work_refuses_the_whole_apply(engine: Engine, doc: dict[str, Any]) -> None:
    ap.execute(engine, doc)
    storage = Storage(engine, node_id="node-a", migrate=False)
    try:
        storage.calls.save_call(CallRecord("c1", OP, "node-a", "inbound", "+573001234567", "connected", "support",
                                           "1002", 1_790_000_000.0, 1_790_000_001.0, None, None, None, 0, None))
        assert storage.writer.flush(10)
    finally:
        storage.writer.close()
    changed = copy.deepcopy(doc)
    changed["agents"] = changed["agents"][:1]
    changed["queues"][0]["max_wait_seconds"] = 10
    before, tables = version(engine), snapshot(engine)
    for attempt in (ap.plan_lines, ap.execute):
        with pytest.raises(AdminError) as caught:
            attempt(engine, changed)
        assert str(caught.value) == "delete agent '1002': agent '1002' is on live call(s) 'c1': wait until they end"
        assert version(engine) == before and snapshot(engine) == tables


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["agents"][1].update(extension="12a"),
     "agents[1].extension: '12a' is not an extension (digits only)"),
    (lambda d: d["agents"][0].update(password="short"), "agents[0].password: at least 8 characters are required"),
    (lambda d: d["agents"][0].update(colour="red"), "agents[0]: unknown key(s) colour; expected extension, name, "
                                                    "password, queues"),
    (lambda d: d["agents"].append({"extension": "1001", "password": "whatever-1001"}),
     "agents[2]: '1001' is already named by agents[0]"),
    (lambda d: d["webhooks"][0].update(url=["http://a.test/"]),
     "webhooks[0]: ['http://a.test/'] is not a name, number or label"),
    (lambda d: d["tokens"].append({"label": "crm"}), "tokens[1]: 'crm' is already named by tokens[0]"),
    (lambda d: d["trunks"][0].update(port=70000), "trunks[0].port: 70000 is out of range 1-65535"),
    (lambda d: d["dids"][0].update(queue="nowhere"), "dids[0].queue: queue 'nowhere' does not exist in operation "
                                                     "'0042'"),
    (lambda d: d["operation"].update(time_zone="Mars/Base"), "operation.time_zone: 'Mars/Base' is not an IANA time "
                                                             "zone"),
    (lambda d: d.update(extras=[]), "unknown section(s) extras; expected operation, queues, agents, aux_states, "
                                    "activity_codes, trunks, dids, tokens, webhooks, supervisors"),
])
def test_a_malformed_file_changes_nothing_and_names_the_key(engine: Engine, doc: dict[str, Any], edit: Any,
                                                            message: str) -> None:
    ap.execute(engine, doc)
    doc["queues"][0]["max_wait_seconds"] = 10  # a change that would be made, had the file been good
    edit(doc)
    before, tables = version(engine), snapshot(engine)
    for attempt in (ap.plan_lines, ap.execute):
        with pytest.raises(AdminError) as caught:
            attempt(engine, doc)
        assert str(caught.value) == message
    assert version(engine) == before and snapshot(engine) == tables


def test_a_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[operation]\nid = "0042"\nsip_domain = \n')
    with pytest.raises(AdminError) as caught:
        ap.read_operation_file(bad)
    assert str(caught.value).startswith(f"{bad}: ") and "line 3" in str(caught.value)


def test_apply_creates_on_an_empty_database_what_load_would(engine: Engine, doc: dict[str, Any]) -> None:
    before = version(engine)
    assert ap.plan_lines(engine, doc)[-1] == ("create webhook 'http://127.0.0.1:9000/callbridge/events': secret "
                                              "(changed), events ['call.ended', 'transfer.completed', "
                                              "'transfer.failed', 'agent.state_changed']")
    assert version(engine) == before and snapshot(engine)["operations"] == []
    ap.execute(engine, doc)
    with engine.connect() as conn:
        assert [q.name for q in admin.list_queues(conn, OP)] == ["sales", "support"]
