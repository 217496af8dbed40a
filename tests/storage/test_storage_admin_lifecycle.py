"""The administrative life cycle of every directory object, on SQLite and PostgreSQL: create, update, delete;
what does not exist or another operation owns is not found; passwords reset and tokens rotate; deletes that
would orphan live work (as the server writes it through) or an object naming the thing are refused; every
change moves the directory's counter so a running node reloads it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine

from callbridge.callcontrol.model import AgentStateChange, CallRecord, LegRecord
from callbridge.storage import admin_changes as ch
from callbridge.storage import administration as admin
from callbridge.storage import credentials
from callbridge.storage.admin_checks import AdminError, NotFound
from callbridge.storage.directory import Directory, read_version
from callbridge.storage.store import Storage
from callbridge.storage.webhooks import create_webhook, delete_webhook, update_webhook

OP, OTHER = "0042", "0077"
T0 = 1_790_000_000.0


@pytest.fixture
def db(engine: Engine) -> Engine:
    with engine.begin() as conn:
        for op in (OP, OTHER):
            admin.create_operation(conn, id=op, sip_domain=f"{op}.callbridge.test")
            admin.create_queue(conn, op, "support")
            admin.create_queue(conn, op, "sales")
            admin.create_agent(conn, op, "1001", "secret-1001", name="Ana", queues=["support"])
            admin.create_trunk(conn, op, "carrier", "127.0.0.1")
            admin.create_did(conn, op, "6015550100", "support", trunk="carrier")
            admin.create_aux_state(conn, op, "1", "Break")
            admin.create_activity_code(conn, op, 1, "10", "Sale")
    return engine


def change(engine: Engine, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one administrative change in its own transaction; check it moved the directory's counter."""
    with engine.connect() as conn:
        before = read_version(conn)
    with engine.begin() as conn:
        result = fn(conn, *args, **kwargs)
    with engine.connect() as conn:
        assert read_version(conn) == before + 1
    return result


