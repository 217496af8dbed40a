"""`callbridge serve` as a real process, killed with SIGKILL and stopped with SIGTERM, restarted each time on the
same database (SQLite and PostgreSQL), with real phones (`callbridge.phone`) registered to it.

- The event log: with a webhook receiver on loopback that is down across the crash, every event in the log has a
  unique seq growing by one, none lost or duplicated at the log, everything a consumer saw before the crash is
  still in the log after it, and the receiver got every event at least once and in order. Events come from the
  agentbox API (`api=change_status` of a registered agent).
- State events name their reason (docs/operations.md, "Restart semantics"): agents ready, in an aux state, on a
  call, ready with a registration that runs out while the node is down, and logged out, through kill -9 and
  SIGTERM: after the restart their states over the API, and exactly the events of those the restart changed at
  /v2/events after the pre-restart seq, each with its reason (`restart`, `registration expired`).
- The drain refuses new agents: during SIGTERM's drain a logged-out agent's login answers 503 CALL CONTROL IS NOT
  AVAILABLE and a phone's first REGISTER 503 with Retry-After, while a registered phone's refresh and the live
  call's verbs still work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS, TESTS / "storage"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
from webhook_receiver import Receiver  # noqa: E402

from callbridge.callcontrol.restart import REGISTRATION_EXPIRED, RESTART  # noqa: E402
from callbridge.http.contract import ERRORS  # noqa: E402
from callbridge.phone import CallEnded, IncomingCall, RegistrationError  # noqa: E402
from callbridge.phone.phone import Phone  # noqa: E402
from callbridge.storage import administration as admin  # noqa: E402
from callbridge.storage import schema as s  # noqa: E402
from callbridge.storage import webhooks as hooks  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402
from callbridge.storage.loader import load_into_fresh_database  # noqa: E402
from callbridge.storage.migrate import upgrade  # noqa: E402
from pg import PostgresUnavailable, postgres_server  # noqa: E402

pytestmark = pytest.mark.timeout(120)

_SCRIPT = Path(sys.executable).parent / "callbridge"
CALLBRIDGE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "callbridge"]
READY = re.compile(r"callbridge serving SIP on ([\d.]+):(\d+) \(udp, tcp\), HTTP on ([\d.]+):(\d+)")
OP, AGENT, DOMAIN, SECRET = "0042", "1001", "op.test", "w" * 32
AGENTBOX = "/api/v2/agentbox.php"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'callbridge.db'}"
        return
    server: str = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin_url = server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare(url: str, hook_url: str) -> str:
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            admin.create_operation(conn, id=OP, sip_domain=DOMAIN)
            admin.create_agent(conn, OP, AGENT, f"secret-{AGENT}")
            admin.create_aux_state(conn, OP, "2", "Break")
            _, token = admin.create_token(conn, OP, concurrency_limit=4)
            hooks.create_webhook(conn, OP, hook_url, SECRET)
        return token
    finally:
        engine.dispose()


def pairs(url: str) -> tuple[int, int]:
    """(agent_state_history rows, agent.state_changed events): each change's row and its event commit together,
    the logouts start-up reconciliation writes after a crash included."""
    engine = make_engine(url)
    h = s.agent_state_history
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(h)).scalar_one()
            events = conn.execute(select(func.count()).select_from(s.events)
                                  .where(s.events.c.type == "agent.state_changed")).scalar_one()
            return rows, events
    finally:
        engine.dispose()


def reconciled(url: str) -> int:
    """State rows start-up reconciliation wrote (a change a restart made)."""
    engine = make_engine(url)
    h = s.agent_state_history
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(h)
                                    .where(h.c.reason.in_([RESTART, REGISTRATION_EXPIRED]))).scalar_one())
    finally:
        engine.dispose()


def logged(url: str) -> list[int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            t = s.events
            return [r[0] for r in conn.execute(select(t.c.seq).where(t.c.operation_id == OP).order_by(t.c.seq))]
    finally:
        engine.dispose()


class Serve:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.sip: tuple[str, int] = ("", 0)
        self.http = ""
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, url: str, cwd: Path, settings: dict[str, str] | None = None) -> Serve:
        with socket.socket() as probe:  # the ready line names the configured HTTP port: choose a free one
            probe.bind(("127.0.0.1", 0))
            http_port = probe.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
        env.update(CALLBRIDGE_SIP_HOST="127.0.0.1", CALLBRIDGE_SIP_PORT="0", CALLBRIDGE_HTTP_HOST="127.0.0.1",
                   CALLBRIDGE_HTTP_PORT=str(http_port), CALLBRIDGE_DATABASE_URL=url, CALLBRIDGE_DRAIN_SECONDS="0",
                   CALLBRIDGE_LOG_LEVEL="INFO")
        env.update(settings or {})
        proc = await asyncio.create_subprocess_exec(*CALLBRIDGE, "serve", stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                    env=env, cwd=cwd)
        serve = cls(proc)
        async with asyncio.timeout(30):
            while True:
                assert proc.returncode is None, "\n".join(serve.lines)
                found = next((m for m in map(READY.search, serve.lines) if m), None)
                if found:
                    serve.sip = (found[1], int(found[2]))
                    serve.http = f"http://{found[3]}:{found[4]}"
                    return serve
                await asyncio.sleep(0.02)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    async def end(self, sig: int) -> int:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 20)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reader, 5)
        return code


async def changes(serve: Serve, token: str, count: int) -> int:
    """logout, ready, then alternate 2 / ready: `count` changes after the first; returns the last seq seen."""
    headers = {"wolkvox-token": token, "wolkvox_server": OP}
    async with httpx.AsyncClient(base_url=serve.http, timeout=10) as client:
        for i, status in enumerate(["logout", "ready"] + ["2" if i % 2 == 0 else "ready" for i in range(count)]):
            response = await client.post(AGENTBOX, params={"api": "change_status", "agent_id": AGENT,
                                                           "status": status}, headers=headers)
            assert response.status_code == 200, (i, response.text)
        await asyncio.sleep(0.3)  # commits land (the writer's window is 5 ms)
        head = await client.get("/v2/events", params={"wait": "0"}, headers={"authorization": f"Bearer {token}"})
        return int(head.headers["callbridge-last-seq"])


async def test_seq_survives_kill_9_and_sigterm_and_the_receiver_gets_every_event_in_order(
        db_url: str, tmp_path: Path) -> None:
    receiver = await Receiver(SECRET).start()
    phone = await Phone.start(host="127.0.0.1", user=AGENT, domain=DOMAIN, password=f"secret-{AGENT}", name="agent")
    serve: Serve | None = None
    try:
        token = await asyncio.to_thread(prepare, db_url, receiver.url)
        serve = await Serve.start(db_url, tmp_path)
        await phone.register(serve.sip, expires=300)  # kept in the database: restored after each restart
        seen = await changes(serve, token, 6)
        assert seen >= 7
        await receiver.wait_for(seen)
        receiver.mode = "fail"  # the receiver goes down: its backlog crosses the crash
        seen = await changes(serve, token, 5)
        assert await serve.end(signal.SIGKILL) == -signal.SIGKILL
        kept = await asyncio.to_thread(logged, db_url)
        assert kept == list(range(1, len(kept) + 1)) and len(kept) >= seen  # nothing a consumer saw was lost
        rows, events = await asyncio.to_thread(pairs, db_url)
        assert rows == events == len(kept)  # no event without its state change, no change without its event

        serve = await Serve.start(db_url, tmp_path)
        async with httpx.AsyncClient(base_url=serve.http, timeout=10) as client:
            agent = (await client.get(f"/v2/agents/{AGENT}", headers={"authorization": f"Bearer {token}"})).json()
            head = await client.get("/v2/events", params={"wait": "0"}, headers={"authorization": f"Bearer {token}"})
        # in aux 2 at the crash, its phone still registered: it is still so, and the restart changed nothing
        assert (agent["state"], agent["aux_state"], agent["registered"]) == ("aux", "2", True)
        assert int(head.headers["callbridge-last-seq"]) == len(kept)
        receiver.mode = "ok"
        seen = await changes(serve, token, 4)
        assert seen > len(kept)  # the sequence continued after the crash
        await receiver.wait_for(seen, timeout=20)
        assert await serve.end(signal.SIGTERM) == 0
        kept = await asyncio.to_thread(logged, db_url)
        assert kept == list(range(1, seen + 1))  # a SIGTERM loses nothing

        serve = await Serve.start(db_url, tmp_path)
        async with httpx.AsyncClient(base_url=serve.http, timeout=10) as client:
            resumed = await client.get("/v2/events", params={"after": "3", "wait": "0"},
                                       headers={"authorization": f"Bearer {token}"})
        last = int(resumed.headers["callbridge-last-seq"])
        assert last == seen  # ready at the SIGTERM with its phone registered: kept, so no event
        assert [int(line.split(b'"seq":')[1].split(b",")[0]) for line in resumed.content.splitlines() if line] \
            == list(range(4, last + 1))
        seen = await changes(serve, token, 3)
        await receiver.wait_for(seen, timeout=20)
        assert await serve.end(signal.SIGTERM) == 0
        serve = None
        kept = await asyncio.to_thread(logged, db_url)
        assert kept == list(range(1, seen + 1))
        assert await asyncio.to_thread(pairs, db_url) == (seen, seen)
        assert await asyncio.to_thread(reconciled, db_url) == 0  # neither restart changed the agent
        got = receiver.seqs()
        assert sorted(set(got)) == kept  # every event at least once
        assert got == sorted(got)  # in order (a repeat only of the event being delivered at the crash)
        assert receiver.bad_signatures == 0
    finally:
        await phone.close()
        await receiver.stop()
        if serve is not None:
            await serve.end(signal.SIGKILL)


# --- restart semantics: agents' states through a restart, and the events that name why they changed -------------

AGENTS = ("1001", "1002", "1003", "1004", "1005")
EXPIRING = "1004"  # registers for 2 s and then falls silent: its registration runs out while the node is down
DID, CUSTOMER_HOST = "6015550100", "127.0.0.2"
SHORT_REGISTRATIONS = {"CALLBRIDGE_REGISTRATION_MIN_EXPIRES": "1"}


def load_operation(url: str) -> str:
    """Agents 1001-1005 in queue support (ACW 60 s: an agent whose call the SIGTERM ends is in ACW when the node
    stops), aux state 2, a trunk whose customers come from 127.0.0.2 to DID 6015550100; returns the token."""
    doc = {
        "operation": {"id": OP, "sip_domain": DOMAIN, "acw_seconds": 60, "default_queue": "support",
                      "ring_timeout": 5},
        "queues": [{"name": "support", "max_wait_seconds": 10}],
        "agents": [{"extension": e, "password": f"secret-{e}", "queues": ["support"]} for e in AGENTS],
        "aux_states": [{"id": "2", "name": "Break"}],
        "trunks": [{"name": "carrier", "host": "127.0.0.3", "port": 5060,
                    "inbound_networks": [f"{CUSTOMER_HOST}/32"]}],
        "dids": [{"number": DID, "queue": "support", "trunk": "carrier"}],
        "tokens": [{"label": "tests", "concurrency_limit": 4}],
    }
    [(_, token)] = load_into_fresh_database(url, doc).tokens
    return token


def latest_states(url: str) -> dict[str, str]:
    """Each agent's last recorded state."""
    engine = make_engine(url)
    h = s.agent_state_history
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(h.c.extension, h.c.state).order_by(h.c.id)).all()
    finally:
        engine.dispose()
    return {ext: state for ext, state in rows}


