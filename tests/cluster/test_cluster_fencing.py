"""Fencing and takeover against a real PostgreSQL: two cluster members in this process, the first one's renewals
held (as a paused process's would be) until the second takes its operation over; the first one's writes are then
refused by the database, and it stops acting for the operation and re-syncs."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from callbridge.cluster.fencing import Fence
from callbridge.cluster.member import ClusterMember
from callbridge.storage.schema import calls
from callbridge.storage.writer import Writer

LEASE = 1.5  # seconds: short, so a takeover happens within the test's bounds
# serial: takeovers timed to the lease plus 1 s of slack (scripts/test).
pytestmark = pytest.mark.serial


def _call(conn_id: str, operation_id: str, node_id: str) -> dict[str, object]:
    return {"conn_id": conn_id, "operation_id": operation_id, "node_id": node_id, "direction": "inbound",
            "customer_number": "3001234567", "state": "queued", "started_at": datetime.now(UTC)}


def _calls(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(text("SELECT conn_id, node_id FROM calls"))}


async def _until(condition, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def test_a_writer_declaring_no_lease_is_refused_and_one_holding_it_writes(cluster_engine: Engine) -> None:
    fence = Fence("a")
    writer = Writer(cluster_engine).start()
    writer.fence = fence
    try:
        writer.insert(calls, _call("c1", "0042", "a"))  # node a holds nothing yet
        assert writer.flush(10)
        assert (writer.stats.failed, fence.refusals, _calls(cluster_engine)) == (1, 1, {})
        with cluster_engine.begin() as conn:
            from callbridge.cluster import leases
            epoch = leases.take(conn, "0042", "a", 30)
        assert epoch == 1
        fence.hold("0042", 1)
        writer.insert(calls, _call("c2", "0042", "a"))
        writer.insert(calls, _call("c3", "0043", "a"))  # another operation, not held: refused alone
        assert writer.flush(10)
        assert (writer.stats.failed, fence.refusals, _calls(cluster_engine)) == (2, 2, {"c2": "a"})
    finally:
        writer.close()


def test_an_unfenced_writer_is_not_refused(cluster_engine: Engine) -> None:
    writer = Writer(cluster_engine).start()  # a single node, or `callbridge admin`: nothing declared
    try:
        writer.insert(calls, _call("c1", "0042", "a"))
        assert writer.flush(10)
        assert (writer.stats.failed, _calls(cluster_engine)) == (0, {"c1": "a"})
    finally:
        writer.close()


async def test_a_paused_owner_is_taken_over_its_writes_refused_and_it_stops_acting(cluster_engine: Engine) -> None:
    lost_a: list[str] = []
    a = ClusterMember(cluster_engine, "a", sip_host="127.0.0.11", sip_port=5060, lease_seconds=LEASE,
                      on_lost=lost_a.append)
    b = ClusterMember(cluster_engine, "b", sip_host="127.0.0.12", sip_port=5060, lease_seconds=LEASE)
    writer_a = Writer(cluster_engine).start()
    writer_a.fence = a.fence
    writer_b = Writer(cluster_engine).start()
    writer_b.fence = b.fence
    try:
        await a.start()
        assert a.held == {"0042": 1, "0043": 1}  # alone: a takes both
        await b.start()
        assert b.held == {}  # sticky: b does not take a live lease
        writer_a.insert(calls, _call("before", "0042", "a"))
        assert await writer_a.aflush(10)
        assert _calls(cluster_engine) == {"before": "a"}

        a.paused = True  # a's process goes on, its renewals do not (a long pause, a cut link to the database)
        took = await _until(lambda: b.owns("0042") and b.owns("0043"), 3 * LEASE + 1)
        assert took <= LEASE + b.interval + 1.0  # the lease, one round, and slack for the machine
        assert b.held == {"0042": 2, "0043": 2}
        assert a.owns("0042")  # a has not noticed yet: it still declares epoch 1

        writer_a.insert(calls, _call("stale", "0042", "a"))
        assert await writer_a.aflush(10)
        assert (writer_a.stats.failed, a.fence.refusals) == (1, 1)
        writer_b.insert(calls, _call("fresh", "0042", "b"))
        assert await writer_b.aflush(10)
        assert (writer_b.stats.failed, _calls(cluster_engine)) == (0, {"before": "a", "fresh": "b"})

        a.paused = False
        a.wake()
        await _until(lambda: not a.owns("0042") and not a.owns("0043"), 5)
        assert sorted(lost_a) == ["0042", "0043"]
        await _until(lambda: a.rounds >= 3, 5)  # it keeps running its rounds: re-synced, not placed (sticky)
        assert a.held == {} and b.held == {"0042": 2, "0043": 2}
    finally:
        for member in (a, b):
            await member.close()
        writer_a.close()
        writer_b.close()


async def test_a_drained_node_releases_and_the_other_adopts_within_a_round(cluster_engine: Engine) -> None:
    a = ClusterMember(cluster_engine, "a", sip_host="127.0.0.11", sip_port=5060, lease_seconds=LEASE)
    b = ClusterMember(cluster_engine, "b", sip_host="127.0.0.12", sip_port=5060, lease_seconds=LEASE)
    try:
        await a.start()
        await b.start()
        await a.drain()
        assert a.held == {}
        took = await _until(lambda: b.held == {"0042": 2, "0043": 2}, 3 * LEASE)
        assert took <= b.interval + 1.0  # released leases need no expiry: b's next round
    finally:
        await a.close()
        await b.close()


async def test_a_move_hands_the_operation_over_to_the_target(cluster_engine: Engine) -> None:
    from callbridge.cluster import leases
    a = ClusterMember(cluster_engine, "a", sip_host="127.0.0.11", sip_port=5060, lease_seconds=LEASE)
    b = ClusterMember(cluster_engine, "b", sip_host="127.0.0.12", sip_port=5060, lease_seconds=LEASE)
    try:
        await a.start()
        await b.start()
        with cluster_engine.begin() as conn:
            assert leases.request_move(conn, "0043", "b")
        await _until(lambda: b.owns("0043"), 4 * LEASE)
        assert (a.held, b.held) == ({"0042": 1}, {"0043": 2})
        await asyncio.sleep(2 * a.interval)  # sticky afterwards: nothing moves back
        assert (a.held, b.held) == ({"0042": 1}, {"0043": 2})
    finally:
        await a.close()
        await b.close()


async def test_admin_drain_moves_every_operation_of_a_live_node_away_and_it_takes_none_back(
        cluster_url: str, cluster_engine: Engine) -> None:
    from typer.testing import CliRunner

    from callbridge.cli.root import app
    a = ClusterMember(cluster_engine, "a", sip_host="127.0.0.11", sip_port=5060, lease_seconds=LEASE)
    b = ClusterMember(cluster_engine, "b", sip_host="127.0.0.12", sip_port=5060, lease_seconds=LEASE)
    try:
        await a.start()
        await b.start()
        assert (a.held, b.held) == ({"0042": 1, "0043": 1}, {})
        runner = CliRunner()
        result = await asyncio.to_thread(runner.invoke, app, [
            "admin", "--database-url", cluster_url, "cluster", "drain", "a", "--lease-seconds", str(LEASE)])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("node a drains: it releases 2 operations (0042, 0043) in its next round")
        took = await _until(lambda: b.held == {"0042": 2, "0043": 2}, 4 * LEASE)
        assert took <= 2 * a.interval + 1.0  # a's next round releases, b's next one takes: no lease expiry
        assert a.held == {} and a.draining is True
        await asyncio.sleep(2 * a.interval)  # a takes nothing back while it runs
        assert (a.held, b.held) == ({}, {"0042": 2, "0043": 2})
        unknown = await asyncio.to_thread(runner.invoke, app, [
            "admin", "--database-url", cluster_url, "cluster", "drain", "zz"])
        assert unknown.exit_code == 1
        assert "node 'zz' is not a live node of the cluster" in unknown.output
    finally:
        await a.close()
        await b.close()


async def test_a_handover_keeps_the_lease_until_the_node_let_its_calls_go_and_flushes_before_it_releases(
        cluster_engine: Engine) -> None:
    from callbridge.cluster import leases

    settled = {"0042": False}
    asked: list[str] = []
    flushed: list[dict[str, int]] = []

    def prepare(operation_id: str) -> bool:
        asked.append(operation_id)
        return settled[operation_id]

    a = ClusterMember(cluster_engine, "a", sip_host="127.0.0.11", sip_port=5060, lease_seconds=LEASE,
                      prepare_release=prepare, flush=lambda: flushed.append(dict(a.held)))
    b = ClusterMember(cluster_engine, "b", sip_host="127.0.0.12", sip_port=5060, lease_seconds=LEASE)
    try:
        await a.start()
        await b.start()
        assert (a.held, b.held) == ({"0042": 1, "0043": 1}, {})
        with cluster_engine.begin() as conn:
            assert leases.request_move(conn, "0042", "b")
        await asyncio.sleep(3 * a.interval)  # calls not settled: the lease is renewed, never released
        assert (a.held, b.held) == ({"0042": 1, "0043": 1}, {})
        assert len(asked) >= 2 and set(asked) == {"0042"} and flushed == []
        settled["0042"] = True
        await _until(lambda: b.held == {"0042": 2}, 4 * LEASE)
        assert flushed[0] == {"0042": 1, "0043": 1}  # the writer flushed while a still held the lease
        assert a.held == {"0043": 1}
        await _until(lambda: a.owner_address("0042") == ("127.0.0.12", 5060), 2 * LEASE)
    finally:
        await a.close()
        await b.close()
