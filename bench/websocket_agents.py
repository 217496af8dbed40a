"""SIP over WebSocket (RFC 7118) against UDP, same run, same load generator: digest REGISTERs per second, and
WebSocket connections held open by one node with the memory each costs.

    .venv/bin/python bench/websocket_agents.py              # 10 s steps and 10,000 connections; records rows
    .venv/bin/python bench/websocket_agents.py --quick --no-record

The generator (`FlowRegisterLoad`, asyncio, one process) registers agents with MD5 digest (REGISTER, 401,
REGISTER with credentials, 200) over `--flows` flows that it keeps open: WebSocket connections (what browsers
are) or UDP sockets (one per flow, so both sides see the same number of sources), paced at a given rate, users in
turn. The same code drives both transports, so the ratio compares callbridge's WebSocket path with its UDP path, not
two generators. A step passes when every registration ends in 200 (within 10 s of the last one sent), their p99
latency is within `--p99-ms` (1 s: beyond it the node is only queueing, in TCP buffers for WebSocket where UDP
loses datagrams instead, and a UDP phone would retransmit after 500 ms), and the generator kept the pace.
`callbridge serve` runs on SQLite with defences on (the generator's address, the source of both transports' flows,
trusted: thousands of registrations from one address are above the per-source flood limit).

Connections held: `--connections` WebSocket connections each register one agent and stay open (pinged by the
server) for `--hold` seconds; the figure is how many are still open and registered at the end, and the RSS the
node gained per connection. The ceiling beside it is the same number of agents registered over UDP in the same run
(bindings without connections): the difference is what a connection costs.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    CALL_ID_HEADER,
    CHALLENGE_HEADER,
    DIGEST_PARAM,
    DOMAIN,
    CallbridgeServe,
    Step,
    agent_extensions,
    best,
    command_line,
    free_port,
    machine_load,
    md5_hex,
    ramp,
    ratio,
    record,
    rss_kb,
    workdir,
)
from websockets.asyncio.client import ClientConnection, connect

GENERATOR_HOST = "127.0.0.6"
TARGET_RATIO = 0.5
RATES = (250, 500, 1000, 1500, 2000, 3000)
QUICK_RATES = (100,)  # the smoke run: one step a transport (each step starts its own node)

@dataclass
class Run:
    rate: float
    count: int
    p99_limit: float = 1.0  # seconds
    ok: int = 0
    failed: dict[int, int] = field(default_factory=dict)
    lost: int = 0
    send_span: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def on_pace(self) -> bool:
        return self.count <= 1 or self.send_span <= (self.count / self.rate) * 1.05 + 0.05

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies) or [0.0]
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    @property
    def passed(self) -> bool:
        return (self.ok == self.count and not self.failed and not self.lost and self.on_pace
                and self.p99 <= self.p99_limit)

    def __str__(self) -> str:
        pace = "" if self.on_pace else " (generator behind pace)"
        slow = f" (above {self.p99_limit * 1000:g} ms)" if self.p99 > self.p99_limit else ""
        return (f"{self.ok:,}/{self.count:,} ok, failed {self.failed or 0}, {self.lost} lost, "
                f"p99 {self.p99 * 1000:.1f} ms{slow}{pace}")


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, on_message, flow: Flow) -> None:  # type: ignore[no-untyped-def]
        self.on_message = on_message
        self.flow = flow

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_message(data, self.flow)


class Flow:
    """One phone's flow to the registrar: a WebSocket connection, or a UDP socket of its own."""

    def __init__(self, load: FlowRegisterLoad) -> None:
        self.load = load
        self.ws: ClientConnection | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.local = ""
        self.reader: asyncio.Task[None] | None = None

    async def open(self, kind: str, registrar: tuple[str, int]) -> None:
        if kind == "ws":
            # from the generator's own (trusted) address, as the UDP flows: from 127.0.0.1 the flood defence
            # bans the generator after its first few hundred registrations
            self.ws = await connect(f"ws://{registrar[0]}:{registrar[1]}/", subprotocols=["sip"],  # type: ignore
                                    ping_interval=None, compression=None, user_agent_header=None,
                                    local_addr=(GENERATOR_HOST, 0))
            self.local = f"{secrets.token_hex(6)}.invalid"
            self.reader = asyncio.get_running_loop().create_task(self._read())
        else:
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((GENERATOR_HOST, 0))
            transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self.load.received, self), sock=sock)
            self.udp = transport
            host, port = sock.getsockname()[:2]
            self.local = f"{host}:{port}"

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            self.load.received(message.encode() if isinstance(message, str) else message, self)

    def send(self, data: bytes) -> None:
        if self.ws is not None:
            asyncio.get_running_loop().create_task(self.ws.send(data.decode()))
        elif self.udp is not None:
            self.udp.sendto(data, self.load.registrar)

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.ws.state.name == "OPEN"

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
        if self.udp is not None:
            self.udp.close()