def registration_expiry(url: str, extension: str) -> float:
    engine = make_engine(url)
    r = s.registrations
    try:
        with engine.connect() as conn:
            at = conn.execute(select(func.max(r.c.expires_at)).where(r.c.extension == extension)).scalar_one()
    finally:
        engine.dispose()
    return float(at.timestamp())


async def until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    """Until `predicate()` (maybe a coroutine function) is true; TimeoutError naming `what` after `timeout` s."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = predicate()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


class Api:
    """The node's two APIs with one token."""

    def __init__(self, serve: Serve, token: str) -> None:
        self.client = httpx.AsyncClient(base_url=serve.http, timeout=10)
        self.box_headers = {"wolkvox-token": token, "wolkvox_server": OP}
        self.bearer = {"authorization": f"Bearer {token}"}

    async def box(self, api: str, agent: str, **params: str) -> httpx.Response:
        return await self.client.post(AGENTBOX, params={"api": api, "agent_id": agent, **params},
                                      headers=self.box_headers)

    async def agents(self) -> dict[str, tuple[str, str | None, bool]]:
        response = await self.client.get("/v2/agents", headers=self.bearer)
        assert response.status_code == 200, response.text
        return {a["agent_id"]: (a["state"], a["aux_state"], a["registered"]) for a in response.json()["items"]}

    async def events(self, after: int) -> tuple[int, list[dict[str, Any]]]:
        """(the last seq, the events after `after`)."""
        response = await self.client.get("/v2/events", params={"after": str(after), "wait": "0"},
                                         headers=self.bearer)
        assert response.status_code == 200, response.text
        return int(response.headers["callbridge-last-seq"]), [json.loads(x) for x in response.text.splitlines()]

    async def close(self) -> None:
        await self.client.aclose()


