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
- Live traffic (issue 12's test): customers' calls blind-transferred through the agentbox API, CDRs, an agent's
  state changing all the time, a call up at a kill -9 and another at a SIGTERM, two webhook targets (one down
  across the kill -9), a raw NDJSON consumer and `callbridge events` following: the log without a gap or a
  repeat, the restart's event with its reason, ended calls, transfers and CDRs answering the same JSON after each
  restart, every event at each target in order and at each consumer once.
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


def dialog_count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(s.dialogs)).scalar_one())
    finally:
        engine.dispose()


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
        # and the call's two dialogs, which the restart's BYE to the customer is sent from (a later batch than the
        # agent's state may carry them: a kill -9 in between left the customer without its BYE once in CI-like load)
        await until(lambda: dialog_count(db_url) == 2, "the call's dialogs written through")
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


# --- live traffic: calls, blind transfers, CDRs, two webhook targets and two stream consumers through both stops ---

CALL_AGENTS = ("1001", "1002")  # they take the customers' calls and transfer them to each other
FLAPPER = "1003"  # moves between aux 2 and aux 3 all the time: events being written when the node stops
SECRET_B = "b" * 32


def load_traffic_operation(url: str, hooks_at: tuple[str, str]) -> str:
    """Agents 1001-1003 in queue support (ACW 0: an agent is ready again as soon as a call leaves it), aux states
    2 and 3, the trunk whose customers come from 127.0.0.2 to DID 6015550100, two webhook targets (signed with
    SECRET and SECRET_B); returns the token."""
    agents = (*CALL_AGENTS, FLAPPER)
    doc = {
        "operation": {"id": OP, "sip_domain": DOMAIN, "acw_seconds": 0, "default_queue": "support",
                      "ring_timeout": 5},
        "queues": [{"name": "support", "max_wait_seconds": 10}],
        "agents": [{"extension": e, "password": f"secret-{e}", "queues": ["support"]} for e in agents],
        "aux_states": [{"id": "2", "name": "Break"}, {"id": "3", "name": "Training"}],
        "trunks": [{"name": "carrier", "host": "127.0.0.3", "port": 5060,
                    "inbound_networks": [f"{CUSTOMER_HOST}/32"]}],
        "dids": [{"number": DID, "queue": "support", "trunk": "carrier"}],
        "webhooks": [{"url": hooks_at[0], "secret": SECRET}, {"url": hooks_at[1], "secret": SECRET_B}],
        "tokens": [{"label": "tests", "concurrency_limit": 8}],
    }
    [(_, token)] = load_into_fresh_database(url, doc).tokens
    return token


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RawStream:
    """A consumer of `GET /v2/events` (NDJSON) that keeps every line it is sent, repeats included, and reconnects
    whenever the stream ends or drops with `after=` the last seq it got: what it saw, seq by seq."""

    def __init__(self, http: str, token: str) -> None:
        self.http = http
        self.token = token
        self.seqs: list[int] = []
        self.connections = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        headers = {"authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.http, timeout=httpx.Timeout(10, read=None)) as client:
            while True:
                after = self.seqs[-1] if self.seqs else 0
                try:
                    async with client.stream("GET", "/v2/events", params={"after": str(after), "wait": "60"},
                                             headers=headers) as response:
                        assert response.status_code == 200, response.status_code
                        self.connections += 1
                        async for line in response.aiter_lines():
                            if line:
                                self.seqs.append(int(json.loads(line)["seq"]))
                except httpx.TransportError:
                    await asyncio.sleep(0.05)  # the node is down: try again

    async def wait_for(self, seq: int, timeout: float = 20.0) -> None:
        await until(lambda: bool(self.seqs) and self.seqs[-1] >= seq, f"the stream to reach seq {seq}", timeout)

    def failure(self) -> BaseException | None:
        """What ended the consumer other than `close` (an unexpected status, say); None while it runs."""
        return self._task.exception() if self._task.done() and not self._task.cancelled() else None

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class FollowingCli:
    """`callbridge events --after 0 --json` in a process of its own: it follows the stream and resumes by itself
    (`NativeClient.events`) whatever the node does; `seqs` are the lines it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seqs: list[int] = []
        self.other: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, http: str, token: str, cwd: Path) -> FollowingCli:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
        env.update(CALLBRIDGE_URL=http, CALLBRIDGE_TOKEN=token)
        proc = await asyncio.create_subprocess_exec(*CALLBRIDGE, "events", "--after", "0", "--json",
                                                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                self.seqs.append(int(json.loads(line)["seq"]))
            except (ValueError, KeyError, TypeError):
                self.other.append(line.decode(errors="replace"))

    async def wait_for(self, seq: int, timeout: float = 30.0) -> None:
        await until(lambda: bool(self.seqs) and self.seqs[-1] >= seq, f"the CLI to print seq {seq}", timeout)

    async def close(self) -> int:
        """Ctrl-C (the CLI then ends with exit code 0); its exit code. Killed if it does not end within 10 s."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reader, 5)
        return code


class Flapper:
    """FLAPPER between aux 2 and aux 3 over the agentbox API, as fast as the node answers, until stopped: the node
    is always writing an event when it is stopped. Requests to a node that is gone fail; they are not counted."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.answered = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        aux = "3"
        while True:
            try:
                response = await self.api.box("change_status", FLAPPER, status=aux)
            except httpx.TransportError:
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 200:
                self.answered += 1
                aux = "2" if aux == "3" else "3"

    async def until_answered(self, count: int) -> None:
        target = self.answered + count
        await until(lambda: self.answered >= target, f"{count} more state changes of {FLAPPER}")

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def on_call(api: Api) -> str | None:
    """The call agent on a call, if any."""
    agents = await api.agents()
    busy = [ext for ext in CALL_AGENTS if agents[ext][0] == "on_call"]
    return busy[0] if busy else None


async def states(api: Api, expected: dict[str, str]) -> bool:
    agents = await api.agents()
    return all(agents[ext][0] == state for ext, state in expected.items())


async def transferred_call(api: Api, serve: Serve, customer: Phone) -> str:
    """A customer's call answered by one call agent, blind-transferred through the agentbox API to the other,
    who hangs up; returns its conn_id once the call has ended."""
    call = await customer.call(f"sip:{DID}@{serve.sip[0]}:{serve.sip[1]}", timeout=10)
    await until(lambda: on_call(api), "a call agent on the call")
    taker = await on_call(api)
    assert taker is not None
    other = CALL_AGENTS[1 - CALL_AGENTS.index(taker)]
    transferred = await api.box("transfer", taker, customer_phone=other)
    assert transferred.status_code == 200, transferred.text
    conn_id = transferred.json()["data"]["conn_id"]
    await until(lambda: states(api, {taker: "ready", other: "on_call"}), f"{other} on the transferred call")
    hung = await api.box("hang", other)
    assert hung.status_code == 200, hung.text
    await customer.wait_for(CallEnded, call=call, timeout=5)
    await until(lambda: states(api, {other: "ready"}), f"{other} ready after the call")
    return str(conn_id)


async def answered_call(api: Api, serve: Serve, customer: Phone) -> tuple[str, Any]:
    """A customer's call answered by a call agent and kept up: (its conn_id, the customer's call)."""
    call = await customer.call(f"sip:{DID}@{serve.sip[0]}:{serve.sip[1]}", timeout=10)
    await until(lambda: on_call(api), "a call agent on the call")
    taker = await on_call(api)
    response = await api.client.get("/v2/calls", params={"state": "active"}, headers=api.bearer)
    [live] = response.json()["items"]
    assert live["agent_id"] == taker
    return str(live["conn_id"]), call


async def history(api: Api, conn_ids: list[str]) -> dict[str, Any]:
    """What the native API answers about these ended calls: the listing's items, each call, each transfer (ids
    from the calls' transfer events in the log) and the CDRs."""
    async def get(path: str, **params: str) -> Any:
        response = await api.client.get(path, params=params, headers=api.bearer)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    ended = await get("/v2/calls", state="ended", limit="100")
    assert ended["next_cursor"] is None
    cdrs = await get("/v2/cdrs", limit="100")
    assert cdrs["next_cursor"] is None
    _, events = await api.events(0)
    transfer_ids = list(dict.fromkeys(e["data"]["id"] for e in events
                                      if e["type"] == "transfer.created" and e["data"]["conn_id"] in conn_ids))
    return {
        "ended": [c for c in ended["items"] if c["conn_id"] in conn_ids],
        "calls": {c: await get(f"/v2/calls/{c}") for c in conn_ids},
        "transfers": {t: await get(f"/v2/transfers/{t}") for t in transfer_ids},
        "cdrs": [c for c in cdrs["items"] if c["conn_id"] in conn_ids],
    }


