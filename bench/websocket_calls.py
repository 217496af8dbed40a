"""Calls per second to agents whose phones speak SIP over WebSocket (RFC 7118, what the agent's page is), against
the same agents over UDP, same run, same answering code.

    .venv/bin/python bench/websocket_calls.py              # 10 s steps; records a row in bench/RESULTS.md
    .venv/bin/python bench/websocket_calls.py --quick --no-record

The call is b2bua_cps's: SIPp's built-in uac, from 127.0.0.2 (the trunk's inbound network), dials the DID;
callbridge (`callbridge serve`, SQLite, defences on, the agents' address trusted) offers it to the ready agent idle
longest; the agent answers at once; the caller hangs up at once (INVITE, 180, 200, ACK, BYE, 200 on both legs); ACW
0. The agents are one asyncio process (`AnsweringLoad`, websocket_agents.py's generator): each agent registers with
digest over a flow of its own, a WebSocket connection or a UDP socket, from 127.0.0.6, and answers what callbridge
sends on it (INVITE 200 with an SDP, BYE 200). The ceiling is the same agents over UDP (SIPp has no WebSocket):
the ratio is what the WebSocket path costs, on callbridge's side and on the agents' (a WebSocket message costs
this Python process more than a datagram), not two different answering machines.

Each step prints callbridge's CPU and the agents' process's (this one): on a loaded 2-core machine the limit may be
either, or neither (the CPU others take); read the ratio with them. A step passes as b2bua_cps's do: SIPp counts
every call successful, none failed, it exited by itself, and the calls took at most the step's length x 1.1 by
SIPp's clock (carried at the offered rate). Each ramp stops at its first failing step; the figure is the highest
passing rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from b2bua_cps import place_calls
from common import (
    CallbridgeServe,
    Step,
    agent_extensions,
    best,
    command_line,
    cpu_seconds,
    free_port,
    machine_load,
    make_ready,
    ramp,
    ratio,
    record,
    workdir,
)
from websocket_agents import GENERATOR_HOST, Flow, FlowRegisterLoad

TARGET_RATIO = 0.5
RATES = (50, 100, 200, 300, 400, 500, 600)
QUICK_RATES = (20,)  # the smoke run: one step a transport (each step starts its own node)
_ECHOED = re.compile(rb"^(?:Via|v|From|f|To|t|Call-ID|i|CSeq|Record-Route)[ \t]*:", re.IGNORECASE)
_TO = re.compile(rb"^(?:To|t)[ \t]*:", re.IGNORECASE)


class AnsweringLoad(FlowRegisterLoad):
    """Agents that register (the base class) and answer every call at once on their own flow."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.answered = 0
        self.hung_up = 0

    def received(self, data: bytes, flow: Flow | None = None) -> None:
        if data.startswith(b"SIP/2.0 ") or flow is None:
            super().received(data, flow)
            return
        method = data.split(b" ", 1)[0]
        if method == b"INVITE":
            self.answered += 1
            flow.send(self._response(data, flow, sdp=True))
        elif method in (b"BYE", b"CANCEL", b"OPTIONS"):
            self.hung_up += method == b"BYE"
            flow.send(self._response(data, flow, sdp=False))
        # ACK: nothing to answer

    def _response(self, request: bytes, flow: Flow, *, sdp: bool) -> bytes:
        head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
        lines = [b"SIP/2.0 200 OK"]
        for line in head:
            if not _ECHOED.match(line):
                continue
            if _TO.match(line) and b"tag=" not in line:
                line += b";tag=" + secrets.token_hex(4).encode()
            lines.append(line)
        user = next((m.group(1) for m in re.finditer(rb"sip:([^@;>]+)@", request.split(b"\r\n", 1)[0])), b"agent")
        transport = b";transport=ws" if self.kind == "ws" else b""
        lines.append(b"Contact: <sip:" + user + b"@" + flow.local.encode() + transport + b">")
        body = b""
        if sdp:
            host = GENERATOR_HOST.encode()
            body = (b"v=0\r\no=agent 1 1 IN IP4 " + host + b"\r\ns=-\r\nc=IN IP4 " + host +
                    b"\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
            lines.append(b"Content-Type: application/sdp")
        lines.append(b"Content-Length: " + str(len(body)).encode())
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Agents:
    """The answering agents on their own event loop in a thread, while SIPp places the calls."""

    def __init__(self, target: tuple[str, int], kind: str, users: list[str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.load = AnsweringLoad(target, kind, users, len(users))

    def _run(self, coro, timeout: float = 120.0):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def register(self) -> None:
        self._run(self.load.open())
        run = self._run(self.load.run(500, len(self.load.users), one_each=True, timeout=30))
        if not run.passed:
            raise RuntimeError(f"registering the agents failed: {run}")

    def close(self) -> None:
        try:
            self._run(self.load.close(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def step(kind: str, rate: int, seconds: float, users: list[str]) -> tuple[bool, str]:
    ws_port = free_port("127.0.0.1", udp=False)
    base = workdir(f"wscalls-{kind}-")
    with CallbridgeServe(base / "node", users, trusted=[f"{GENERATOR_HOST}/32"],
                         extra_args=["--sip-ws-port", str(ws_port)]) as node:
        agents = Agents(("127.0.0.1", ws_port) if kind == "ws" else node.sip_address, kind, users)
        try:
            agents.register()
            make_ready(node.http_url, node.token, users)
            cpu, ours, started = cpu_seconds(node.pid), cpu_seconds(os.getpid()), time.monotonic()
            passed, detail = place_calls(node.sip_address, rate, seconds, base)
            took = time.monotonic() - started
            busy, answering = (cpu_seconds(node.pid) - cpu) / took, (cpu_seconds(os.getpid()) - ours) / took
            time.sleep(1.0)
            legs = node.metric("callbridge_b2bua_legs")
        finally:
            agents.close()
    return passed, (f"{detail}, agents answered {agents.load.answered:,} and were hung up {agents.load.hung_up:,}, "
                    f"callbridge {busy * 100:.0f}% of a core, the agents' process {answering * 100:.0f}%, "
                    f"{legs:.0f} legs left 1 s after")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", help="comma-separated rates, the same for both transports")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    seconds = 1.5 if args.quick else args.seconds
    users = agent_extensions(10 if args.quick else args.agents)
    rates = [int(r) for r in args.rates.split(",")] if args.rates else list(QUICK_RATES if args.quick else RATES)
    print(f"websocket_calls: {seconds:g} s steps, {len(users)} agents, load {machine_load()}")
    udp = ramp("UDP", rates, lambda r: step("udp", r, seconds, users))
    ws = ramp("WebSocket", rates, lambda r: step("ws", r, seconds, users))
    ws_cps, udp_cps = best(ws), best(udp)
    print(f"\ncalls/s to agents: WebSocket {ws_cps:,}, UDP {udp_cps:,}, ratio {ratio(ws_cps, udp_cps)} "
          f"(target >= {TARGET_RATIO})")
    if not args.no_record:

        def seen(name: str, steps: list[Step]) -> str:
            passed, failed = [s for s in steps if s.passed], [s for s in steps if not s.passed]
            out = [f"{name} {passed[-1].rate:,}/s: {passed[-1].detail}"] if passed else []
            out += [f"first failing {name} step {s.rate:,}/s: {s.detail}" for s in failed[:1]]
            return "; ".join(out) or f"{name}: no step passed"

        def top(steps: list[Step]) -> str:
            return " (the highest rate tried)" if steps and all(s.passed for s in steps) else ""

        record(f"websocket_calls: SIPp uac -> DID -> queue -> {len(users)} agents each registered over a WebSocket "
               f"connection of its own (one asyncio process answering at once), callbridge serve on SQLite, "
               f"defences on, {seconds:g} s steps, 0 failed calls and done within {seconds * 1.1:g} s; "
               f"{seen('WebSocket', ws)}; {seen('UDP', udp)}; load average {machine_load()}",
               f"{ws_cps:,} calls/s{top(ws)}", f"{udp_cps:,} calls/s{top(udp)} (the same agents over UDP)",
               ratio(ws_cps, udp_cps), f">= {TARGET_RATIO} of UDP",
               command_line("bench/websocket_calls.py", sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
