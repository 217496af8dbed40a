"""`callbridge serve` as a real process, killed with SIGKILL and stopped with SIGTERM, restarted each time on the
same database (SQLite and PostgreSQL), with a webhook receiver on loopback that is down across the crash: every
event in the log has a unique seq growing by one, none lost or duplicated at the log, everything a consumer saw
before the crash is still in the log after it, and the receiver got every event at least once and in order.
Events come from the agentbox API (`api=change_status` of a registered agent)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS, TESTS / "storage"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
from webhook_receiver import Receiver  # noqa: E402

from callbridge.phone.phone import Phone  # noqa: E402
from callbridge.storage import administration as admin  # noqa: E402
from callbridge.storage import schema as s  # noqa: E402
from callbridge.storage import webhooks as hooks  # noqa: E402
from callbridge.storage.database import make_engine  # noqa: E402
from callbridge.storage.migrate import upgrade  # noqa: E402
from callbridge.storage.reconcile import RECONCILE_REASON  # noqa: E402
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
    engine = make_engine(url)
    h = s.agent_state_history
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(h)
                                    .where(h.c.reason == RECONCILE_REASON)).scalar_one())
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
    async def start(cls, url: str, cwd: Path) -> Serve:
        with socket.socket() as probe:  # the ready line names the configured HTTP port: choose a free one
            probe.bind(("127.0.0.1", 0))
            http_port = probe.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
        env.update(CALLBRIDGE_SIP_HOST="127.0.0.1", CALLBRIDGE_SIP_PORT="0", CALLBRIDGE_HTTP_HOST="127.0.0.1",
                   CALLBRIDGE_HTTP_PORT=str(http_port), CALLBRIDGE_DATABASE_URL=url, CALLBRIDGE_DRAIN_SECONDS="0",
                   CALLBRIDGE_LOG_LEVEL="INFO")
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
        assert last == seen + 1  # start-up reconciliation logged the agent out: an event too
        assert [int(line.split(b'"seq":')[1].split(b",")[0]) for line in resumed.content.splitlines() if line] \
            == list(range(4, last + 1))
        seen = await changes(serve, token, 3)
        await receiver.wait_for(seen, timeout=20)
        assert await serve.end(signal.SIGTERM) == 0
        serve = None
        kept = await asyncio.to_thread(logged, db_url)
        assert kept == list(range(1, seen + 1))
        assert await asyncio.to_thread(pairs, db_url) == (seen, seen)
        assert await asyncio.to_thread(reconciled, db_url) == 2  # the crash's and the SIGTERM's: reported too
        got = receiver.seqs()
        assert sorted(set(got)) == kept  # every event at least once
        assert got == sorted(got)  # in order (a repeat only of the event being delivered at the crash)
        assert receiver.bad_signatures == 0
    finally:
        await phone.close()
        await receiver.stop()
        if serve is not None:
            await serve.end(signal.SIGKILL)