@dataclass
class _Pending:
    user: str
    flow: Flow
    started: float


class FlowRegisterLoad:
    def __init__(self, registrar: tuple[str, int], kind: str, users: list[str], flows: int) -> None:
        self.registrar, self.kind, self.users = registrar, kind, users
        self.flows = [Flow(self) for _ in range(flows)]
        self._ha1 = {u: md5_hex(f"{u}:{DOMAIN}:secret-{u}") for u in users}
        self._ha2 = md5_hex(f"REGISTER:sip:{DOMAIN}")
        self._pending: dict[bytes, _Pending] = {}
        self._run: Run | None = None
        self._done = asyncio.Event()
        self._serial = 0

    async def open(self, batch: int = 200) -> None:
        for start in range(0, len(self.flows), batch):
            await asyncio.gather(*(f.open(self.kind, self.registrar) for f in self.flows[start:start + batch]))

    async def close(self) -> None:
        await asyncio.gather(*(f.close() for f in self.flows), return_exceptions=True)

    def _register(self, flow: Flow, user: str, call_id: str, cseq: int, authorization: str | None) -> bytes:
        self._serial += 1
        transport = "WS" if self.kind == "ws" else "UDP"
        lines = [f"REGISTER sip:{DOMAIN} SIP/2.0",
                 f"Via: SIP/2.0/{transport} {flow.local};branch=z9hG4bK{self._serial:x}{secrets.token_hex(3)};rport",
                 f"From: <sip:{user}@{DOMAIN}>;tag={cseq}x{self._serial}", f"To: <sip:{user}@{DOMAIN}>",
                 f"Call-ID: {call_id}", f"CSeq: {cseq} REGISTER",
                 f"Contact: <sip:{user}@{flow.local}" + (";transport=ws>" if self.kind == "ws" else ">"),
                 "Max-Forwards: 70", "Expires: 3600"]
        if authorization is not None:
            lines.append(f"Authorization: {authorization}")
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    def _authorization(self, user: str, data: bytes) -> str | None:
        for found in CHALLENGE_HEADER.finditer(data):
            params = {m.group(1).lower().decode(): (m.group(2) if m.group(2) is not None else m.group(3)).decode()
                      for m in DIGEST_PARAM.finditer(found.group(1))}
            if params.get("algorithm", "MD5").upper() != "MD5" or "nonce" not in params:
                continue
            nonce, cnonce = params["nonce"], secrets.token_hex(4)
            response = md5_hex(f"{self._ha1[user]}:{nonce}:00000001:{cnonce}:auth:{self._ha2}")
            opaque = f', opaque="{params["opaque"]}"' if "opaque" in params else ""
            return (f'Digest username="{user}", realm="{params.get("realm", DOMAIN)}", nonce="{nonce}", '
                    f'uri="sip:{DOMAIN}", response="{response}", algorithm=MD5, qop=auth, nc=00000001, '
                    f'cnonce="{cnonce}"{opaque}')
        return None

    def received(self, data: bytes, flow: Flow | None = None) -> None:
        """A message from the registrar on `flow` (responses to our REGISTERs; requests are another load's)."""
        found = CALL_ID_HEADER.search(data)
        if found is None or not data.startswith(b"SIP/2.0 "):
            return
        key = found.group(1).strip()
        entry = self._pending.get(key)
        run = self._run
        if entry is None or run is None:
            return
        status = int(data[8:11])
        if status < 200:
            return
        if status == 401 and b"\r\nCSeq: 1 " in data:
            authorization = self._authorization(entry.user, data)
            if authorization is not None:
                entry.flow.send(self._register(entry.flow, entry.user, key.decode(), 2, authorization))
                return
        del self._pending[key]
        if status == 200:
            run.ok += 1
            run.latencies.append(time.perf_counter() - entry.started)
        else:
            run.failed[status] = run.failed.get(status, 0) + 1
        if run.ok + sum(run.failed.values()) == run.count:
            self._done.set()

    async def run(self, rate: float, count: int, *, timeout: float = 10.0, one_each: bool = False,
                  p99_limit: float = 1.0) -> Run:
        """`count` registrations at `rate` per second; `one_each`: flow i registers user i (connections held)."""
        run = self._run = Run(rate, count, p99_limit)
        self._done.clear()
        run_id = secrets.token_hex(3)
        start = time.perf_counter()
        sent = 0
        while sent < count:
            due = min(count, int((time.perf_counter() - start) * rate) + 1)
            while sent < due:
                flow = self.flows[sent % len(self.flows)]
                user = self.users[sent] if one_each else self.users[sent % len(self.users)]
                call_id = f"{run_id}-{sent}"
                self._pending[call_id.encode()] = _Pending(user, flow, time.perf_counter())
                flow.send(self._register(flow, user, call_id, 1, None))
                sent += 1
            await asyncio.sleep(0.001)
        run.send_span = time.perf_counter() - start
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            run.lost = len(self._pending)
        self._pending.clear()
        return run