async def agent_phones(serve: Serve) -> dict[str, Phone]:
    phones = {}
    for ext in AGENTS:
        phones[ext] = await Phone.start(host="127.0.0.1", user=ext, domain=DOMAIN, password=f"secret-{ext}",
                                        name=f"agent-{ext}", answer="auto")
    return phones


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_agents_come_back_in_their_states_and_state_events_name_their_reason(
        db_url: str, tmp_path: Path, stop: signal.Signals) -> None:
    token = await asyncio.to_thread(load_operation, db_url)
    serve = await Serve.start(db_url, tmp_path, SHORT_REGISTRATIONS)
    phones = await agent_phones(serve)
    customer = await Phone.start(host=CUSTOMER_HOST, user="3105550000", domain=CUSTOMER_HOST, name="customer")
    api = Api(serve, token)
    try:
        for ext in AGENTS:
            await phones[ext].register(serve.sip, expires=2 if ext == EXPIRING else 300)
        # 1001 ready first: idle longest, it takes the customer's call; 1005 stays logged out
        for ext, status in (("1001", "ready"), ("1003", "ready"), ("1002", "2"), (EXPIRING, "ready")):
            response = await api.box("change_status", ext, status=status)
            assert response.status_code == 200, response.text
        call = await customer.call(f"sip:{DID}@{serve.sip[0]}:{serve.sip[1]}", timeout=10)
        before = {"1001": "on_call", "1002": "aux:2", "1003": "ready", EXPIRING: "ready"}
        await until(lambda: latest_states(db_url) == before, "the states written through")
        registration = phones[EXPIRING].registration(serve.sip)
        assert registration is not None
        registration.close()  # the phone falls silent: no more refreshes

        code = await serve.end(stop)
        assert code == (-signal.SIGKILL if stop == signal.SIGKILL else 0)
        if stop == signal.SIGTERM:  # the drain ended the call: its agent is in after-call work at the stop
            await customer.wait_for(CallEnded, call=call, timeout=5)
            before["1001"] = "acw"
        assert await asyncio.to_thread(latest_states, db_url) == before
        pre_restart = (await asyncio.to_thread(logged, db_url))[-1]
        expiry = await asyncio.to_thread(registration_expiry, db_url, EXPIRING)
        await until(lambda: time.time() > expiry + 0.2, f"{EXPIRING}'s registration to run out", timeout=5)

        serve = await Serve.start(db_url, tmp_path, SHORT_REGISTRATIONS)
        await api.close()
        api = Api(serve, token)
        if stop == signal.SIGKILL:  # reconciliation's BYE on the call left from before
            ended = await customer.wait_for(CallEnded, call=call, timeout=15)
            assert ended.reason == "bye"
        expected = {"1001": ("ready", None, True), "1002": ("aux", "2", True), "1003": ("ready", None, True),
                    EXPIRING: ("logout", None, False), "1005": ("logout", None, True)}
        await until(lambda: _same(api.agents(), expected), "the agents' states after the restart")
        last, events = await api.events(pre_restart)
        assert last == pre_restart + 2
        assert [(e["seq"], e["type"], e["data"]) for e in events] == [
            (pre_restart + 1, "agent.state_changed",
             {"agent_id": "1001", "state": "ready", "previous_state": before["1001"], "aux_state": None,
              "registered": True, "reason": "restart"}),
            (pre_restart + 2, "agent.state_changed",
             {"agent_id": EXPIRING, "state": "logout", "previous_state": "ready", "aux_state": None,
              "registered": False, "reason": "registration expired"}),
        ]
        rows, state_events = await asyncio.to_thread(pairs, db_url)
        assert rows == state_events  # each change the restart made has its row and its event, and no other

        # 1003 kept its idle time across the restart (1001 is ready only since it): 1003 takes the next call
        again = await customer.call(f"sip:{DID}@{serve.sip[0]}:{serve.sip[1]}", timeout=10)
        await phones["1003"].wait_for(IncomingCall, timeout=5)
        assert [p.name for p in phones.values() if p.calls] == ["agent-1003"]
        await again.hangup()
        assert await serve.end(signal.SIGTERM) == 0
    finally:
        await api.close()
        for phone in (*phones.values(), customer):
            await phone.close()
        await serve.end(signal.SIGKILL)


