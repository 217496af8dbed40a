"""Crash: `kill -9` of `callbridge serve` with 500 calls up, then the same node started again on the same database.

The run, on loopback, with `callbridge serve` as an operator runs it (SQLite file, write-through, defences at their
defaults):
1. 500 agents register with digest from 127.0.0.4 (one address, as phones behind an SBC: that address is in the
   configured trusted networks, the production switch for it, as in the benchmarks) and are made ready through
   the agentbox API; one SIPp uas then listens where they registered and answers every call.
2. 50 short calls (SIPp's uac from 127.0.0.2, the trunk's inbound network, to the DID) complete: they end before
   the kill.
3. 500 long calls are placed the same way and stay up (the uac pauses 120 s before its BYE); once their 1,000
   dialogs are written through, the server's process group gets SIGKILL.
4. The server starts again on the same database and ports. Start-up reconciliation (bootstrap) must leave:
   every one of the 50 calls that ended before the kill with its CDR (hung up by the customer), the 500 calls that
   were up closed by "system" with a CDR each, no call, leg or dialog left live in the database, and the 500
   registrations back (restored from the database: nobody registers again).
5. New calls work at once, with no API call: the 500 agents, on the calls the restart closed and with their phones'
   registrations still valid, are `ready` again (docs/operations.md, "Restart semantics"), and 20 new calls reach
   them at the SIPp uas, which never registered again.

Bounded: the whole test well under 90 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the real-peer harness

from callbridge.storage import make_engine
from callbridge.storage import schema as s
from peers.ports import free_port
from peers.sipp import Sipp

# serial: 500 registrations and 550 calls at a rate, bounded in time (scripts/test).
pytestmark = [pytest.mark.peers, pytest.mark.timeout(150), pytest.mark.serial]

ROOT = Path(__file__).resolve().parents[2]
UP_CALLS = 500
ENDED_CALLS = 50
NEW_CALLS = 20
TRUNK_HOST = "127.0.0.2"
AGENTS_HOST = "127.0.0.4"
BUFF_SIZE = 4 * 1024 * 1024


def _bench_common() -> ModuleType:
    """bench/common.py (the operation document, the digest REGISTER generator, `make_ready`), by path."""
    spec = importlib.util.spec_from_file_location("callbridge_bench_common", ROOT / "bench" / "common.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def _serve(db_url: str, sip_port: int, http_port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CALLBRIDGE_DATABASE_URL": db_url, "CALLBRIDGE_SIP_PORT": str(sip_port),
           "CALLBRIDGE_HTTP_PORT": str(http_port), "CALLBRIDGE_TRUSTED_NETWORKS": f"{AGENTS_HOST}/32",
           "CALLBRIDGE_LOG_LEVEL": "WARNING", "CALLBRIDGE_DRAIN_SECONDS": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "callbridge", "serve"], env=env, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)


async def _healthy(http_port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"callbridge serve exited: {log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            answer = await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{http_port}/health", None, 1)
            with answer:
                if answer.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise AssertionError(f"callbridge serve did not become healthy: {log.read_text()[-3000:]}")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _metric(http_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not on /metrics")


def _ready_and_registered(http_url: str, token: str) -> int:
    request = urllib.request.Request(f"{http_url}/v2/agents?state=ready", headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return sum(1 for agent in json.load(answer)["items"] if agent["registered"])


def _count(db_url: str, table: Any, *where: Any) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())
    finally:
        engine.dispose()


def _rows(db_url: str, query: Any) -> list[Any]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(query))
    finally:
        engine.dispose()


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _uac(remote: tuple[str, int], calls: int, rate: int, workdir: Path, *, pause_ms: int = 0,
         timeout: float = 30) -> Sipp:
    return Sipp("uac", remote=remote, host=TRUNK_HOST, service="6000", calls=calls, rate=rate, limit=calls,
                buff_size=BUFF_SIZE, timeout=timeout, trace_err=False, workdir=workdir,
                extra_args=["-d", str(pause_ms)])


async def test_kill_9_with_500_calls_up_then_restart(tmp_path: Path) -> None:
    bench = _bench_common()
    agents = bench.agent_extensions(UP_CALLS)
    db_url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    token = await asyncio.to_thread(bench.load, db_url, bench.operation_doc(agents))
    sip_port, http_port = free_port(), free_port(udp=False)
    sip = ("127.0.0.1", sip_port)
    http_url = f"http://127.0.0.1:{http_port}"
    log = tmp_path / "serve.log"
    proc = _serve(db_url, sip_port, http_port, log)
    uas: Sipp | None = None
    up: Sipp | None = None
    try:
        await _healthy(http_port, proc, log)
        agents_port = free_port(AGENTS_HOST)
        await asyncio.to_thread(bench.register_agents, sip, agents, host=AGENTS_HOST, port=agents_port)
        await asyncio.to_thread(bench.make_ready, http_url, token, agents)
        uas = Sipp("uas", host=AGENTS_HOST, port=agents_port, buff_size=BUFF_SIZE, timeout=140, trace_err=False,
                   workdir=tmp_path / "uas").start()

        ended = await _uac(sip, ENDED_CALLS, 50, tmp_path / "ended").run_async()
        assert (ended.successful, ended.failed) == (ENDED_CALLS, 0), ended.summary()
        await _until(lambda: _count(db_url, s.cdrs) == ENDED_CALLS, 10, "the ended calls' CDRs")
        await _until(lambda: _count(db_url, s.calls, s.calls.c.state != "ended") == 0, 10, "the ended calls closed")
        await _until(lambda: _metric(http_port, "callbridge_b2bua_legs") == 0, 10, "the ended calls' legs gone")

        up = _uac(sip, UP_CALLS, 100, tmp_path / "up", pause_ms=120_000, timeout=140).start()
        await _until(lambda: _count(db_url, s.dialogs) == 2 * UP_CALLS, 40, "1,000 dialogs written through")
        assert _metric(http_port, "callbridge_b2bua_legs") == 2 * UP_CALLS
        open_before = _count(db_url, s.calls, s.calls.c.state != "ended")
        assert open_before == UP_CALLS

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        restarted_at = time.monotonic()
        proc = _serve(db_url, sip_port, http_port, log)
        await _healthy(http_port, proc, log)
        started_in = time.monotonic() - restarted_at

        # nothing live in the records once the node takes traffic; the registrations are back from the database
        assert _count(db_url, s.calls, s.calls.c.state != "ended") == 0
        assert _count(db_url, s.legs, s.legs.c.ended_at.is_(None)) == 0
        assert _count(db_url, s.dialogs) == 0
        assert _metric(http_port, "callbridge_registrations") == UP_CALLS
        assert _count(db_url, s.registrations) == UP_CALLS

        # new calls at once: the agents are ready again by themselves (the restart closed their calls, their
        # registrations are valid), nobody re-registers and nobody calls the API
        await _until(lambda: _ready_and_registered(http_url, token) == UP_CALLS, 10, "every agent ready again")
        fresh = await _uac(sip, NEW_CALLS, 20, tmp_path / "new").run_async()
        assert (fresh.successful, fresh.failed) == (NEW_CALLS, 0), fresh.summary()
        first_call_after = time.monotonic() - restarted_at
        # SIPp is done once its BYEs are answered; the node's writer commits the calls' ends and CDRs a moment
        # later (group commit). The node is SIGKILLed below, so wait for what is asserted to be written first.
        await _until(lambda: _count(db_url, s.cdrs) == ENDED_CALLS + UP_CALLS + NEW_CALLS, 10, "the new calls' CDRs")
        await _until(lambda: _count(db_url, s.calls, s.calls.c.state != "ended") == 0, 10, "the new calls ended")
    finally:
        _kill(proc)
        for peer in (up, uas):
            if peer is not None:
                peer.stop()

    cdrs = _rows(db_url, select(s.cdrs.c.conn_id, s.cdrs.c.hangup_by, s.cdrs.c.answered_at, s.cdrs.c.agents))
    calls = _rows(db_url, select(s.calls.c.conn_id, s.calls.c.state))
    assert len(calls) == ENDED_CALLS + UP_CALLS + NEW_CALLS
    assert {c.state for c in calls} == {"ended"}
    assert {c.conn_id for c in calls} == {c.conn_id for c in cdrs}  # every call has its CDR, and only one
    assert len(cdrs) == len(calls)
    by = [c.hangup_by for c in cdrs]
    assert (by.count("customer"), by.count("system")) == (ENDED_CALLS + NEW_CALLS, UP_CALLS)
    assert all(c.answered_at is not None and len(c.agents) == 1 for c in cdrs)
    assert _count(db_url, s.registrations) == UP_CALLS  # no REGISTER since: the same 500 bindings
    print(f"restart to healthy {started_in:.2f} s; restart to {NEW_CALLS} new calls done {first_call_after:.2f} s")