async def rate_step(kind: str, rate: int, seconds: float, users: list[str], flows: int,
                    p99_limit: float) -> tuple[bool, str]:
    extra = ["--sip-ws-port", str(free_port("127.0.0.1", udp=False))]
    with CallbridgeServe(workdir(f"ws-{kind}-"), users, trusted=[f"{GENERATOR_HOST}/32"], extra_args=extra) as node:
        target = ("127.0.0.1", int(extra[1])) if kind == "ws" else node.sip_address
        load = FlowRegisterLoad(target, kind, users, flows)
        await load.open()
        try:
            run = await load.run(rate, max(1, int(rate * seconds)), p99_limit=p99_limit)
        finally:
            await load.close()
    return run.passed, str(run)


async def held(kind: str, count: int, hold: float) -> tuple[int, float, str]:
    """Agents registered (over `count` WebSocket connections, or over UDP), held `hold` s: (still registered and
    open, KiB the node gained per agent, detail)."""
    users = agent_extensions(count)
    port = free_port("127.0.0.1", udp=False)
    with CallbridgeServe(workdir(f"ws-held-{kind}-"), users, trusted=[f"{GENERATOR_HOST}/32"],
                         extra_args=["--sip-ws-port", str(port)]) as node:
        time.sleep(1.0)
        before = rss_kb(node.pid)
        target = ("127.0.0.1", port) if kind == "ws" else node.sip_address
        load = FlowRegisterLoad(target, kind, users, count if kind == "ws" else 50)
        opened = time.monotonic()
        await load.open()
        opened_s = time.monotonic() - opened
        try:
            run = await load.run(500, count, one_each=kind == "ws", timeout=30)
            await asyncio.sleep(hold)
            after = rss_kb(node.pid)
            still = sum(f.is_open for f in load.flows) if kind == "ws" else run.ok
            registered = node.metric("callbridge_registrations")
        finally:
            await load.close()
    per = (after - before) / max(1, count)
    return still if run.passed else 0, per, (
        f"{run}; opened in {opened_s:.1f} s; {still:,} open after {hold:g} s; registrations metric {registered}; "
        f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", help="comma-separated rates, the same for both transports")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--flows", type=int, default=200, help="flows (connections or sockets) of the rate steps")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument("--p99-ms", type=float, default=1000.0, help="a rate step's p99 latency bound")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    users = agent_extensions(20 if args.quick else args.users)
    flows = 10 if args.quick else args.flows
    connections = 200 if args.quick else args.connections
    hold = 1.0 if args.quick else args.hold
    rates = [int(r) for r in args.rates.split(",")] if args.rates else list(QUICK_RATES if args.quick else RATES)
    print(f"websocket_agents: {seconds:g} s steps, {len(users)} users over {flows} flows, load {machine_load()}")
    limit = args.p99_ms / 1000
    udp = ramp("UDP", rates, lambda r: asyncio.run(rate_step("udp", r, seconds, users, flows, limit)))
    ws = ramp("WebSocket", rates, lambda r: asyncio.run(rate_step("ws", r, seconds, users, flows, limit)))
    ws_rps, udp_rps = best(ws), best(udp)
    print(f"\nREGISTERs/s: WebSocket {ws_rps:,}, UDP {udp_rps:,}, ratio {ratio(ws_rps, udp_rps)} "
          f"(target >= {TARGET_RATIO})")
    ws_open, ws_kib, ws_detail = asyncio.run(held("ws", connections, hold))
    udp_ok, udp_kib, udp_detail = asyncio.run(held("udp", connections, hold))
    print(f"held: WebSocket {ws_open:,} connections, {ws_kib:.1f} KiB each ({ws_detail})")
    print(f"      UDP {udp_ok:,} registrations, {udp_kib:.1f} KiB each ({udp_detail})")
    if not args.no_record:
        command = command_line("bench/websocket_agents.py", sys.argv[1:])

        def top(steps: list[Step]) -> str:
            return " (the highest rate tried)" if steps and all(s.passed for s in steps) else ""

        def steps_seen(name: str, steps: list[Step]) -> str:
            """The best step's and the first failing step's figures (their latencies say how loaded it was)."""
            passed, failed = [s for s in steps if s.passed], [s for s in steps if not s.passed]
            seen = [f"{name} {passed[-1].rate:,}/s: {passed[-1].detail}"] if passed else []
            return "; ".join(seen + [f"first failing {name} step {s.rate:,}/s: {s.detail}" for s in failed[:1]])

        record(f"websocket_agents REGISTER rate: digest REGISTERs (401 then 200) of {len(users):,} users over "
               f"{flows} WebSocket connections, one asyncio generator, callbridge serve on SQLite, defences on, "
               f"{seconds:g} s steps, a step passing when every REGISTER got its 200, p99 within "
               f"{args.p99_ms:g} ms; {steps_seen('WebSocket', ws)}; {steps_seen('UDP', udp)}; "
               f"load average {machine_load()}",
               f"{ws_rps:,} REGISTERs/s{top(ws)}", f"{udp_rps:,} REGISTERs/s{top(udp)} (UDP, same generator, "
               f"{flows} sockets)", ratio(ws_rps, udp_rps), f">= {TARGET_RATIO} of UDP", command)
        record(f"websocket_agents connections held: {connections:,} WebSocket connections, each registering one "
               f"agent, held {hold:g} s with the server's pings; {ws_detail}; UDP: {udp_detail}",
               f"{ws_open:,} connections, {ws_kib:.1f} KiB each", f"{udp_kib:.1f} KiB per UDP registration",
               f"{ws_kib - udp_kib:+.1f} KiB per connection", ">= 10,000 connections", command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