async def _same(agents: Any, expected: dict[str, tuple[str, str | None, bool]]) -> bool:
    return bool(await agents == expected)


async def test_the_drain_refuses_new_logins_and_registrations_while_refreshes_and_the_live_call_go_on(
        db_url: str, tmp_path: Path) -> None:
    token = await asyncio.to_thread(load_operation, db_url)
    serve = await Serve.start(db_url, tmp_path, {"CALLBRIDGE_DRAIN_SECONDS": "20"})
    phones = await agent_phones(serve)
    customer = await Phone.start(host=CUSTOMER_HOST, user="3105550000", domain=CUSTOMER_HOST, name="customer")
    api = Api(serve, token)
    try:
        for ext in ("1001", "1003"):
            await phones[ext].register(serve.sip, expires=300)
        assert (await api.box("change_status", "1003", status="ready")).status_code == 200
        call = await customer.call(f"sip:{DID}@{serve.sip[0]}:{serve.sip[1]}", timeout=10)
        await until(lambda: _same(api.agents(), {
            "1001": ("logout", None, True), "1002": ("logout", None, False), "1003": ("on_call", None, True),
            "1004": ("logout", None, False), "1005": ("logout", None, False)}), "1003 on the call")

        serve.proc.send_signal(signal.SIGTERM)
        await until(lambda: _status(api, "/health", 503), "the drain (/health 503)")

        # a logged-out agent cannot log in: the contract's 503, and nothing moved
        unavailable = ERRORS["CALL_CONTROL_UNAVAILABLE"]
        for status in ("ready", "2"):
            refused = await api.box("change_status", "1001", status=status)
            assert (refused.status_code, refused.json()) == (503, unavailable.envelope())
        # a phone with no binding: 503 with Retry-After (RFC 3261 §21.5.4), after its digest was checked
        with pytest.raises(RegistrationError) as info:
            await phones["1002"].register(serve.sip, expires=300, timeout=10)
        assert (info.value.status, info.value.retry_after) == (503, 30)
        # a registered phone's refresh still works, and the live call keeps its verbs
        assert await phones["1001"].register(serve.sip, expires=300, timeout=10) == 300
        held = await api.box("hold", "1003")
        assert (held.status_code, held.json()["msg"]) == (200, "Call has been put on hold")
        assert (await api.box("hang", "1003")).status_code == 200
        await customer.wait_for(CallEnded, call=call, timeout=5)
        # only 1003 ever changed state (1001 never logged in)
        await until(lambda: latest_states(db_url) == {"1003": "acw"}, "1003's after-call work written")

        assert await serve.end(signal.SIGTERM) == 0  # nothing live left: the drain ends before its 20 s
        engine = make_engine(db_url)
        try:
            with engine.connect() as conn:
                bound = conn.execute(select(s.registrations.c.extension).order_by(s.registrations.c.extension))
                assert [r[0] for r in bound] == ["1001", "1003"]  # 1002 was never bound
        finally:
            engine.dispose()
    finally:
        await api.close()
        for phone in (*phones.values(), customer):
            await phone.close()
        await serve.end(signal.SIGKILL)


async def _status(api: Api, path: str, status: int) -> bool:
    return (await api.client.get(path)).status_code == status
