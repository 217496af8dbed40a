"""`callbridge serve`, as a real process, removes its trunk's registration when it is stopped with SIGTERM
(RFC 3261 §10.2.2): after the drain, `Node.close` sends the binding's REGISTER with `Expires: 0` (same Call-ID,
CSeq + 1, a 401/407 answered once with the trunk's digest) and waits for the answer at most `unregister_timeout`
(2 s), then the process exits 0. A provider that stops answering (silent, or its socket gone) holds the exit no
longer than that bound.

The provider is the registrar of tests/b2bua/test_trunk_unregister.py (a UDP socket on 127.0.0.3 that checks every
digest itself), here also noting when each REGISTER arrived, to order them against the signal and the exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "b2bua"))
from callnode import load
from test_trunk_unregister import USER, Registrar, digest_fields, digest_is_right, provider, trunk_doc

from callbridge.b2bua.trunks import TrunkRegistrationConfig
from callbridge.sip import Request

pytestmark = pytest.mark.timeout(90)

_SCRIPT = Path(sys.executable).parent / "callbridge"
CALLBRIDGE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "callbridge"]
UNREGISTER_BOUND = TrunkRegistrationConfig().unregister_timeout  # what `serve` uses: it sets no other
DRAIN_SECONDS = 0.0
# `serve`'s drain then waits up to 3 s for the transactions still in its tables (answers to its BYEs and CANCELs)
DRAIN_TRANSACTIONS_BOUND = 3.0
EXIT_MARGIN = 2.0  # start of the close to the end of the interpreter
READY_LINE = "callbridge serving SIP on"


class TimedRegistrar(Registrar):
    """The registrar, noting the loop time each REGISTER arrived at (`arrived[i]` for `requests[i]`)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.arrived: list[float] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.arrived.append(asyncio.get_running_loop().time())
        super().datagram_received(data, addr)

    def arrival(self, request: Request) -> float:
        return self.arrived[next(i for i, r in enumerate(self.requests) if r is request)]


class ServeProcess:
    """`callbridge serve` on loopback (SIP and HTTP on ports the system picks) over `db_url`, its output kept."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, db_url: str, cwd: Path) -> ServeProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
        env.update(CALLBRIDGE_SIP_HOST="127.0.0.1", CALLBRIDGE_SIP_PORT="0", CALLBRIDGE_HTTP_HOST="127.0.0.1",
                   CALLBRIDGE_HTTP_PORT="0", CALLBRIDGE_DATABASE_URL=db_url,
                   CALLBRIDGE_DRAIN_SECONDS=str(DRAIN_SECONDS), CALLBRIDGE_LOG_LEVEL="INFO")
        proc = await asyncio.create_subprocess_exec(*CALLBRIDGE, "serve", stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                    env=env, cwd=cwd)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def until(self, predicate: Any, what: str, timeout: float = 20.0) -> None:
        """Wait for `predicate()`; fails at once, with the output, if the process ended first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            assert self.proc.returncode is None, f"callbridge serve exited ({self.proc.returncode}):\n{self.output}"
            assert loop.time() < deadline, f"timed out waiting for {what}:\n{self.output}"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Kill the process if it still runs, and reap it."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), 10)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reader, 5)


async def registered_serve(tmp_path: Path, registrar: TimedRegistrar, port: int) -> ServeProcess:
    """A database whose operation's trunk registers to the registrar, and `serve` on it, registered and ready for
    signals (they are handled once the ready line is logged, after bootstrap has begun the registration)."""
    db_url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    await asyncio.to_thread(load, db_url, trunk_doc(port))
    serve = await ServeProcess.start(db_url, tmp_path)
    await serve.until(lambda: any(READY_LINE in line for line in serve.lines), what="serve ready")
    await serve.until(lambda: registrar.bound, what="the trunk registered")
    return serve


async def sigterm(serve: ServeProcess, bound: float) -> tuple[float, float]:
    """SIGTERM, then the exit within `bound` seconds: the loop times of both."""
    loop = asyncio.get_running_loop()
    signalled = loop.time()
    serve.proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(serve.proc.wait(), bound)
    except TimeoutError:
        pytest.fail(f"callbridge serve still ran {bound} s after SIGTERM:\n{serve.output}")
    return signalled, loop.time()


