"""Webhooks configured with the operation, end to end: `callbridge serve`'s `run` on loopback with a SQLite file
loaded the way `callbridge admin load` loads it, agents registered with real SIP phones, events driven through the
agentbox endpoint, and real HTTP receivers on 127.0.0.1 that check the signature over the raw body.

- An operation's events reach its webhook, signed with its secret, with the exact type and data.
- `callbridge admin webhook update` moves a target to a new URL in the database; the running node follows at its
  next directory poll, without a restart, and the next event goes to the new URL only.
- Tenants are isolated: the second operation's events reach only its own receiver, never the first's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from http_world import LiveServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from typer.testing import CliRunner

from callbridge.bootstrap import Node
from callbridge.cli import app as cli
from callbridge.cli.serve import run
from callbridge.config import Settings
from callbridge.http.events import WireEvent
from callbridge.http.webhooks import RetryPolicy, WebhookDispatcher, WebhookTarget, verify_signature
from callbridge.phone import Phone
from callbridge.storage.loader import load_into_fresh_database

OP, OTHER = "0042", "0077"
SECRETS = {OP: "whsec-0042-configured", OTHER: "whsec-0077-configured"}
AUX = "7"
ENDPOINT = "/api/v2/agentbox.php"


class Receiver:
    """A CRM's webhook endpoint: keeps what arrived (raw body, whether the signature verified) and answers 204."""

    def __init__(self, name: str, secret: str) -> None:
        self.name = name
        self.secret = secret
        self.seen: list[tuple[bool, dict[str, Any]]] = []
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        raw = await request.body()
        ok = verify_signature(self.secret, request.headers.get("callbridge-signature", ""), raw)
        self.seen.append((ok, json.loads(raw)))
        return Response(status_code=204)

    def events(self) -> list[tuple[str, str, dict[str, Any]]]:
        assert all(ok for ok, _ in self.seen), f"{self.name}: a signature did not verify"
        return [(e["operation"], e["type"], e["data"]) for _, e in self.seen]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def operation(op: str, extensions: tuple[str, ...], hook_url: str) -> dict[str, Any]:
    return {
        "operation": {"id": op, "sip_domain": f"{op}.callbridge.test", "acw_seconds": 0},
        "agents": [{"extension": ext, "password": f"secret-{ext}"} for ext in extensions],
        "aux_states": [{"id": AUX, "name": "Lunch"}],
        "tokens": [{"label": "crm"}],
        "webhooks": [{"url": hook_url, "secret": SECRETS[op], "events": ["agent.state_changed"]}],
    }


def load(url: str, doc: dict[str, Any]) -> str:
    return load_into_fresh_database(url, doc).tokens[0][1]


