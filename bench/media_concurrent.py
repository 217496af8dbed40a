"""Concurrent anchored calls with RTP both ways: the most calls held with less than 0.1% packet loss at the phones,
callbridge's and rtpengine's CPU per call, and the same load phone to phone without the relay as the ceiling, same
run (issue #13, "Benchmarks").

    .venv/bin/python bench/media_concurrent.py           # 250, 500, 750 calls held 60 s; records a row
    .venv/bin/python bench/media_concurrent.py --quick --no-record

A step holds N calls: `callbridge serve --rtpengine` with one userspace rtpengine (`--table=-1`, as the tests start
it), bench/b2bua_cps.py's production path (SIPp uac from the trunk's network -> DID -> queue -> N agents registered
with digest at a SIPp uas), the calls placed at `--rate` and held. The SIPp scenarios (bench/scenarios/media_*.xml)
are the built-in uac and uas except that their SDP names the RTP sockets of this script's load generator: one socket
for every customer, one for every agent. Once the N calls are up, the relay's ports of each call are read from the
relay itself (ng `list` and `query`: each tag's RTP stream and the address of its party), and the generator, a
process of its own, sends G.711 RTP (160-byte payloads, continuous sequence numbers and timestamps per stream, RFC
3550) every 20 ms from each customer toward its call's relay port and from each agent toward its own: 50 packets/s
each way per call, for `--seconds`. It counts what arrives at each side; loss = 1 - received / sent, each way, over
all but the first second (whose packets are counted apart by sequence number and printed, not judged).

A step passes when the generator kept its pace (it sent at least 99% of the packets due), every call was up, and
the loss is under 0.1% both ways. The figure is the highest N that passed; the ceiling is the same generator at the
same N with each customer's socket sending straight to the agents' socket and back (the phones without the relay),
its highest passing N: what this machine carries at all with this generator. CPU of callbridge and rtpengine over
the RTP window, per call (percent of one core), is printed for each step.
"""

from __future__ import annotations

import argparse
import multiprocessing
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    AGENTS_HOST,
    BUFF_SIZE,
    DID,
    TRUNK_HOST,
    CallbridgeServe,
    Sipp,
    Step,
    agent_extensions,
    best,
    command_line,
    cpu_seconds,
    free_port,
    machine_load,
    make_ready,
    ratio,
    record,
    register_agents,
    relay_for,
    workdir,
)

from callbridge.media.bencode import decode, encode
from peers.rtpengine import Rtpengine
from peers.sipp import parse_stat_file

TARGET_CALLS = 500
MAX_LOSS = 0.001
PACE = 0.99  # the generator must send this share of the packets due, or the step says nothing about the relay
STEPS = (250, 500, 750)
QUICK = {"steps": (20, 40), "seconds": 5.0}
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
HEADER = struct.Struct("!BBHII")
# The relay sends on while the generator process waits for a core (the machine is shared): its receiving sockets
# get room for seconds of packets, so that the loss measured is the relay's, not the generator's.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
RECEIVE_BUFFER = 64 * 1024 * 1024
PAYLOAD = b"\xff" * 160  # PCMU silence, 20 ms
# The first second of packets is counted apart (and printed), not judged: a stream's first packets meet the relay
# while it learns where each party is, and the generator's first sends meet cold caches.
WARM_UP = 50
# Relay ports a call holds: an RTP/RTCP pair for the customer, for the queue's stand-in (b2bua/waiting.py: it stays
# in the relay's call until the delete) and for the agent, with room to spare (rtpengine skips ports in use).
PORTS_PER_CALL = 8


