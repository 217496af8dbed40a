"""Lease statements and node identity against a real PostgreSQL: compare-and-set, epochs, PostgreSQL's clock."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, text

from callbridge.cluster import leases, nodes


def _take(engine: Engine, op: str, node: str, seconds: float, held: int | None = None) -> int | None:
    with engine.begin() as conn:
        return leases.take(conn, op, node, seconds, held)


def _row(engine: Engine, op: str) -> leases.Lease:
    with engine.connect() as conn:
        return next(lease for lease in leases.read_all(conn) if lease.operation_id == op)


def test_first_take_inserts_epoch_1_and_a_live_lease_cannot_be_taken(cluster_engine: Engine) -> None:
    assert _take(cluster_engine, "0042", "a", 30) == 1
    assert _take(cluster_engine, "0042", "b", 30) is None
    row = _row(cluster_engine, "0042")
    assert (row.node_id, row.epoch, row.expired) == ("a", 1, False)
    assert 28 < row.seconds_left <= 30


def test_renew_keeps_the_epoch_and_needs_the_held_epoch(cluster_engine: Engine) -> None:
    _take(cluster_engine, "0042", "a", 5)
    with cluster_engine.begin() as conn:
        assert leases.renew(conn, "0042", "a", 1, 60) is True
        assert leases.renew(conn, "0042", "a", 2, 60) is False  # an epoch it does not hold
        assert leases.renew(conn, "0042", "b", 1, 60) is False  # not its lease
    row = _row(cluster_engine, "0042")
    assert (row.node_id, row.epoch) == ("a", 1) and row.seconds_left > 50


def test_an_expired_lease_is_taken_with_a_new_epoch_and_the_old_holder_cannot_renew(cluster_engine: Engine) -> None:
    _take(cluster_engine, "0042", "a", 0.3)
    time.sleep(0.4)  # PostgreSQL's clock decides expiry; the lease is 0.3 s
    assert _row(cluster_engine, "0042").expired is True
    assert _take(cluster_engine, "0042", "b", 30) == 2
    with cluster_engine.begin() as conn:
        assert leases.renew(conn, "0042", "a", 1, 30) is False
        assert leases.release(conn, "0042", "a", 1) is False
    assert _row(cluster_engine, "0042").node_id == "b"


def test_release_frees_the_lease_and_the_next_take_bumps_the_epoch(cluster_engine: Engine) -> None:
    _take(cluster_engine, "0042", "a", 30)
    with cluster_engine.begin() as conn:
        assert leases.release(conn, "0042", "a", 1) is True
    row = _row(cluster_engine, "0042")
    assert (row.node_id, row.expired) == (None, True)
    assert _take(cluster_engine, "0042", "b", 30) == 2


def test_a_node_adopts_its_own_live_lease_from_a_previous_process_with_a_new_epoch(cluster_engine: Engine) -> None:
    _take(cluster_engine, "0042", "a", 30)
    assert _take(cluster_engine, "0042", "a", 30, held=1) is None  # still held by this process: renew, not take
    assert _take(cluster_engine, "0042", "a", 30) == 2  # a new process of node a


def test_a_move_request_is_recorded_and_cleared_when_the_target_takes_it(cluster_engine: Engine) -> None:
    _take(cluster_engine, "0042", "a", 30)
    with cluster_engine.begin() as conn:
        assert leases.request_move(conn, "0042", "b") is True
        assert leases.request_move(conn, "0043", "b") is False  # no lease row yet
    assert _row(cluster_engine, "0042").move_to == "b"
    with cluster_engine.begin() as conn:
        leases.release(conn, "0042", "a", 1)
    assert _take(cluster_engine, "0042", "b", 30) == 2
    assert _row(cluster_engine, "0042").move_to is None


def test_a_second_live_node_with_the_same_id_is_refused_and_a_dead_ones_id_is_reused(cluster_engine: Engine) -> None:
    with cluster_engine.begin() as conn:
        slot = nodes.join(conn, "a", "inc1", sip_host="127.0.0.11", sip_port=5060, http_url="", lease_seconds=30)
        assert nodes.join(conn, "b", "inc2", sip_host="127.0.0.12", sip_port=5060, http_url="",
                          lease_seconds=30) == slot + 1
    with cluster_engine.begin() as conn, pytest.raises(nodes.NodeIdInUse, match=r"node id 'a' is held by a live "
                                                                                r"node at 127.0.0.11:5060"):
        nodes.join(conn, "a", "inc3", sip_host="127.0.0.13", sip_port=5060, http_url="", lease_seconds=30)
    with cluster_engine.begin() as conn:
        nodes.leave(conn, "a", "inc1")
        assert nodes.join(conn, "a", "inc3", sip_host="127.0.0.13", sip_port=5060, http_url="",
                          lease_seconds=30) == slot  # the slot stays with the id
        with pytest.raises(nodes.NodeReplaced):
            nodes.heartbeat(conn, "a", "inc1")  # the old process learns its id was taken
        nodes.heartbeat(conn, "a", "inc3")
        rows = {n.node_id: n for n in nodes.read_nodes(conn, 30)}
    assert (rows["a"].sip_host, rows["a"].live, rows["b"].live) == ("127.0.0.13", True, True)


def test_a_database_of_an_unknown_revision_is_refused(cluster_engine: Engine) -> None:
    nodes.prepare_schema(cluster_engine, 6)  # at head: nothing to do
    with cluster_engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    from callbridge.storage.migrate import head_revision
    with pytest.raises(nodes.SchemaMismatch, match=r"^the database schema is at revision 9999, which this "
                                                    rf"callbridge does not know \(its newest is {head_revision()}\)"):
        nodes.prepare_schema(cluster_engine, 6)


def test_an_older_database_with_live_nodes_is_refused_and_without_them_migrated(cluster_engine: Engine) -> None:
    from callbridge.storage.migrate import current_revision, head_revision
    with cluster_engine.begin() as conn:
        nodes.join(conn, "a", "inc1", sip_host="127.0.0.11", sip_port=5060, http_url="", lease_seconds=30)
        conn.execute(text("UPDATE alembic_version SET version_num = '0011'"))  # the newest still to come
    head = head_revision()
    with pytest.raises(nodes.SchemaMismatch, match=rf"at revision 0011, this callbridge needs {head}, and nodes a "
                                                    r"are live on it"):
        nodes.prepare_schema(cluster_engine, 30)
    assert current_revision(cluster_engine) == "0011"


def test_a_cluster_on_sqlite_is_refused(tmp_path) -> None:
    from callbridge.storage.database import make_engine
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(nodes.ClusterStartError, match="a cluster needs PostgreSQL; the database URL names sqlite"):
            nodes.prepare_schema(engine, 6)
    finally:
        engine.dispose()


def test_a_released_lease_is_named_for_kamailio_sync_to_keep_its_last_owners_keys(cluster_engine: Engine) -> None:
    from callbridge.cluster.kamailio import render_tables

    def released_keys(conn):
        tables = render_tables(conn)
        assert not tables.released & tables.owners.keys()
        return set(tables.released)

    with cluster_engine.begin() as conn:
        epoch = leases.take(conn, "0042", "a", 3.0)
        assert epoch is not None
        assert released_keys(conn) == set()
        assert leases.release(conn, "0042", "a", epoch)
        assert released_keys(conn) == {"d:a.test"}
        assert leases.take(conn, "0042", "b", 3.0) == epoch + 1
        assert released_keys(conn) == set()