def differences(before: Any, after: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Where two JSON values differ: (path, before, after) for each differing leaf; [] when they are equal."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [d for key in sorted(set(before) | set(after), key=str)
                for d in differences(before.get(key, "<absent>"), after.get(key, "<absent>"), f"{path}/{key}")]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (b, a) in enumerate(zip(before, after, strict=True)) for d in differences(b, a, f"{path}/{i}")]
    return [] if before == after else [(path, before, after)]


async def cdr_written(api: Api, conn_ids: list[str]) -> bool:
    response = await api.client.get("/v2/cdrs", params={"limit": "100"}, headers=api.bearer)
    return {c["conn_id"] for c in response.json()["items"]} >= set(conn_ids)


async def test_live_traffic_through_kill_9_and_sigterm_two_webhook_targets_streams_and_history(
        db_url: str, tmp_path: Path) -> None:
    """Calls (one blind transfer each), CDRs, agent changes written all the time, two webhook targets (B down
    across the kill -9 and back after), a raw NDJSON consumer and `callbridge events`: through a kill -9 with a
    call up, then a SIGTERM with a call up."""
    hook_a, hook_b = await Receiver(SECRET).start(), await Receiver(SECRET_B).start()
    http_port = free_tcp_port()  # the same URL after each restart: the consumers reconnect to it
    settings = {"CALLBRIDGE_HTTP_PORT": str(http_port)}
    token = await asyncio.to_thread(load_traffic_operation, db_url, (hook_a.url, hook_b.url))
    serve: Serve | None = await Serve.start(db_url, tmp_path, settings)
    assert serve is not None
    phones = {ext: await Phone.start(host="127.0.0.1", user=ext, domain=DOMAIN, password=f"secret-{ext}",
                                     name=f"agent-{ext}", answer="auto") for ext in (*CALL_AGENTS, FLAPPER)}
    customer = await Phone.start(host=CUSTOMER_HOST, user="3105550000", domain=CUSTOMER_HOST, name="customer")
    api = Api(serve, token)
    stream = RawStream(serve.http, token)
    cli = await FollowingCli.start(serve.http, token, tmp_path)
    flapper: Flapper | None = None
    try:
        for phone in phones.values():
            await phone.register(serve.sip, expires=300)
        for ext, status in (("1001", "ready"), ("1002", "ready"), (FLAPPER, "2")):
            assert (await api.box("change_status", ext, status=status)).status_code == 200

        # before the crash: two calls with a transfer each, ended, with their CDRs; then one up at the crash
        ended = [await transferred_call(api, serve, customer), await transferred_call(api, serve, customer)]
        await until(lambda: cdr_written(api, ended), "the CDRs of the calls ended before the crash")
        before_crash = await history(api, ended)
        assert len(before_crash["transfers"]) == 2
        assert all(t["state"] == "completed" for t in before_crash["transfers"].values())
        last, _ = await api.events(0)
        await hook_b.wait_for_seq(last)
        await cli.wait_for(last)  # the CLI is up and following (it takes seconds to start on a busy machine)
        await hook_b.down()  # B is down from here until after the restart: its backlog crosses the crash
        live_conn, live_call = await answered_call(api, serve, customer)
        flapper = Flapper(api)
        await flapper.until_answered(5)
        seen_by_stream = list(stream.seqs)
        assert await serve.end(signal.SIGKILL) == -signal.SIGKILL  # with the flapper's requests in flight
        await flapper.stop()
        kept = await asyncio.to_thread(logged, db_url)
        assert kept == list(range(1, len(kept) + 1))  # unique, growing by one: nothing lost or duplicated
        assert set(seen_by_stream) <= set(kept)  # nothing a consumer saw was lost
        rows, events = await asyncio.to_thread(pairs, db_url)
        assert rows == events  # no state event without its state change, nor a change without its event
        pre_restart = kept[-1]

        serve = await Serve.start(db_url, tmp_path, settings)
        await api.close()
        api = Api(serve, token)
        ended_live = await customer.wait_for(CallEnded, call=live_call, timeout=15)  # reconciliation's BYE
        assert ended_live.reason == "bye"
        last, after_restart = await api.events(pre_restart)
        # the restart changed only the agent on the call: its event first, with its reason
        taker = after_restart[0]["data"]["agent_id"]
        assert [(e["seq"], e["type"], e["data"]) for e in after_restart] == [
            (pre_restart + 1, "agent.state_changed",
             {"agent_id": taker, "state": "ready", "previous_state": "on_call", "aux_state": None,
              "registered": True, "reason": "restart"})]
        assert taker in CALL_AGENTS
        assert differences(before_crash, await history(api, ended)) == []  # the past answers as before the crash
        await hook_b.up()

        # after the crash: one more transferred call, then one up at the SIGTERM
        ended.append(await transferred_call(api, serve, customer))
        ended.append(live_conn)  # closed by the restart, with its CDR
        await until(lambda: cdr_written(api, ended), "the CDRs of the calls ended before the SIGTERM")
        before_stop = await history(api, ended)
        assert before_stop["calls"][live_conn]["state"] == "ended"
        assert [c["hangup_by"] for c in before_stop["cdrs"] if c["conn_id"] == live_conn] == ["system"]
        _, second_call = await answered_call(api, serve, customer)
        flapper = Flapper(api)
        await flapper.until_answered(5)
        assert await serve.end(signal.SIGTERM) == 0
        await flapper.stop()
        await customer.wait_for(CallEnded, call=second_call, timeout=5)  # the drain (0 s) ended it
        kept = await asyncio.to_thread(logged, db_url)
        assert kept == list(range(1, len(kept) + 1))
        pre_restart = kept[-1]

        serve = await Serve.start(db_url, tmp_path, settings)
        await api.close()
        api = Api(serve, token)
        last, after_restart = await api.events(pre_restart)
        assert (last, after_restart) == (pre_restart, [])  # every agent ready or in aux, registered: all kept
        assert differences(before_stop, await history(api, ended)) == []

        # everything reached everyone: the log, both targets, both consumers
        await hook_a.wait_for_seq(last, timeout=20)
        await hook_b.wait_for_seq(last, timeout=30)
        await stream.wait_for(last)
        await cli.wait_for(last)
        assert await serve.end(signal.SIGTERM) == 0
        serve = None
        kept = await asyncio.to_thread(logged, db_url)
        assert kept == list(range(1, last + 1))
        rows, events = await asyncio.to_thread(pairs, db_url)
        assert rows == events
        for hook in (hook_a, hook_b):
            got = hook.seqs()
            assert sorted(set(got)) == kept  # every event at least once
            runs = deliveries(got)
            # in order: each run of deliveries goes up by one and starts at most one past everything delivered
            # before it; a run starts again lower only at a stop (the events acknowledged whose cursor save the
            # kill -9 lost, or the one in flight): at most one run per process
            assert all(run[0] <= max(got[:start], default=0) + 1 for start, run in runs)
            assert len(runs) <= 3, runs
            assert hook.bad_signatures == 0
        assert stream.failure() is None
        assert stream.seqs == kept  # once each, growing, no gap, across both stops
        assert stream.connections >= 3
        assert cli.seqs == kept
        assert (await cli.close(), cli.other) == (0, [])
        stored = await asyncio.to_thread(state_reasons, db_url)
        assert all(reason for reason in stored)  # every state event names its reason
        assert stored.count("restart") == 1 and "registration expired" not in stored
    finally:
        if serve is not None:
            await serve.end(signal.SIGKILL)
        if flapper is not None:
            await flapper.stop()
        await stream.close()
        await cli.close()
        await api.close()
        for phone in (*phones.values(), customer):
            await phone.close()
        for hook in (hook_a, hook_b):
            await hook.stop()


def deliveries(got: list[int]) -> list[tuple[int, list[int]]]:
    """A receiver's seqs cut into runs that go up by one: (index of the run's first delivery, the run)."""
    runs: list[tuple[int, list[int]]] = []
    for i, seq in enumerate(got):
        if runs and seq == runs[-1][1][-1] + 1:
            runs[-1][1].append(seq)
        else:
            runs.append((i, [seq]))
    return runs


def state_reasons(url: str) -> list[str | None]:
    """The reason of every agent.state_changed event in the log, in seq order."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            t = s.events
            lines = conn.execute(select(t.c.line).where(t.c.operation_id == OP, t.c.type == "agent.state_changed")
                                 .order_by(t.c.seq))
            return [json.loads(line)["data"].get("reason") for (line,) in lines]
    finally:
        engine.dispose()
