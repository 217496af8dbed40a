"""The durable event log, on real SQLite and PostgreSQL, through `bootstrap` restarted in-process on the same
database: events survive a restart and their seq continues; `after=N` across the restart answers exactly the events
after N (read from the database); webhook cursors resume and a target down across the restart gets its backlog in
order; a hanging target does not delay another; pruning removes old events and 410 follows; an event commits in
the writer batch of the state row it reports."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from webhook_receiver import Receiver

from callbridge.bootstrap import Node, bootstrap
from callbridge.config import Settings
from callbridge.http.webhooks import RetryPolicy
from callbridge.storage import administration as admin
from callbridge.storage import schema as s
from callbridge.storage import webhooks as hooks
from callbridge.storage.database import make_engine
from callbridge.storage.migrate import upgrade
from callbridge.storage.webhook_cursors import webhook_status
from callbridge.storage.writer import Writer

OP = "0042"
AGENT = "1001"
SECRET = "s" * 32
FAST = RetryPolicy(first_delay=0.05, max_delay=0.2, ack_timeout=1.0)
# A node closed with its agent not logged out: the next start-up's reconciliation logs the agent out, and reports
# it with an event of its own (seq after the stored ones).
RECONCILED = 1


def _prepare(url: str, hook_urls: tuple[str, ...] = ()) -> str:
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            admin.create_operation(conn, id=OP, sip_domain="op.test")
            admin.create_agent(conn, OP, AGENT, "agent-password-1")
            admin.create_aux_state(conn, OP, "2", "Break")
            _, token = admin.create_token(conn, OP)
            for hook_url in hook_urls:
                hooks.create_webhook(conn, OP, hook_url, SECRET)
    finally:
        engine.dispose()
    return token


async def prepare(url: str, *hook_urls: str) -> str:
    return await asyncio.to_thread(_prepare, url, hook_urls)


async def start(url: str, *, webhooks: bool = False) -> Node:
    node = await bootstrap(Settings(sip_port=0, http_port=0, database_url=url, directory_poll_seconds=0),
                           listen_tcp=False)
    node.service.on_registration_changed(OP, AGENT, True)
    if webhooks and node.webhooks is not None:
        node.webhooks.policy = FAST
        await node.webhooks.start()
    return node


async def stop(node: Node) -> None:
    if node.webhooks is not None:
        await node.webhooks.stop()
    await node.close()


async def changes(node: Node, count: int) -> None:
    """`count` agent.state_changed events (each a change of state), committed."""
    first = node.events.committed_seq(OP)
    for _ in range(count):
        state = node.service.get_agent(OP, AGENT).state
        node.service.change_status(OP, AGENT, "ready" if state != "ready" else "2")
        await asyncio.sleep(0)
    await node.storage.writer.aflush()
    await asyncio.sleep(0.05)  # the commit report reaches the loop
    assert node.events.committed_seq(OP) == first + count


async def get_events(node: Node, token: str, query: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=node.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://callbridge.test") as client:
        return await client.get(f"/v2/events?{query}", headers={"authorization": f"Bearer {token}"})


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def stored(url: str, query: Any) -> Any:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(query).all()
    finally:
        engine.dispose()


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        await receiver.stop()


async def test_events_survive_a_restart_and_seq_continues(db_url: str) -> None:
    await prepare(db_url)
    node = await start(db_url)
    try:
        await changes(node, 3)
        before = [w.line for w in await node.events.read(OP, 0)]
    finally:
        await stop(node)
    node = await start(db_url)
    try:
        assert node.events.last_seq(OP) == 3 + RECONCILED
        logout = (await node.events.read(OP, 3))[0].to_json()
        assert (logout["type"], logout["data"]["state"]) == ("agent.state_changed", "logout")
        await changes(node, 2)
        after = await node.events.read(OP, 0)  # 1-3 are no longer in memory: read from the database
        assert [w.seq for w in after] == [1, 2, 3, 4, 5, 6]
        assert [w.line for w in after[:3]] == before
        assert after[0].to_json() == json.loads(before[0])
        assert [w.seq for w in await node.events.read(OP, 3)] == [4, 5, 6]
    finally:
        await stop(node)
    rows = await asyncio.to_thread(stored, db_url, select(s.events.c.seq).where(s.events.c.operation_id == OP)
                                   .order_by(s.events.c.seq))
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]


async def test_after_n_across_a_restart_answers_exactly_the_events_after_n(db_url: str) -> None:
    token = await prepare(db_url)
    node = await start(db_url)
    try:
        await changes(node, 5)
    finally:
        await stop(node)
    node = await start(db_url)
    try:
        await changes(node, 2)
        response = await get_events(node, token, "after=3&wait=0")
        assert response.status_code == 200
        assert response.headers["callbridge-last-seq"] == str(7 + RECONCILED)
        assert [e["seq"] for e in lines(response)] == [4, 5, 6, 7, 8]
        assert {e["type"] for e in lines(response)} == {"agent.state_changed"}
        assert [e["seq"] for e in lines(await get_events(node, token, "after=0&wait=0&limit=3"))] == [1, 2, 3]
        assert lines(await get_events(node, token, "after=8&wait=0")) == []
    finally:
        await stop(node)


async def test_webhook_cursors_resume_and_a_target_down_across_the_restart_gets_its_backlog_in_order(
        db_url: str, receivers: list[Receiver]) -> None:
    receiver = await Receiver(SECRET).start()
    receivers.append(receiver)
    await prepare(db_url, receiver.url)
    node = await start(db_url, webhooks=True)
    try:
        await changes(node, 3)
        await receiver.wait_for(3)
        receiver.mode = "fail"  # down from here, across the restart
        await changes(node, 2)
    finally:
        await stop(node)
    cursor = await asyncio.to_thread(stored, db_url, select(s.webhook_cursors.c.last_seq))
    assert cursor[0][0] == 3
    node = await start(db_url, webhooks=True)
    try:
        await changes(node, 2)
        await asyncio.sleep(0.2)
        assert receiver.seqs() == [1, 2, 3]
        lag = await asyncio.to_thread(_status, db_url)
        assert (lag.last_seq, lag.cursor, lag.lag) == (7 + RECONCILED, 3, 4 + RECONCILED)
        assert lag.oldest_undelivered_age_s is not None and lag.oldest_undelivered_age_s >= 0
        receiver.mode = "ok"
        await receiver.wait_for(8)
        await node.storage.writer.aflush()
        assert receiver.seqs() == [1, 2, 3, 4, 5, 6, 7, 8]
        assert receiver.bad_signatures == 0
    finally:
        await stop(node)
    lag = await asyncio.to_thread(_status, db_url)
    assert (lag.cursor, lag.lag, lag.oldest_undelivered_age_s) == (8, 0, None)


def _status(url: str) -> Any:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            (lag,) = webhook_status(conn)
            return lag
    finally:
        engine.dispose()


async def test_a_hanging_target_does_not_delay_another(db_url: str, receivers: list[Receiver]) -> None:
    hanging, healthy = await Receiver(SECRET).start(), await Receiver(SECRET).start()
    receivers += [hanging, healthy]
    hanging.mode = "hang"
    await prepare(db_url, hanging.url, healthy.url)
    node = await start(db_url, webhooks=True)
    try:
        node.webhooks.policy = RetryPolicy(ack_timeout=30.0)  # type: ignore[union-attr]
        started = time.monotonic()
        await changes(node, 3)
        await healthy.wait_for(3, timeout=2.0)
        assert time.monotonic() - started < 2.0
        assert healthy.seqs() == [1, 2, 3] and hanging.received == [] and hanging.requests == 1
    finally:
        await stop(node)


async def test_pruning_removes_old_events_and_410_follows_also_after_a_restart(db_url: str) -> None:
    token = await prepare(db_url)
    node = await start(db_url)
    try:
        await changes(node, 4)
        node.events.retention_s = 0.0  # every event is now past retention
        await node.events.prune()
        assert node.events.oldest_seq(OP) == 4  # the newest is always kept: the sequence continues from it
        gone = await get_events(node, token, "after=1&wait=0")
        assert gone.status_code == 410
        assert (gone.json()["error"], gone.json()["oldest_seq"]) == ("EVENTS_EXPIRED", 4)
        assert [e["seq"] for e in lines(await get_events(node, token, "after=3&wait=0"))] == [4]
    finally:
        await stop(node)
    rows = await asyncio.to_thread(stored, db_url, select(s.events.c.seq))
    assert [r[0] for r in rows] == [4]
    node = await start(db_url)
    try:
        assert (await get_events(node, token, "after=2&wait=0")).status_code == 410
        await changes(node, 1)
        assert [e["seq"] for e in lines(await get_events(node, token, "after=3&wait=0"))] == [4, 5, 6]
    finally:
        await stop(node)


async def test_an_event_and_its_state_row_commit_in_one_batch(db_url: str) -> None:
    await prepare(db_url)
    node = await start(db_url)
    try:
        writer = node.storage.writer
        await writer.aflush()
        batches = writer.stats.batches
        node.service.change_status(OP, AGENT, "2")  # an agent_state_history row and its event, one loop turn
        assert (node.events.last_seq(OP), node.events.committed_seq(OP)) == (1, 0)  # not shown before committed
        await writer.aflush()
        assert writer.stats.batches == batches + 1
        await asyncio.sleep(0.05)
        assert node.events.committed_seq(OP) == 1
    finally:
        await stop(node)
    history = await asyncio.to_thread(stored, db_url, select(func.count()).select_from(s.agent_state_history))
    events = await asyncio.to_thread(stored, db_url, select(func.count()).select_from(s.events))
    assert history[0][0] == events[0][0] == 1


async def test_the_writer_never_splits_a_loop_turn(db_url: str) -> None:
    await asyncio.to_thread(upgrade, db_url)
    engine = make_engine(db_url)
    writer = Writer(engine, commit_window=0).start()  # no window: without sealing it takes the first at once
    try:
        writer.seal_on(asyncio.get_running_loop())
        op = {"id": OP, "sip_domain": "op.test"}
        writer.insert(s.operations, op)
        time.sleep(0.05)  # the writer thread is free to run: it must not take the turn's first row alone
        writer.insert(s.queues, {"operation_id": OP, "name": "sales"})
        await writer.aflush()
        assert (writer.stats.batches, writer.stats.committed, writer.stats.failed) == (1, 2, 0)
    finally:
        writer.close()
        engine.dispose()