@pytest.mark.parametrize("challenge", [None, 401, 407])
async def test_sigterm_removes_the_trunk_binding_before_the_process_exits(tmp_path: Path,
                                                                          challenge: int | None) -> None:
    registrar = TimedRegistrar(challenge_removal=challenge)
    transport, port = await provider(registrar)
    serve: ServeProcess | None = None
    try:
        serve = await registered_serve(tmp_path, registrar, port)
        registrations = list(registrar.requests)
        signalled, exited = await sigterm(serve, DRAIN_SECONDS + DRAIN_TRANSACTIONS_BOUND + UNREGISTER_BOUND +
                                          EXIT_MARGIN)
    finally:
        if serve is not None:
            await serve.stop()
        transport.close()
    assert serve.proc.returncode == 0, serve.output
    assert not registrar.bound, serve.output  # the provider's record of the binding is gone
    removals = registrar.removals()
    assert registrar.requests == registrations + removals  # nothing but the removal after the signal
    assert len(removals) == (1 if challenge is None else 2), serve.output  # a challenge answered once
    first, last = registrations[0], registrations[-1]
    assert {r.call_id for r in removals} == {first.call_id}  # the binding's Call-ID, CSeq + 1 each (§10.2.4)
    assert [r.cseq.number for r in removals] == list(range(last.cseq.number + 1, last.cseq.number + 1 +
                                                          len(removals)))
    assert [r.headers.get_all("Contact") for r in removals] == [first.headers.get_all("Contact")] * len(removals)
    final = removals[-1]
    header = final.headers.get("Authorization" if challenge in (None, 401) else "Proxy-Authorization")
    assert header is not None and digest_fields(header)["username"] == USER
    assert digest_is_right(header, "REGISTER", "trunk-s3cret") and not digest_is_right(header, "REGISTER", "x")
    if challenge is not None:  # answered with the challenge's fresh nonce, not one from before
        earlier = {digest_fields(h)["nonce"] for r in registrar.requests[:-1]
                   for h in (r.headers.get("Authorization"), r.headers.get("Proxy-Authorization")) if h}
        assert digest_fields(header)["nonce"] not in earlier
    assert signalled < registrar.arrival(removals[0]) <= registrar.arrival(final) < exited
    # answered: the exit follows the answer, the unregistration's bound is not waited out
    assert exited - registrar.arrival(final) < UNREGISTER_BOUND - 0.5, serve.output
    assert "unregistration" not in serve.output and "Traceback" not in serve.output, serve.output


@pytest.mark.parametrize("stops", ["silent", "gone"])
async def test_sigterm_with_a_provider_that_stopped_answering_exits_within_the_bound(tmp_path: Path,
                                                                                     stops: str) -> None:
    """`silent`: the registrar's socket still reads and never answers the removal; `gone`: it is closed."""
    registrar = TimedRegistrar(silent_on_removal=True)
    transport, port = await provider(registrar)
    serve: ServeProcess | None = None
    try:
        serve = await registered_serve(tmp_path, registrar, port)
        registrations = list(registrar.requests)
        if stops == "gone":
            transport.close()
        signalled, exited = await sigterm(serve, DRAIN_SECONDS + DRAIN_TRANSACTIONS_BOUND + UNREGISTER_BOUND +
                                          EXIT_MARGIN)
    finally:
        if serve is not None:
            await serve.stop()
        transport.close()
    assert serve.proc.returncode == 0, serve.output
    assert "Traceback" not in serve.output, serve.output
    removals = registrar.removals()
    if stops == "gone":  # nothing to see of the removal: the bound on the exit (above) is the point
        assert removals == []
        return
    assert registrar.requests == registrations + removals
    assert len(removals) >= 1  # sent, and retransmitted while the wait lasted
    assert {r.call_id for r in removals} == {registrations[0].call_id}
    assert {r.cseq.number for r in removals} == {registrations[-1].cseq.number + 1}  # one request, retransmitted
    sent = registrar.arrival(removals[0])
    assert signalled < sent < exited
    # the exit waited out the bound, and little more
    assert UNREGISTER_BOUND - 0.1 <= exited - sent < UNREGISTER_BOUND + EXIT_MARGIN, serve.output