# -- the RTP load generator (a process of its own) ----------------------------------------------------------------
def generate(customer: tuple[str, int], agent: tuple[str, int], toward_customer: list[tuple[str, int]],
             toward_agent: list[tuple[str, int]], seconds: float, out: Any) -> None:
    """Every 20 ms, one packet from the customers' socket to each of `toward_customer` (where each call's customer
    sends) and one from the agents' socket to each of `toward_agent`; count what each socket receives."""
    socks = []
    for address in (customer, agent):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # past net.core.rmem_max when allowed (CAP_NET_ADMIN): seconds of packets while the generator waits
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFF_SIZE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFF_SIZE)
        sock.bind(address)
        sock.setblocking(False)
        socks.append(sock)
    c_sock, a_sock = socks
    streams = [(c_sock, dest, 0x10000 + i) for i, dest in enumerate(toward_customer)]
    streams += [(a_sock, dest, 0x20000 + i) for i, dest in enumerate(toward_agent)]
    # counted apart: the packets of the first WARM_UP ticks (by their sequence number), and all the others
    received = {c_sock.fileno(): [0, 0], a_sock.fileno(): [0, 0]}
    sent = {c_sock.fileno(): [0, 0], a_sock.fileno(): [0, 0]}
    packet = bytearray(HEADER.size + len(PAYLOAD))
    packet[HEADER.size:] = PAYLOAD
    ticks = int(seconds / 0.02)
    start = time.monotonic()
    late = 0
    for tick in range(ticks):
        seq, stamp = (1000 + tick) & 0xFFFF, (tick * 160) & 0xFFFFFFFF
        main = int(tick >= WARM_UP)
        for sock, dest, ssrc in streams:
            HEADER.pack_into(packet, 0, 0x80, 0, seq, stamp, ssrc)
            try:
                sock.sendto(packet, dest)
                sent[sock.fileno()][main] += 1
            except BlockingIOError:
                pass  # the socket's buffer is full: not sent, so not counted
        deadline = start + (tick + 1) * 0.02
        if time.monotonic() > deadline:
            late += 1
        _drain(socks, received, deadline)
    _drain(socks, received, time.monotonic() + 1.0)  # what is still on its way
    c, a = c_sock.fileno(), a_sock.fileno()
    out.put({"customers_sent": sent[c][1], "agents_sent": sent[a][1], "customers_received": received[c][1],
             "agents_received": received[a][1], "due": (ticks - WARM_UP) * len(toward_customer),
             "warm_up_sent": sent[c][0] + sent[a][0], "warm_up_received": received[c][0] + received[a][0],
             "late_ticks": late, "ticks": ticks,
             "took": time.monotonic() - start})
    for sock in socks:
        sock.close()


def _drain(socks: list[socket.socket], received: dict[int, list[int]], deadline: float) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select(socks, [], [], left)
        for sock in ready:
            fd = sock.fileno()
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                received[fd][int(int.from_bytes(data[2:4], "big") >= 1000 + WARM_UP)] += 1


def run_generator(customer: tuple[str, int], agent: tuple[str, int], toward_customer: list[tuple[str, int]],
                  toward_agent: list[tuple[str, int]], seconds: float,
                  during: Callable[[], None] = lambda: None) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=generate, args=(customer, agent, toward_customer, toward_agent, seconds, out))
    proc.start()
    during()
    result = out.get(timeout=seconds + 60)
    proc.join(10)
    return dict(result)


def verdict(result: dict[str, Any]) -> tuple[bool, str]:
    due = result["due"]
    loss_to_agents = 1 - result["agents_received"] / max(1, result["customers_sent"])
    loss_to_customers = 1 - result["customers_received"] / max(1, result["agents_sent"])
    paced = min(result["customers_sent"], result["agents_sent"]) >= PACE * due
    passed = paced and max(loss_to_agents, loss_to_customers) < MAX_LOSS
    return passed, (f"loss customer->agent {loss_to_agents * 100:.3f}%, agent->customer {loss_to_customers * 100:.3f}% "
                    f"({result['customers_sent']:,} and {result['agents_sent']:,} sent of {due:,} due each way"
                    f"{'' if paced else ', generator fell behind'}; {result['late_ticks']} of {result['ticks']} "
                    f"20 ms ticks late; first second, not judged: {result['warm_up_received']:,} of "
                    f"{result['warm_up_sent']:,} arrived)")


