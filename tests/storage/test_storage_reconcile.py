"""Start-up reconciliation and whole-operation loading, on SQLite and PostgreSQL."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from callbridge.callcontrol.model import AgentStateChange, CallRecord, LegRecord
from callbridge.storage import administration as adm
from callbridge.storage import schema as s
from callbridge.storage.administration import AdminError
from callbridge.storage.loader import load_operation
from callbridge.storage.records import read_agent_states, read_call, read_cdr, read_legs
from callbridge.storage.sip_state import DialogRecord, RegistrationRecord
from callbridge.storage.store import Storage
from callbridge.storage.times import to_datetime

T0 = 1_790_000_000.5
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "operation.toml"


@pytest.fixture
def storage(engine: Engine) -> Iterator[Storage]:
    with engine.begin() as conn:
        load_operation(conn, tomllib.loads(EXAMPLE.read_text()))
    st = Storage(engine, node_id="node-a", migrate=False)
    try:
        yield st
    finally:
        st.writer.close()


def _call(conn_id: str, node: str, ended_at: float | None = None) -> CallRecord:
    return CallRecord(conn_id, "0042", node, "inbound", "3001234567", "ended" if ended_at else "connected",
                      "support", "1001", T0, T0 + 2, ended_at, "customer" if ended_at else None, None, 0, None)


def _dialog(leg_id: str, conn_id: str) -> DialogRecord:
    return DialogRecord(leg_id, conn_id, f"cid-{leg_id}", "a", "b", "sip:cb@127.0.0.1", "sip:1001@127.0.0.1", 2,
                        None, "sip:1001@127.0.0.1:5070", (), "127.0.0.1", 5070, "udp", T0, T0)


def test_the_loaded_operation_is_in_the_directory(storage: Storage) -> None:
    d = storage.directory
    op = d.get_operation("0042")
    assert op is not None and op.default_queue == "support" and op.time_zone == "America/Bogota"
    assert [q.name for q in d.list_queues("0042")] == ["sales", "support"]
    sales = d.get_queue("0042", "sales")
    assert sales is not None and sales.ring_timeout == 15.0 and sales.max_wait_seconds == 45.0
    did = d.get_did("0042", "6015550101")
    assert did is not None and (did.queue, did.trunk) == ("sales", "carrier")
    (trunk,) = d.list_trunks("0042")
    assert trunk.dial_plan.apply("3001234567") == "573001234567"
    assert trunk.dial_plan.apply("1234") is None
    assert [d.number for d in trunk.dids] == ["6015550100", "6015550101"]
    assert [(c.group, c.code) for c in d.list_activity_codes("0042")] == [(1, "10"), (1, "11"), (2, "20")]
    assert [a.id for a in d.list_aux_states("0042")] == ["1", "2"]


def test_loading_the_same_operation_twice_is_refused_whole(engine: Engine) -> None:
    doc = tomllib.loads(EXAMPLE.read_text())
    with engine.begin() as conn:
        load_operation(conn, doc)
    with pytest.raises(AdminError, match=r"^\[operation\]: operation '0042' already exists$"), engine.begin() as conn:
        load_operation(conn, doc)
    with engine.connect() as conn:
        assert len(adm.list_agents(conn, "0042")) == 2


def test_leftovers_are_found_and_closed_for_this_node_only(storage: Storage) -> None:
    storage.calls.save_call(_call("open-a", "node-a"))
    storage.calls.save_leg(LegRecord("L1", "open-a", "customer", "3001234567", "up", None, T0, T0, None, None,
                                     None))
    storage.calls.save_leg(LegRecord("L2", "open-a", "agent", "1001", "up", "1001", T0 + 1, T0 + 2, None, None,
                                     None))
    storage.calls.save_call(_call("done-a", "node-a", ended_at=T0 + 30))
    storage.calls.save_call(_call("open-b", "node-b"))
    storage.dialogs.save_dialog(_dialog("L1", "open-a"))
    storage.dialogs.save_dialog(_dialog("L2", "open-a"))
    storage.registrations.save_registration(RegistrationRecord(
        "0042", "1001", "sip:1001@127.0.0.1:5070", "127.0.0.1", 5070, "udp", T0 + 3600, "r1", 1, T0))
    storage.registrations.save_registration(RegistrationRecord(
        "0042", "1002", "sip:1002@127.0.0.1:5170", "127.0.0.1", 5170, "udp", T0 + 1, "r2", 1, T0))
    storage.states.record_agent_state(AgentStateChange("0042", "1001", "on_call", "answered", T0 + 2, "ringing"))
    storage.states.record_agent_state(AgentStateChange("0042", "1002", "ready", "login", T0))
    storage.states.record_agent_state(AgentStateChange("0042", "1002", "logout", "unregistered", T0 + 1, "ready"))
    assert storage.writer.flush(10)
    assert storage.writer.stats.failed == 0

    now = T0 + 100
    found = storage.leftovers(now)
    assert [c.conn_id for c in found.calls] == ["open-a"]
    assert [d.leg_id for d in found.dialogs] == ["L1", "L2"]
    assert [(r.extension, r.contact_uri) for r in found.registrations] == [("1001", "sip:1001@127.0.0.1:5070")]
    assert [(b.extension, b.state) for b in found.busy_agents] == [("1001", "on_call")]
    assert [(a.extension, a.previous, a.state, a.reason, a.changed) for a in found.agents] == [
        ("1001", "on_call", "ready", "restart", True)]  # its phone is still registered: the call was the restart's

    closed = storage.close_leftovers(now)
    assert [c.conn_id for c in closed.calls] == ["open-a"]
    after = storage.leftovers(now)
    assert (after.calls, after.dialogs) == ([], [])
    assert [(a.extension, a.previous, a.state, a.changed) for a in after.agents] == [
        ("1001", "ready", "ready", False)]  # ready now: a second pass keeps it
    assert len(after.registrations) == 1  # still valid: restored, not reconciled away
    with storage.engine.connect() as conn:
        call = read_call(conn, "open-a")
        assert call is not None and (call.state, call.ended_at, call.hangup_by) == ("ended", now, "system")
        assert [(leg.state, leg.ended_at, leg.ended_by) for leg in read_legs(conn, "open-a")] == \
            [("ended", now, "system")] * 2
        cdr = read_cdr(conn, "open-a")
        assert cdr is not None and cdr.hangup_by == "system" and [leg.leg_id for leg in cdr.legs] == ["L1", "L2"]
        assert read_call(conn, "open-b") is not None and read_call(conn, "open-b").ended_at is None  # type: ignore[union-attr]
        assert read_cdr(conn, "done-a") is None  # closed calls are not touched
        last = read_agent_states(conn, "0042", "1001")[-1]
        assert (last.state, last.previous, last.reason, last.at) == ("ready", "on_call", "restart", now)
    assert storage.close_leftovers(now).calls == []  # idempotent
    with storage.engine.connect() as conn:
        assert len(read_agent_states(conn, "0042", "1001")) == 2  # the second pass changed nobody


def test_each_logged_in_agent_goes_through_the_restart_rule_with_its_rows_and_events_together(
        storage: Storage) -> None:
    with storage.engine.begin() as conn:
        for ext in ("1003", "1004", "1005", "1006", "1007"):
            adm.create_agent(conn, "0042", ext, f"secret-{ext}")
    storage.directory.load()
    valid, expired = T0 + 3600, T0 + 50
    for ext, state, expires in (("1001", "ready", valid), ("1002", "aux:1", valid), ("1003", "acw", valid),
                                ("1004", "ringing", valid), ("1005", "ready", expired), ("1006", "on_call", expired)):
        storage.registrations.save_registration(RegistrationRecord(
            "0042", ext, f"sip:{ext}@127.0.0.1:5070", "127.0.0.1", 5070, "udp", expires, f"r{ext}", 1, T0))
        storage.states.record_agent_state(AgentStateChange("0042", ext, state, "api", T0 + int(ext[-1]), "logout"))
    storage.states.record_agent_state(AgentStateChange("0042", "1007", "ready", "api", T0, "logout"))  # no phone
    assert storage.writer.flush(10)
    now = T0 + 100
    found = storage.leftovers(now)
    expected = [
        ("1001", "ready", "ready", "api", T0 + 1, False),  # kept, with its time: still the longest idle
        ("1002", "aux:1", "aux:1", "api", T0 + 2, False),
        ("1003", "acw", "ready", "restart", now, True),
        ("1004", "ringing", "ready", "restart", now, True),
        ("1005", "ready", "logout", "registration expired", now, True),
        ("1006", "on_call", "logout", "registration expired", now, True),
        ("1007", "ready", "logout", "registration expired", now, True),
    ]
    assert [(a.extension, a.previous, a.state, a.reason, a.since, a.changed) for a in found.agents] == expected
    changed = [a for a in found.agents if a.changed]
    rows = [{"operation_id": "0042", "seq": i, "type": "agent.state_changed", "at": to_datetime(now),
             "conn_id": None, "line": f'{{"agent":"{a.extension}","reason":"{a.reason}"}}'}
            for i, a in enumerate(changed, start=1)]
    storage.close_leftovers(now, rows, found.agents)
    with storage.engine.connect() as conn:
        for ext, previous, state, reason, _, was_changed in expected:
            history = read_agent_states(conn, "0042", ext)
            if was_changed:
                assert [(h.state, h.previous, h.reason, h.at) for h in history[-1:]] == [(state, previous, reason,
                                                                                          now)]
            else:
                assert len(history) == 1  # unchanged: no row
        events = conn.execute(select(s.events.c.seq, s.events.c.line).order_by(s.events.c.seq)).all()
    assert [e.line for e in events] == [r["line"] for r in rows]  # committed with the rows, one per change
    assert [a.extension for a in storage.leftovers(now).agents] == ["1001", "1002", "1003", "1004"]


async def test_reconciliation_from_a_coroutine(storage: Storage) -> None:
    storage.calls.save_call(_call("open-a", "node-a"))
    await storage.writer.aflush(10)
    assert [c.conn_id for c in (await storage.aleftovers(T0 + 5)).calls] == ["open-a"]
    await storage.aclose_leftovers(T0 + 5)
    assert (await storage.aleftovers(T0 + 5)).calls == []