def admin(db: str, *args: str) -> str:
    """`callbridge admin --database-url DB ARGS...` as an operator runs it; its standard output."""
    result = CliRunner().invoke(cli, ["admin", "--database-url", db, *args])
    assert result.exit_code == 0, result.stderr
    return result.stdout


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Node]:
    """`callbridge serve` (its `run`) in this loop, until the block ends."""
    stop = asyncio.Event()
    started: list[Node] = []
    task = asyncio.create_task(run(settings, ready=started.append, stop=stop))
    try:
        await until(lambda: bool(started) or task.done(), "callbridge serve to start")
        if task.done():
            task.result()
        yield started[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_configured_webhooks_follow_the_database_and_keep_tenants_apart(tmp_path: Path) -> None:
    first, moved, other = Receiver("first", SECRETS[OP]), Receiver("moved", SECRETS[OP]), Receiver("other",
                                                                                                   SECRETS[OTHER])
    async with LiveServer(first.app) as first_http, LiveServer(moved.app) as moved_http, \
            LiveServer(other.app) as other_http:
        db = f"sqlite:///{tmp_path / 'callbridge.db'}"
        tokens = {OP: await asyncio.to_thread(load, db, operation(OP, ("1001",), f"{first_http.url}/hook")),
                  OTHER: await asyncio.to_thread(load, db, operation(OTHER, ("2001",), f"{other_http.url}/hook"))}
        settings = Settings(sip_host="127.0.0.1", sip_port=0, http_host="127.0.0.1", http_port=free_port(),
                            database_url=db, drain_seconds=0.0, directory_poll_seconds=0.1, log_level="WARNING")
        phones: list[Phone] = []
        async with serving(settings) as node, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{settings.http_port}", timeout=10) as client:
            async def box(op: str, **params: str) -> dict[str, Any]:
                response = await client.post(ENDPOINT, params=params,
                                             headers={"wolkvox-token": tokens[op], "wolkvox_server": op})
                assert response.status_code == 200, response.text
                return dict(response.json())

            hooks = node.webhooks
            assert hooks is not None
            registered: list[tuple[str, str]] = []
            try:
                for op, ext in ((OP, "1001"), (OTHER, "2001")):
                    phone = await Phone.start(host="127.0.0.1", user=ext, domain=f"{op}.callbridge.test",
                                              password=f"secret-{ext}", name=f"agent-{ext}")
                    phones.append(phone)
                    await phone.register(node.sip_address, expires=300)
                    registered.append((op, ext))
                    await until(lambda: all(node.service.get_agent(o, e).registered for o, e in registered),
                                f"{ext} registered")

                # 1. the operation's event at its URL, signed with its secret, exactly
                await box(OP, api="change_status", agent_id="1001", status="ready")
                await until(lambda: len(first.seen) == 1, "the event at the first URL")
                assert first.events() == [(OP, "agent.state_changed", {
                    "agent_id": "1001", "state": "ready", "previous_state": "logout", "aux_state": None,
                    "registered": True, "reason": "api"})]
                assert first.seen[0][1]["seq"] == 1

                # 2. the URL changed in the database through `callbridge admin`; the same node follows
                listed = json.loads(await asyncio.to_thread(admin, db, "webhook", "list", OP, "--json"))
                assert [(h["id"], h["url"]) for h in listed] == [("1", f"{first_http.url}/hook")]
                assert "secret" not in listed[0]
                out = await asyncio.to_thread(admin, db, "webhook", "update", "1", "--url", f"{moved_http.url}/hook")
                assert out == f"webhook 1 of operation {OP} updated: {moved_http.url}/hook\n"
                await until(lambda: [t.url for t in hooks.targets if t.operation_id == OP]
                            == [f"{moved_http.url}/hook"], "the node to reload its webhooks")
                await box(OP, api="change_status", agent_id="1001", status=AUX)
                await until(lambda: len(moved.seen) == 1, "the event at the new URL")
                assert moved.events() == [(OP, "agent.state_changed", {
                    "agent_id": "1001", "state": "aux", "previous_state": "ready", "aux_state": AUX,
                    "registered": True, "reason": "api"})]
                assert moved.seen[0][1]["seq"] == 2

                # 3. the other operation's events go to its own URL only
                await box(OTHER, api="change_status", agent_id="2001", status="ready")
                await until(lambda: len(other.seen) == 1, "the other operation's event")
                assert other.events() == [(OTHER, "agent.state_changed", {
                    "agent_id": "2001", "state": "ready", "previous_state": "logout", "aux_state": None,
                    "registered": True, "reason": "api"})]
                await box(OP, api="change_status", agent_id="1001", status="ready")  # 0042 again, after 0077's
                await until(lambda: len(moved.seen) == 2, "the third event of the first operation")
                await until(lambda: hooks.pending() == 0, "nothing left to deliver")
                assert [e["seq"] for _, e in moved.seen] == [2, 3]
                assert {e["operation"] for _, e in first.seen + moved.seen} == {OP}
                assert len(first.seen) == 1  # the old URL got nothing after the change
                assert len(other.seen) == 1 and other.seen[0][1]["seq"] == 1
                assert hooks.stats.given_up == 0
            finally:
                for phone in phones:
                    await phone.close()


async def test_a_changed_target_keeps_its_pending_events_and_a_removed_one_drops_them() -> None:
    """The dispatcher's side of reconfiguration, on real sockets: events pending for a URL that refuses
    connections go to the target's new URL once it changes (same key); a filter keeps out other event types;
    a removed target's pending events are dropped and counted."""
    def event(seq: int, kind: str, op: str = OP) -> WireEvent:
        return WireEvent(seq, kind, 1_700_000_000.0 + seq, op, {"n": seq}, None)

    receiver = Receiver("new", SECRETS[OP])
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there: every try is refused
    async with LiveServer(receiver.app) as live:
        dispatcher = WebhookDispatcher(
            [WebhookTarget(OP, dead, SECRETS[OP], frozenset({"call.ended"}), key="1"),
             WebhookTarget(OP, dead + "2", SECRETS[OP], key="2")],
            policy=RetryPolicy(first_delay=0.05, max_delay=0.1, give_up_after=60.0, ack_timeout=2.0))
        await dispatcher.start()
        try:
            dispatcher.on_event(event(1, "call.ended"))
            dispatcher.on_event(event(2, "call.offered"))  # not for target 1's filter
            dispatcher.on_event(event(3, "call.ended"))
            dispatcher.on_event(event(1, "call.ended", op=OTHER))  # not this operation's
            assert dispatcher.pending() == 2 + 3
            await until(lambda: dispatcher.stats.retries >= 2, "tries at the dead URL")
            dispatcher.set_targets([WebhookTarget(OP, f"{live.url}/hook", SECRETS[OP], frozenset({"call.ended"}),
                                                  key="1")])
            assert dispatcher.stats.dropped == 3  # target 2's events went with it
            await until(lambda: dispatcher.pending() == 0, "the pending events at the new URL")
        finally:
            await dispatcher.stop()
    assert [(e["seq"], e["type"]) for _, e in receiver.seen] == [(1, "call.ended"), (3, "call.ended")]
    assert all(ok for ok, _ in receiver.seen)
    assert dispatcher.stats.delivered == 2 and dispatcher.stats.given_up == 0


async def test_a_narrowed_filter_drops_the_pending_events_it_no_longer_wants() -> None:
    """A kept target whose `events` filter narrows while events wait for it: those of other types are dropped and
    counted, the rest go to its (new) URL in order."""
    def event(seq: int, kind: str) -> WireEvent:
        return WireEvent(seq, kind, 1_700_000_000.0 + seq, OP, {"n": seq}, None)

    receiver = Receiver("narrowed", SECRETS[OP])
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there: the events stay pending
    async with LiveServer(receiver.app) as live:
        dispatcher = WebhookDispatcher(
            [WebhookTarget(OP, dead, SECRETS[OP], key="1")],
            policy=RetryPolicy(first_delay=0.05, max_delay=0.1, give_up_after=60.0, ack_timeout=2.0))
        await dispatcher.start()
        try:
            for seq, kind in ((1, "call.ended"), (2, "call.offered"), (3, "call.ended"), (4, "agent.state_changed")):
                dispatcher.on_event(event(seq, kind))
            assert dispatcher.pending() == 4
            dispatcher.set_targets([WebhookTarget(OP, f"{live.url}/hook", SECRETS[OP], frozenset({"call.ended"}),
                                                  key="1")])
            assert dispatcher.stats.dropped == 2 and dispatcher.pending() == 2
            await until(lambda: dispatcher.pending() == 0, "the wanted events at the new URL")
        finally:
            await dispatcher.stop()
    assert [(e["seq"], e["type"]) for _, e in receiver.seen] == [(1, "call.ended"), (3, "call.ended")]
    assert dispatcher.stats.delivered == 2 and dispatcher.stats.given_up == 0