# -- the relay's ports of each call, from the relay ---------------------------------------------------------------
def udp_receive_drops() -> int:
    """The kernel's count of UDP datagrams dropped for a full socket buffer (RcvbufErrors), the whole machine's."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


def relay_ports(relay: Rtpengine) -> tuple[list[tuple[str, int]], list[tuple[str, int]], dict[str, int]]:
    """For every call on the relay: the relay's address its customer sends to, and the one its agent sends to; and
    the RTP packets the relay has received from each side so far (by the party's address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5.0)
    count = 0

    def ng(message: dict[str, Any]) -> dict[str, Any]:
        nonlocal count
        count += 1
        cookie = b"bench%d_%d " % (time.monotonic_ns(), count)  # never reused: rtpengine caches replies by cookie
        sock.sendto(cookie + encode(message), relay.ng_address)
        while True:
            data, _ = sock.recvfrom(1 << 20)
            if data.startswith(cookie):
                reply = decode(data[len(cookie):])
                assert isinstance(reply, dict)
                return reply

    customers, agents = [], []
    received = {TRUNK_HOST: 0, AGENTS_HOST: 0}
    try:
        calls = ng({"command": "list", "limit": 100_000}).get("calls", [])
        for call_id in calls:
            sides: dict[str, int] = {}
            for monologue in ng({"command": "query", "call-id": call_id}).get("tags", {}).values():
                for media in monologue.get("medias", []):
                    for stream in media.get("streams", []):
                        if b"RTP" in stream.get("flags", []):
                            party = stream["endpoint"]["address"].decode()
                            sides[party] = stream["local port"]
                            if party in received:
                                received[party] += stream.get("stats", {}).get("packets", 0)
            if TRUNK_HOST in sides and AGENTS_HOST in sides:
                customers.append((relay.host, sides[TRUNK_HOST]))
                agents.append((relay.host, sides[AGENTS_HOST]))
    finally:
        sock.close()
    return customers, agents, received


def current_calls(uac: Sipp) -> int:
    value = parse_stat_file(uac.stat_file).get("CurrentCall", "")
    return int(value) if value.strip().isdigit() else 0


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


# -- a step with the relay, and one without -----------------------------------------------------------------------
def relay_step(calls: int, rate: int, seconds: float, relay_args: tuple[str, ...] = ()) -> tuple[bool, str]:
    base = workdir("media-concurrent-")
    agents = agent_extensions(calls)
    customer = (TRUNK_HOST, free_port(TRUNK_HOST, tcp=False))
    agent = (AGENTS_HOST, free_port(AGENTS_HOST, tcp=False))
    ramp_seconds = calls / rate
    hold_ms = int((ramp_seconds + seconds + 20) * 1000)  # all up, the ports read, the RTP window, a margin
    with relay_for(base / "rtpengine", PORTS_PER_CALL * calls + 200, relay_args) as relay, \
            CallbridgeServe(base / "node", agents, trusted=[f"{AGENTS_HOST}/32"],
                            extra_args=["--rtpengine", f"udp:{relay.host}:{relay.ng_port}"]) as node:
        port = free_port(AGENTS_HOST)
        register_agents(node.sip_address, agents, host=AGENTS_HOST, port=port)
        make_ready(node.http_url, node.token, agents)
        timeout = ramp_seconds * 2 + seconds + 90
        answering = Sipp(str(SCENARIOS / "media_agent.xml"), host=AGENTS_HOST, port=port, buff_size=BUFF_SIZE,
                         timeout=timeout, trace_err=False, workdir=base / "uas",
                         keys={"rtp_port": str(agent[1])}, extra_args=["-mi", AGENTS_HOST]).start()
        time.sleep(0.3)
        uac = Sipp(str(SCENARIOS / "media_customer.xml"), remote=node.sip_address, host=TRUNK_HOST, service=DID,
                   calls=calls, rate=rate, limit=calls, buff_size=BUFF_SIZE, timeout=timeout, trace_err=False,
                   workdir=base / "uac", keys={"rtp_port": str(customer[1])},
                   extra_args=["-mi", TRUNK_HOST, "-d", str(hold_ms)]).start()
        try:
            up = wait_for(lambda: (node.metric("callbridge_b2bua_legs") or 0) >= 2 * calls
                          and current_calls(uac) >= calls, ramp_seconds * 2 + 20)
            toward_customer, toward_agent, _ = relay_ports(relay)
            drops = udp_receive_drops()
            held = len(toward_customer)
            assert relay.pid is not None
            cpu: dict[str, float] = {}

            def measure() -> None:
                cpu["node"], cpu["relay"], cpu["at"] = cpu_seconds(node.pid), cpu_seconds(relay.pid), time.monotonic()

            result = run_generator(customer, agent, toward_customer, toward_agent, seconds, measure)
            took = time.monotonic() - cpu["at"]
            node_cpu = (cpu_seconds(node.pid) - cpu["node"]) / took
            relay_cpu = (cpu_seconds(relay.pid) - cpu["relay"]) / took
            drops = udp_receive_drops() - drops
            _, _, at_relay = relay_ports(relay)  # what reached the relay from each side (the generator's first
            # packets included; nothing else sends RTP)
            still_up = current_calls(uac)
            done = uac.wait()
        finally:
            answering.stop()
    passed, detail = verdict(result)
    passed = passed and up and held == calls and still_up >= calls and done.failed == 0
    sent_c = result["customers_sent"] + result["warm_up_sent"] // 2
    sent_a = result["agents_sent"] + result["warm_up_sent"] // 2
    detail += (f"; the relay received {at_relay[TRUNK_HOST]:,} of {sent_c:,} customer packets and "
               f"{at_relay[AGENTS_HOST]:,} of {sent_a:,} agent packets; UDP receive-buffer drops on the whole "
               f"machine meanwhile {drops:,}")
    per_call = f"{node_cpu * 100 / max(1, held):.3f}% and {relay_cpu * 100 / max(1, held):.3f}%"
    return passed, (f"{held:,} calls on the relay (all up: {up}, {still_up:,} still up after the RTP window); "
                    f"{detail}; CPU callbridge {node_cpu * 100:.0f}%, rtpengine {relay_cpu * 100:.0f}% of a core, "
                    f"per call {per_call}; uac {done.successful:,} ok, {done.failed:,} failed")


def direct_step(calls: int, seconds: float) -> tuple[bool, str]:
    customer = (TRUNK_HOST, free_port(TRUNK_HOST, tcp=False))
    agent = (AGENTS_HOST, free_port(AGENTS_HOST, tcp=False))
    result = run_generator(customer, agent, [agent] * calls, [customer] * calls, seconds)
    return verdict(result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", help="numbers of calls, comma-separated (each ramp stops at its first failure)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long RTP flows in a step")
    parser.add_argument("--rate", type=int, default=50, help="calls/s while setting a step's calls up")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (20 and 40 calls, 5 s)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument("--relay-args", default="", help="more rtpengine options, space-separated "
                        "(e.g. --num-threads=4)")
    args = parser.parse_args()
    seconds = QUICK["seconds"] if args.quick else args.seconds
    relay_args = tuple(args.relay_args.split())
    steps = [int(s) for s in args.steps.split(",")] if args.steps else list(QUICK["steps"] if args.quick else STEPS)
    print(f"media_concurrent: {steps} calls, RTP 50 packets/s each way per call for {seconds:g} s, "
          f"load average {machine_load()}")
    ceiling = calls_ramp("direct", steps, lambda n: direct_step(n, seconds))
    relayed = calls_ramp("relay", steps, lambda n: relay_step(n, args.rate, seconds, relay_args))
    figure, top = best(relayed), best(ceiling)
    print(f"\nthrough the relay {figure:,} calls; phone to phone {top:,} calls; ratio {ratio(figure, top)}; "
          f"target {TARGET_CALLS}: {'met' if figure >= TARGET_CALLS else 'NOT met'}")
    if not args.no_record:
        notes = "; ".join(f"{s.rate:,} calls {'PASS' if s.passed else 'FAIL'}: {s.detail}" for s in relayed)
        options = " " + " ".join(relay_args) if relay_args else ""
        tops = "; ".join(f"{s.rate:,} {'PASS' if s.passed else 'FAIL'}: {s.detail}" for s in ceiling)
        record(f"media_concurrent: anchored calls (SIPp uac -> DID -> queue -> agents at a SIPp uas, callbridge serve "
               f"on SQLite, defences on, one userspace rtpengine{options}), RTP 50 packets/s each way per call for "
               f"{seconds:g} s from one Python generator, loss < 0.1% at the phones; {notes}; without the relay: "
               f"{tops}; load average {machine_load()}",
               f"{figure:,} calls", f"{top:,} calls{' (the highest tried)' if _all(ceiling) else ''} (the same "
               f"generator phone to phone, no relay)", ratio(figure, top), f">= {TARGET_CALLS} calls",
               command_line("bench/media_concurrent.py", sys.argv[1:]))
    return 0


def calls_ramp(target: str, counts: list[int], run_step: Callable[[int], tuple[bool, str]]) -> list[Step]:
    """`common.ramp` with numbers of calls rather than rates: stops at the first failing step."""
    out = []
    for count in counts:
        passed, detail = run_step(count)
        out.append(Step(target, count, passed, detail))
        print(f"  {target:7} {count:6,} calls  {'PASS' if passed else 'FAIL'}  {detail}", flush=True)
        if not passed:
            break
    return out


def _all(steps: list[Step]) -> bool:
    return bool(steps) and all(s.passed for s in steps)


if __name__ == "__main__":
    sys.exit(main())