def refused(engine: Engine, error: type[AdminError], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The refusal's message; the counter did not move."""
    with engine.connect() as conn:
        before = read_version(conn)
    with pytest.raises(error) as caught, engine.begin() as conn:
        fn(conn, *args, **kwargs)
    with engine.connect() as conn:
        assert read_version(conn) == before
    return str(caught.value)


def directory(engine: Engine) -> Directory:
    return Directory(engine).load()


def test_operations_update_and_delete(db: Engine) -> None:
    updated = change(db, ch.update_operation, OP, name="Acme", acw_seconds=10, default_queue="sales")
    assert (updated.name, updated.acw_seconds, updated.default_queue) == ("Acme", 10.0, "sales")
    assert directory(db).get_operation(OP) == updated
    assert refused(db, AdminError, ch.update_operation, OP, time_zone="Mars/Base") == \
        "time_zone: 'Mars/Base' is not an IANA time zone"
    assert refused(db, AdminError, ch.update_operation, OP, dial_timeout=0) == "dial_timeout: 0 is below 1"
    assert "already belongs" in refused(db, AdminError, ch.update_operation, OP, sip_domain="0077.callbridge.test")
    assert refused(db, AdminError, ch.update_operation, OP, colour="red").startswith("unknown field(s) colour")
    assert "digest realm" in refused(db, AdminError, ch.update_operation, OP, realm="elsewhere.test")
    assert refused(db, NotFound, ch.update_operation, "0099", name="x") == "operation '0099' does not exist"
    change(db, ch.delete_operation, OTHER)
    assert directory(db).get_operation(OTHER) is None
    assert directory(db).get_did(OTHER, "6015550100") is None
    assert refused(db, NotFound, ch.delete_operation, OTHER) == "operation '0077' does not exist"


def test_queues_update_delete_and_what_refuses_a_delete(db: Engine) -> None:
    queue = change(db, ch.update_queue, OP, "sales", max_wait_seconds=30, ring_timeout=12)
    assert (queue.max_wait_seconds, queue.ring_timeout) == (30.0, 12)
    assert directory(db).get_queue(OP, "sales") == queue
    assert refused(db, AdminError, ch.update_queue, OP, "sales", retry_after=1.5) == \
        "retry_after: 1.5 is not an integer"
    assert refused(db, NotFound, ch.update_queue, OP, "nowhere", retry_after=5) == \
        "queue 'nowhere' of operation '0042' does not exist"
    message = refused(db, AdminError, ch.delete_queue, OP, "support")
    assert "DID(s) '6015550100'" in message
    change(db, ch.delete_did, OP, "6015550100")
    assert "agent(s) '1001'" in refused(db, AdminError, ch.delete_queue, OP, "support")
    change(db, ch.update_agent, OP, "1001", queues=[])
    change(db, ch.delete_queue, OP, "support")
    assert directory(db).get_queue(OP, "support") is None
    assert directory(db).get_queue(OTHER, "support") is not None  # the other operation's own stays
    change(db, ch.update_operation, OP, default_queue="sales")
    assert "default_queue" in refused(db, AdminError, ch.delete_queue, OP, "sales")


def test_agents_update_reset_password_and_delete(db: Engine) -> None:
    agent = change(db, ch.update_agent, OP, "1001", name="Ana G.", queues=["sales", "support"])
    assert (agent.name, agent.queues) == ("Ana G.", ("sales", "support"))
    assert directory(db).get_agent(OP, "1001") == agent
    assert refused(db, AdminError, ch.update_agent, OP, "1001", queues=["nowhere"]) == \
        "queues: queue 'nowhere' does not exist in operation '0042'"
    assert refused(db, AdminError, ch.update_agent, OP, "1001", queues=["sales", "sales"]) == \
        "queues: ['sales', 'sales'] names a queue twice"
    assert "cannot change" in refused(db, AdminError, ch.update_agent, OP, "1001", extension="1002")
    realm = f"{OP}.callbridge.test"
    assert refused(db, AdminError, ch.reset_agent_password, OP, "1001", "short") == \
        "password: at least 8 characters are required"
    reset = change(db, ch.reset_agent_password, OP, "1001", "new-password-1")
    assert not ch.password_matches(reset, realm, "secret-1001")
    assert ch.password_matches(reset, realm, "new-password-1")
    assert reset.ha1_md5 == credentials.ha1_md5("1001", realm, "new-password-1")
    assert directory(db).get_agent(OP, "1001") == reset
    assert refused(db, NotFound, ch.reset_agent_password, OP, "1009", "whatever-123") == \
        "agent '1009' of operation '0042' does not exist"
    change(db, ch.delete_agent, OP, "1001")
    assert directory(db).get_agent(OP, "1001") is None
    assert directory(db).get_agent(OTHER, "1001") is not None
    assert refused(db, NotFound, ch.delete_agent, OP, "1001") == "agent '1001' of operation '0042' does not exist"


def test_trunks_dids_aux_states_and_activity_codes(db: Engine) -> None:
    trunk = change(db, ch.update_trunk, OP, "carrier", port=5080, inbound_networks=["10.1.2.3/8"])
    assert (trunk.port, directory(db).list_trunks(OP)[0].port) == (5080, 5080)
    assert refused(db, AdminError, ch.update_trunk, OP, "carrier", transport="sctp") == \
        "transport: 'sctp' is not 'udp' or 'tcp'"
    assert refused(db, AdminError, ch.update_trunk, OP, "carrier", username="u") == \
        "username and password: give both or neither"
    assert "delivers DID(s) '6015550100'" in refused(db, AdminError, ch.delete_trunk, OP, "carrier")
    did = change(db, ch.update_did, OP, "6015550100", queue="sales", trunk=None)
    assert (did.queue, did.trunk) == ("sales", "")
    assert directory(db).get_did(OP, "6015550100") == did
    assert refused(db, AdminError, ch.update_did, OP, "6015550100", queue="nowhere") == \
        "queue: queue 'nowhere' does not exist in operation '0042'"
    change(db, ch.delete_trunk, OP, "carrier")
    assert directory(db).list_trunks(OP) == []
    change(db, ch.delete_did, OP, "6015550100")
    assert refused(db, NotFound, ch.delete_did, OP, "6015550100") == \
        "DID '6015550100' of operation '0042' does not exist"
    aux = change(db, ch.update_aux_state, OP, "1", name="Coffee")
    assert directory(db).list_aux_states(OP) == [aux]
    assert refused(db, AdminError, ch.update_aux_state, OP, "1", name=" ") == "name: an auxiliary state needs a name"
    change(db, ch.delete_aux_state, OP, "1")
    assert refused(db, NotFound, ch.delete_aux_state, OP, "1").startswith("auxiliary state '1'")
    code = change(db, ch.update_activity_code, OP, 1, "10", name="Big sale")
    assert directory(db).list_activity_codes(OP) == [code]
    assert refused(db, NotFound, ch.update_activity_code, OP, 2, "10", name="x").startswith("activity code '10'")
    change(db, ch.delete_activity_code, OP, 1, "10")
    assert directory(db).list_activity_codes(OP) == []
    assert len(directory(db).list_activity_codes(OTHER)) == 1


def test_tokens_update_rotate_revoke_and_delete(db: Engine) -> None:
    token, plain = change(db, admin.create_token, OP, label="crm")
    updated = change(db, ch.update_token, OP, token.id, label="crm-2", concurrency_limit=4, daily_quota=100)
    assert (updated.label, updated.concurrency_limit, updated.daily_quota) == ("crm-2", 4, 100)
    assert refused(db, AdminError, ch.update_token, OP, token.id, concurrency_limit=0) == \
        "concurrency_limit: 0 is below 1"
    rotated, new_plain = change(db, ch.rotate_token, OP, token.id)
    assert rotated.id == token.id and new_plain != plain
    with db.connect() as conn:
        assert admin.find_token(conn, plain) is None
        assert admin.find_token(conn, new_plain) == rotated
    assert directory(db).get_token(credentials.token_sha256(new_plain)) == rotated
    assert refused(db, NotFound, ch.rotate_token, OTHER, token.id) == \
        f"token {token.id} of operation '0077' does not exist"
    assert refused(db, NotFound, ch.delete_token, OTHER, token.id).startswith(f"token {token.id}")
    change(db, admin.revoke_token, token.id)
    assert "revoked" in refused(db, AdminError, ch.rotate_token, OP, token.id)
    change(db, ch.delete_token, OP, token.id)
    with db.connect() as conn:
        assert admin.find_token(conn, new_plain) is None
    assert refused(db, NotFound, ch.delete_token, OP, token.id).startswith(f"token {token.id}")


def test_webhooks_of_another_operation_are_not_found(db: Engine) -> None:
    hook = change(db, create_webhook, OP, "http://127.0.0.1:9000/hook", "whsec-0123456789abcdef")
    assert refused(db, NotFound, update_webhook, hook.id, events=["call.ended"], operation_id=OTHER) == \
        f"webhook {hook.id} does not exist in operation '0077'"
    assert refused(db, NotFound, delete_webhook, hook.id, operation_id=OTHER).startswith(f"webhook {hook.id}")
    change(db, delete_webhook, hook.id, operation_id=OP)


# --- live work, as the server writes it through --------------------------------------------------------------------


@pytest.fixture
def live(db: Engine) -> Iterator[Storage]:
    st = Storage(db, node_id="node-a", migrate=False)
    try:
        yield st
    finally:
        st.writer.close()


def _call(**changes: Any) -> CallRecord:
    base: dict[str, Any] = {
        "conn_id": "c1", "operation_id": OP, "node_id": "node-a", "direction": "inbound",
        "customer_number": "+573001234567", "state": "queued", "queue": "sales", "agent": None, "created_at": T0,
        "answered_at": None, "ended_at": None, "hangup_by": None, "sip_cause": None, "transfer_count": 0,
        "related_conn_id": None}
    return CallRecord(**(base | changes))


def _flushed(st: Storage, *writes: Callable[[], None]) -> None:
    for write in writes:
        write()
    assert st.writer.flush(10)


def test_a_queue_with_callers_waiting_and_an_operation_with_live_calls_stay(live: Storage) -> None:
    db = live.engine
    _flushed(live, lambda: live.calls.save_call(_call()))
    assert refused(db, AdminError, ch.delete_queue, OP, "sales") == \
        "queue 'sales' has 1 caller(s) waiting: wait until they are answered or leave"
    assert refused(db, AdminError, ch.delete_operation, OP) == \
        "operation '0042' has 1 live call(s) ('c1'): wait until they end"
    _flushed(live, lambda: live.calls.save_call(_call(state="ended", ended_at=T0 + 5, hangup_by="customer")))
    change(db, ch.delete_queue, OP, "sales")
    change(db, ch.delete_operation, OP)


def test_an_agent_on_a_call_stays_until_it_ends(live: Storage) -> None:
    db = live.engine
    leg = LegRecord("L2", "c1", "agent", "1001", "up", "1001", T0, T0 + 1, None, None, None)
    _flushed(live,
             lambda: live.calls.save_call(_call(state="connected", agent="1001", answered_at=T0 + 1)),
             lambda: live.calls.save_leg(leg),
             lambda: live.states.record_agent_state(AgentStateChange(OP, "1001", "on_call", "answered", T0 + 1,
                                                                     previous="ringing", conn_id="c1")))
    assert refused(db, AdminError, ch.delete_agent, OP, "1001") == \
        "agent '1001' is on live call(s) 'c1': wait until they end"
    _flushed(live,
             lambda: live.calls.save_call(_call(state="ended", agent="1001", answered_at=T0 + 1, ended_at=T0 + 9,
                                                hangup_by="agent")),
             lambda: live.calls.save_leg(LegRecord("L2", "c1", "agent", "1001", "ended", "1001", T0, T0 + 1,
                                                   T0 + 9, 200, "agent")))
    assert refused(db, AdminError, ch.delete_agent, OP, "1001") == \
        "agent '1001' is on call: wait until the call ends"  # its state says so until it moves on
    _flushed(live, lambda: live.states.record_agent_state(AgentStateChange(OP, "1001", "acw", "hung up", T0 + 9,
                                                                           previous="on_call", conn_id="c1")))
    change(db, ch.delete_agent, OP, "1001")
    assert directory(db).get_agent(OP, "1001") is None


def test_an_agent_ringing_on_a_leg_of_a_live_call_stays(live: Storage) -> None:
    leg = LegRecord("L3", "c1", "agent", "1001", "ringing", "1001", T0, None, None, None, None)
    _flushed(live, lambda: live.calls.save_call(_call(state="offering")), lambda: live.calls.save_leg(leg))
    assert "live call(s) 'c1'" in refused(live.engine, AdminError, ch.delete_agent, OP, "1001")
    assert refused(live.engine, NotFound, ch.delete_agent, OTHER, "1009").startswith("agent '1009'")


def test_nothing_to_change_is_refused(db: Engine) -> None:
    def nothing(conn: Connection) -> None:
        ch.update_queue(conn, OP, "sales")

    assert refused(db, AdminError, nothing).startswith("nothing to change")


async def test_a_running_node_picks_up_each_change_at_its_next_poll(db: Engine) -> None:
    node = Directory(db).load()
    token, _ = change(db, admin.create_token, OP, label="crm")
    assert await node.refresh() is True
    steps: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = [
        (ch.update_queue, (OP, "sales"), {"max_wait_seconds": 15}),
        (ch.update_agent, (OP, "1001"), {"name": "Ana G."}),
        (ch.reset_agent_password, (OP, "1001", "new-password-1"), {}),
        (ch.rotate_token, (OP, token.id), {}),
        (ch.delete_did, (OP, "6015550100"), {}),
        (ch.delete_trunk, (OP, "carrier"), {}),
    ]
    for fn, args, kwargs in steps:
        change(db, fn, *args, **kwargs)
        assert await node.refresh() is True, fn.__name__
        assert await node.refresh() is False, fn.__name__
    assert node.get_queue(OP, "sales").max_wait_seconds == 15  # type: ignore[union-attr]
    assert node.get_agent(OP, "1001").name == "Ana G."  # type: ignore[union-attr]
    assert node.get_did(OP, "6015550100") is None and node.list_trunks(OP) == []
    assert node.get_token(token.hash) is None  # rotated away
