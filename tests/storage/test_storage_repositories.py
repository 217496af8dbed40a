"""The repositories' contract, on SQLite and PostgreSQL: what the domain writes comes back as written."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from callbridge.callcontrol.model import (
    AgentStateChange,
    CallRecord,
    Cdr,
    DisplayChange,
    Disposition,
    LegRecord,
    Recall,
    TransferRecord,
)
from callbridge.callcontrol.ports import (
    CallRecordRepository,
    DirectoryRepository,
    RecallRepository,
    StateRepository,
)
from callbridge.storage import administration as admin
from callbridge.storage import schema as s
from callbridge.storage.records import (
    cdr_values,
    read_agent_states,
    read_call,
    read_cdr,
    read_dispositions,
    read_legs,
    read_open_calls,
    read_transfer,
)
from callbridge.storage.sip_state import DialogRecord, RegistrationRecord, read_active_registrations, read_dialogs
from callbridge.storage.store import Storage

T0 = 1_790_000_000.25  # times exactly representable in microseconds round-trip unchanged


@pytest.fixture
def storage(engine: Engine) -> Iterator[Storage]:
    with engine.begin() as conn:
        admin.create_operation(conn, id="0042", sip_domain="0042.callbridge.test", name="Acme")
        admin.create_queue(conn, "0042", "support")
        admin.create_agent(conn, "0042", "1001", "secret-1001", name="Ana", queues=["support"])
        admin.create_agent(conn, "0042", "1002", "secret-1002")
    st = Storage(engine, node_id="node-a", migrate=False)
    try:
        yield st
    finally:
        st.writer.close()


def test_the_adapters_satisfy_the_domain_ports(storage: Storage) -> None:
    directory: DirectoryRepository = storage.directory
    states: StateRepository = storage.states
    records: CallRecordRepository = storage.calls
    recalls: RecallRepository = storage.recalls
    assert directory.get_operation("0042") is not None
    assert (states, records, recalls) == (storage.states, storage.calls, storage.recalls)


def test_agent_states_are_written_through_in_order(storage: Storage) -> None:
    changes = [
        AgentStateChange("0042", "1001", "ready", "login", T0, previous="logout"),
        AgentStateChange("0042", "1001", "ringing", "offered", T0 + 1, previous="ready", conn_id="c1"),
        AgentStateChange("0042", "1001", "on_call", "answered", T0 + 2.5, previous="ringing", conn_id="c1"),
    ]
    for change in changes:
        assert storage.states.record_agent_state(change) is None
    assert storage.writer.flush(10)
    with storage.engine.connect() as conn:
        assert read_agent_states(conn, "0042", "1001") == changes
        node = conn.execute(select(s.agent_state_history.c.node_id).distinct()).scalars().all()
    assert node == ["node-a"]


def test_display_keeps_the_current_visibility_per_button(storage: Storage) -> None:
    storage.states.record_display(DisplayChange("0042", "1001", "dial", False, T0))
    storage.states.record_display(DisplayChange("0042", "1001", "dial", True, T0 + 1))
    storage.states.record_display(DisplayChange("0042", "1001", "hungup", False, T0 + 2))
    assert storage.writer.flush(10)
    with storage.engine.connect() as conn:
        rows = conn.execute(select(s.agent_display.c.button, s.agent_display.c.visible)
                            .order_by(s.agent_display.c.button)).all()
    assert [tuple(r) for r in rows] == [("dial", True), ("hungup", False)]


def _call(**changes: object) -> CallRecord:
    base = {"conn_id": "c1", "operation_id": "0042", "node_id": "node-a", "direction": "inbound",
            "customer_number": "+573001234567", "state": "queued", "queue": "support", "agent": None,
            "created_at": T0, "answered_at": None, "ended_at": None, "hangup_by": None, "sip_cause": None,
            "transfer_count": 0, "related_conn_id": None}
    base.update(changes)
    return CallRecord(**base)  # type: ignore[arg-type]


def _leg(leg_id: str, role: str, party: str, **changes: object) -> LegRecord:
    base = {"leg_id": leg_id, "conn_id": "c1", "role": role, "party": party, "state": "calling", "agent": None,
            "created_at": T0, "answered_at": None, "ended_at": None, "sip_status": None, "ended_by": None}
    base.update(changes)
    return LegRecord(**base)  # type: ignore[arg-type]


def test_calls_legs_and_cdr_round_trip(storage: Storage) -> None:
    storage.calls.save_call(_call())
    customer = _leg("L1", "customer", "+573001234567", state="up", answered_at=T0)
    agent_ringing = _leg("L2", "agent", "1001", agent="1001", created_at=T0 + 1)
    storage.calls.save_leg(customer)
    storage.calls.save_leg(agent_ringing)
    storage.calls.save_call(_call(state="connected", agent="1001", answered_at=T0 + 3))
    agent_done = _leg("L2", "agent", "1001", agent="1001", created_at=T0 + 1, state="ended", answered_at=T0 + 3,
                      ended_at=T0 + 60.5, sip_status=200, ended_by="customer")
    customer_done = _leg("L1", "customer", "+573001234567", state="ended", answered_at=T0, ended_at=T0 + 60.5,
                         ended_by="customer")
    storage.calls.save_leg(agent_done)
    storage.calls.save_leg(customer_done)
    ended = _call(state="ended", agent="1001", answered_at=T0 + 3, ended_at=T0 + 60.5, hangup_by="customer",
                  sip_cause=200)
    storage.calls.save_call(ended)
    cdr = Cdr(conn_id="c1", operation_id="0042", node_id="node-a", direction="inbound",
              customer_number="+573001234567", queue="support", agents=("1001",), started_at=T0,
              answered_at=T0 + 3, ended_at=T0 + 60.5, hangup_by="customer", sip_cause=200, transfer_count=0,
              legs=(customer_done, agent_done))
    storage.calls.save_cdr(cdr)
    assert storage.writer.flush(10)
    assert storage.writer.stats.failed == 0
    with storage.engine.connect() as conn:
        assert read_call(conn, "c1") == ended
        assert read_legs(conn, "c1") == [customer_done, agent_done]
        assert read_cdr(conn, "c1") == cdr
        assert read_cdr(conn, "c1").talk_time == pytest.approx(57.5)  # type: ignore[union-attr]
        assert read_open_calls(conn, "node-a") == []
        assert conn.execute(select(func.count()).select_from(s.calls)).scalar_one() == 1
    # a CDR's legs are stored as `asdict` gives them, every field of the record by name
    assert cdr_values(cdr)["legs"] == [dataclasses.asdict(leg) for leg in (customer_done, agent_done)]


def test_every_transfer_step_updates_one_record(storage: Storage) -> None:
    storage.calls.save_call(_call(state="connected", agent="1001"))
    step = TransferRecord(id="t1", conn_id="c1", operation_id="0042", kind="blind", agent="1001", target="1002",
                          target_kind="agent", state="created", created_at=T0, updated_at=T0)
    storage.calls.save_transfer(step)
    ringing = TransferRecord(**{**_fields(step), "state": "ringing", "updated_at": T0 + 1, "target_leg_id": "L3",
                                "dialled": "1002"})
    storage.calls.save_transfer(ringing)
    failed = TransferRecord(**{**_fields(ringing), "state": "failed", "outcome": "busy", "sip_cause": 486,
                               "updated_at": T0 + 2, "ended_at": T0 + 2})
    storage.calls.save_transfer(failed)
    assert storage.writer.flush(10)
    with storage.engine.connect() as conn:
        assert read_transfer(conn, "t1") == failed
        assert read_transfer(conn, "nope") is None
        assert conn.execute(select(func.count()).select_from(s.transfers)).scalar_one() == 1


def _fields(record: object) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}  # type: ignore[attr-defined]


def test_dispositions_accumulate(storage: Storage) -> None:
    first = Disposition("0042", "c1", "1001", "10", "", "", T0)
    second = Disposition("0042", "c1", "1001", "11", "20", "called back ñ", T0 + 5)
    storage.calls.save_disposition(first)
    storage.calls.save_disposition(second)
    assert storage.writer.flush(10)
    with storage.engine.connect() as conn:
        assert read_dispositions(conn, "c1") == [first, second]


def test_recalls_saved_and_pending_ones_read_back(storage: Storage) -> None:
    r1 = Recall("r1", "0042", "1001", "3001234567", T0 + 3600, "auto", T0)
    r2 = Recall("r2", "0042", "1002", "3007654321", T0 + 60, "manual", T0)
    storage.recalls.save_recall(r1)
    storage.recalls.save_recall(r2)
    storage.recalls.save_recall(Recall("r1", "0042", "1001", "3001234567", T0 + 3600, "auto", T0,
                                       state="dialled", conn_id="c9"))
    assert storage.writer.flush(10)
    assert list(storage.recalls.pending_recalls()) == [r2]


def test_a_write_for_an_unknown_agent_fails_alone_and_is_counted(storage: Storage) -> None:
    storage.states.record_agent_state(AgentStateChange("0042", "9999", "ready", "login", T0))
    storage.states.record_agent_state(AgentStateChange("0042", "1002", "ready", "login", T0))
    assert storage.writer.flush(10)
    assert storage.writer.stats.failed == 1
    with storage.engine.connect() as conn:
        assert [c.agent for c in read_agent_states(conn, "0042", "1002")] == ["1002"]


def _registration(contact: str, expires_at: float, **changes: object) -> RegistrationRecord:
    base = {"operation_id": "0042", "extension": "1001", "contact_uri": contact, "source_host": "127.0.0.1",
            "source_port": 5070, "transport": "udp", "expires_at": expires_at, "call_id": "reg-1", "cseq": 1,
            "updated_at": T0, "user_agent": "baresip"}
    base.update(changes)
    return RegistrationRecord(**base)  # type: ignore[arg-type]


def test_registrations_refresh_expire_and_unregister(storage: Storage) -> None:
    a = _registration("sip:1001@127.0.0.1:5070", T0 + 3600)
    b = _registration("sip:1001@127.0.0.1:5170;transport=tcp", T0 + 10, source_port=5170, transport="tcp")
    storage.registrations.save_registration(a)
    storage.registrations.save_registration(b)
    a2 = _registration("sip:1001@127.0.0.1:5070", T0 + 7200, cseq=2, updated_at=T0 + 5, source_port=40000)
    storage.registrations.save_registration(a2)
    assert storage.writer.flush(10)
    with storage.engine.connect() as conn:
        assert read_active_registrations(conn, "node-a", T0) == [b, a2]  # oldest refresh first
        assert read_active_registrations(conn, "node-a", T0 + 10) == [a2]  # b expired at T0 + 10
        assert read_active_registrations(conn, "node-b", T0) == []  # another node's view is its own
    storage.registrations.remove_registration("0042", "1001", a2.contact_uri)
    assert storage.writer.flush(10)
    with storage.engine.connect() as conn:
        assert read_active_registrations(conn, "node-a", T0) == [b]
    storage.registrations.remove_all_registrations("0042", "1001")
    assert storage.writer.flush(10)
    with storage.engine.connect() as conn:
        assert read_active_registrations(conn, "node-a", T0) == []


def test_registration_saves_grouped_keep_their_order_with_removals(storage: Storage) -> None:
    """Saves queued together become one statement, the last save of a binding winning; a removal between saves
    still lands between them (the writer is started only once everything is queued)."""
    from callbridge.storage.sip_state import RegistrationRecords
    from callbridge.storage.writer import Writer

    writer = Writer(storage.engine)
    records = RegistrationRecords(writer, "node-a")
    a = _registration("sip:1001@127.0.0.1:5070", T0 + 3600)
    a2 = _registration("sip:1001@127.0.0.1:5070", T0 + 3700, cseq=2, updated_at=T0 + 1)
    b = _registration("sip:1001@127.0.0.1:5170", T0 + 3600, source_port=5170)
    records.save_registration(a)
    records.save_registration(b)
    records.save_registration(a2)  # same binding as a, same group: a2 is what is written
    records.remove_registration("0042", "1001", b.contact_uri)
    b2 = _registration("sip:1001@127.0.0.1:5170", T0 + 3800, source_port=5170, cseq=3, updated_at=T0 + 2)
    records.save_registration(b2)  # after the removal: a new group, written after it
    records.remove_all_registrations("0042", "1001")
    a3 = _registration("sip:1001@127.0.0.1:5070", T0 + 3900, cseq=4, updated_at=T0 + 3)
    records.save_registration(a3)
    assert writer.stats.submitted == 5  # three groups (the removals split them) and the two removals
    writer.start()
    try:
        assert writer.flush(10)
        assert writer.stats.failed == 0
        with storage.engine.connect() as conn:
            assert read_active_registrations(conn, "node-a", T0) == [a3]
    finally:
        writer.close()


def _dialog(leg_id: str, **changes: object) -> DialogRecord:
    base = {"leg_id": leg_id, "conn_id": "c1", "call_id": f"{leg_id}@127.0.0.1", "local_tag": "lt-" + leg_id,
            "remote_tag": "rt-" + leg_id, "local_uri": "sip:callbridge@127.0.0.1", "remote_uri": "sip:1001@x",
            "local_cseq": 1, "remote_cseq": 101, "remote_target": "sip:1001@127.0.0.1:5070",
            "route_set": ("<sip:127.0.0.1:5080;lr>", "<sip:127.0.0.2;lr>"), "peer_host": "127.0.0.1",
            "peer_port": 5070, "transport": "udp", "created_at": T0, "updated_at": T0}
    base.update(changes)
    return DialogRecord(**base)  # type: ignore[arg-type]


def test_dialog_identity_is_written_updated_and_removed(storage: Storage) -> None:
    storage.dialogs.save_dialog(_dialog("L1"))
    storage.dialogs.save_dialog(_dialog("L2", route_set=()))
    storage.dialogs.update_cseq("L1", 3, 102, T0 + 9)
    assert storage.writer.flush(10)
    with storage.engine.connect() as conn:
        assert read_dialogs(conn, "node-a") == [
            _dialog("L1", local_cseq=3, remote_cseq=102, updated_at=T0 + 9), _dialog("L2", route_set=())]
    storage.dialogs.remove_dialog("L1")
    assert storage.writer.flush(10)
    with storage.engine.connect() as conn:
        assert [d.leg_id for d in read_dialogs(conn, "node-a")] == ["L2"]


def test_directory_is_served_from_memory_and_reloads(storage: Storage) -> None:
    d = storage.directory
    op = d.get_operation("0042")
    assert op is not None and op.sip_domain == "0042.callbridge.test" and op.name == "Acme"
    assert d.operation_for_domain("0042.callbridge.test") == op
    assert [a.extension for a in d.list_agents("0042")] == ["1001", "1002"]
    agent = d.get_agent("0042", "1001")
    assert agent is not None and agent.queues == ("support",) and agent.name == "Ana"
    assert d.get_agent("0042", "1003") is None and d.get_agent("0043", "1001") is None
    with storage.engine.begin() as conn:
        _token, plain = admin.create_token(conn, "0042", label="crm")
    from callbridge.storage.credentials import token_sha256
    assert d.get_token(token_sha256(plain)) is None  # not yet: the directory is a snapshot
    d.load()
    token = d.get_token(token_sha256(plain))
    assert token is not None and token.label == "crm" and token.concurrency_limit == 2


async def test_directory_reload_from_a_coroutine(storage: Storage) -> None:
    with storage.engine.begin() as conn:
        admin.create_aux_state(conn, "0042", "2", "Break")
    assert storage.directory.list_aux_states("0042") == []
    await storage.directory.reload()
    assert [a.name for a in storage.directory.list_aux_states("0042")] == ["Break"]
