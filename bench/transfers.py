"""Blind transfers of live calls through the agentbox endpoint, at a steady rate, on the production path.

What runs (all on loopback):
- callbridge (`callbridge serve`'s `run`, SQLite write-through, tokens, digest, destination policy) in a child
  process; it counts the transfer outcomes and who ended each call, and writes them to a file when it stops.
- the agents: `callbridge.phone`s in a child process of their own, one per agent, registered with digest,
  answering at once (an answer to the customer's offer, or an offer to an offer-less transfer INVITE). SIPp cannot
  be the agents: its `[authentication]` does not take the username from an injection field here, and callbridge
  sends an agent's INVITEs to where its REGISTER came from;
- the customers: a SIPp uac behind the trunk (127.0.0.2, transfer_customer.xml) calls the DID; each call is
  answered by an agent, accepts the two re-INVITEs of its transfer and hangs up a while later. A customer whose
  call ends otherwise is lost (SIPp counts the call failed).

Then `--calls` calls are up (agents 1..N answered them), the targets N+1..2N are made ready, and `transfer`
requests (agent i -> extension N+i) are sent at `--rate` per second, while `change_status` requests toggle
`--status-agents` other agents between an auxiliary state and ready in the same run. Printed: completed
transfers/s (from the first request to the last target answered), transfer API latency p50/p99, change_status
p99 in the same run, and customers lost. `--record` appends a row to bench/RESULTS.md.

    .venv/bin/python bench/transfers.py --calls 2000 --rate 300 [--record]

Requested at exactly 200/s, 2,000 transfers cannot complete faster than 2,000 / (10 s + the last one's time to
answer), a hair under 200/s whatever the server does; the default rate (300/s) asks for more than the target
(250/s, issue #12) so the figure shows what the server completes, not what the driver sent. The server's CPU per
transfer is printed too: on a shared machine it moves less with the other load than the rate does.
    .venv/bin/python bench/transfers.py --quick        # tiny mode (tests/bench)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "bench" / "scenarios"
HOST = "127.0.0.1"
CUSTOMER_HOST = "127.0.0.2"
OPERATION = "0042"
DOMAIN = "0042.callbridge.bench"
DID = "6000"
AUX = "2"
ENDPOINT = "/api/v2/agentbox.php"
TOKENS = 8
TARGET_PER_SECOND = 250.0  # issue #12: completed transfers/s, with 0 customers lost
TOKEN_LIMIT = 4  # requests in flight per token (the contract's limit is configurable; 2 by default)


def extension(i: int) -> str:
    return str(10000 + i)


def password(i: int) -> str:
    return f"bench-pw-{i}"


# -- the agents' phones (child process) ---------------------------------------------------------------------------
def agents_process(sip_host: str, sip_port: int, count: int) -> None:
    from callbridge.phone import Phone

    async def main() -> None:
        phones: list[Phone] = []
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        for first in range(1, count + 1, 100):
            batch = [await Phone.start(host=HOST, user=extension(i), domain=DOMAIN, password=password(i),
                                       answer="auto", history=0, name=f"agent-{extension(i)}")
                     for i in range(first, min(count, first + 99) + 1)]
            phones += batch
            await asyncio.gather(*(p.register((sip_host, sip_port), expires=3600) for p in batch))
        print("READY", flush=True)
        await stop.wait()
        for phone in phones:
            await phone.close()

    asyncio.run(main())


# -- the server (child process) ----------------------------------------------------------------------------------
def serve(http_port: int, database_url: str, summary: Path) -> None:
    from callbridge.bootstrap import Node
    from callbridge.callcontrol.events import CallEnded, TransferCompleted, TransferFailed
    from callbridge.cli.serve import run
    from callbridge.config import Settings

    counts: dict[str, Any] = {"completed": 0, "failed": 0, "failures": {}, "ended_by": {}, "last_completed": 0.0}

    def on_event(event: Any) -> None:
        if isinstance(event, TransferCompleted):
            counts["completed"] += 1
            counts["last_completed"] = time.time()
        elif isinstance(event, TransferFailed):
            counts["failed"] += 1
            counts["failures"][event.outcome] = counts["failures"].get(event.outcome, 0) + 1
        elif isinstance(event, CallEnded):
            counts["ended_by"][event.hangup_by] = counts["ended_by"].get(event.hangup_by, 0) + 1

    # Every agent's phone is on 127.0.0.1 here (in production each phone has an address of its own): the flood
    # defence's per-source limit would throttle 4,000 phones behind one address, so 127.0.0.1 is a trusted network,
    # as an SBC in front of callbridge would be. The customers' trunk (127.0.0.2) is exempt as any trunk is.
    settings = Settings(sip_host=HOST, sip_port=0, http_host=HOST, http_port=http_port, database_url=database_url,
                        node_id="bench-1", drain_seconds=0.0, log_level="WARNING",
                        trusted_networks=(f"{HOST}/32",))

    def ready(node: Node) -> None:
        node.events.add_listener(on_event)
        host, port = node.sip_address
        print(f"READY {host} {port}", flush=True)

    asyncio.run(run(settings, ready=ready))
    summary.write_text(json.dumps(counts))


class Probe(Protocol):
    """What another benchmark watches while this one's transfers run (bench/event_log.py): webhook targets for the
    operation file, and hooks at the start and end of the transfer phase and once the customers are done."""

    webhooks: list[dict[str, Any]]

    async def before(self, database_url: str) -> None: ...

    async def after(self, database_url: str) -> None: ...

    async def finish(self, database_url: str) -> None: ...


def make_database(directory: Path, agents: int,
                  webhooks: list[dict[str, Any]] | None = None) -> tuple[str, list[str]]:
    from callbridge.storage.loader import load_into_fresh_database

    url = f"sqlite:///{directory / 'bench.db'}"
    doc = {
        "operation": {"id": OPERATION, "sip_domain": DOMAIN, "acw_seconds": 0, "default_queue": "support",
                      "ring_timeout": 20, "transfer_timeout": 20, "token_concurrency_limit": TOKEN_LIMIT},
        "queues": [{"name": "support", "max_wait_seconds": 600}],
        "agents": [{"extension": extension(i), "name": f"Agent {i}", "password": password(i), "queues": ["support"]}
                   for i in range(1, agents + 1)],
        "aux_states": [{"id": AUX, "name": "Break"}],
        "trunks": [{"name": "carrier", "host": "127.0.0.3", "port": 5060, "dial_min_length": 7,
                    "inbound_networks": [f"{CUSTOMER_HOST}/32"]}],
        "dids": [{"number": DID, "queue": "support", "trunk": "carrier"}],
        "tokens": [{"label": f"bench-{t}"} for t in range(TOKENS)],
        "webhooks": webhooks or [],
    }
    return url, [plain for _, plain in load_into_fresh_database(url, doc).tokens]


def free_port(host: str = HOST) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def sipp(workdir: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    out = open(workdir / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(["sipp", *args, "-nostdin", "-trace_stat", "-stf", str(workdir / f"{name}.csv"),
                             "-trace_err", "-error_file", str(workdir / f"{name}.err")],
                            cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def sipp_counts(stat_file: Path) -> dict[str, int]:
    lines = [line for line in stat_file.read_text().splitlines() if line.strip()] if stat_file.exists() else []
    if len(lines) < 2:
        return {}
    header, last = lines[0].split(";"), lines[-1].split(";")
    row = dict(zip(header, last, strict=False))
    return {k: int(row.get(k, "0") or 0) for k in ("SuccessfulCall(C)", "FailedCall(C)", "TotalCallCreated")}


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


@dataclass
class Latencies:
    ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def pct(self, q: float) -> float:
        if not self.ms:
            return float("nan")
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]



class Api:
    def __init__(self, url: str, tokens: list[str]) -> None:
        self.url = url
        self.client = self._client()
        self.tokens = tokens
        self.slots = [asyncio.Semaphore(TOKEN_LIMIT) for _ in tokens]
        self.turn = 0

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=65,
                                 limits=httpx.Limits(max_connections=TOKENS * TOKEN_LIMIT))

    async def fresh(self) -> None:
        """New connections (uvicorn closes keep-alive connections idle for 5 s; a phase must not meet them)."""
        await self.client.aclose()
        self.client = self._client()

    async def box(self, api: str, into: Latencies | None = None, **params: str) -> dict[str, Any]:
        if into is not None:
            return await self._box(api, into, **params)
        for attempt in range(3):  # set-up requests (not measured): a connection closed while idle is retried
            try:
                return await self._box(api, None, **params)
            except httpx.TransportError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _box(self, api: str, into: Latencies | None = None, **params: str) -> dict[str, Any]:
        index = self.turn % len(self.tokens)
        self.turn += 1
        async with self.slots[index]:
            started = time.perf_counter()
            response = await self.client.post(ENDPOINT, params={"api": api, **params},
                                              headers={"wolkvox-token": self.tokens[index],
                                                       "wolkvox_server": OPERATION})
            elapsed = (time.perf_counter() - started) * 1000
        body: dict[str, Any] = response.json()
        if into is not None:
            if response.status_code == 200:
                into.ms.append(elapsed)
            else:
                into.errors.append(f"{api} {params}: {body}")
        elif response.status_code != 200:
            raise RuntimeError(f"{api} {params}: {body}")
        return body

    async def agents(self) -> list[dict[str, Any]]:
        response = await self.client.get("/v2/agents", headers={"authorization": f"Bearer {self.tokens[0]}"})
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def close(self) -> None:
        await self.client.aclose()


async def wait_agents(api: Api, predicate: Any, what: str, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        agents = await api.agents()
        if predicate(agents):
            return agents
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def by_ext(agents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["agent_id"]: a for a in agents}


async def measure(args: argparse.Namespace, workdir: Path, probe: Probe | None = None) -> dict[str, Any]:
    n, m = args.calls, args.status_agents
    total = 2 * n + m
    url, tokens = make_database(workdir, total, probe.webhooks if probe is not None else None)
    http_port = free_port()
    summary = workdir / "summary.json"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(http_port), url, str(summary)],
                              stdout=subprocess.PIPE, stderr=open(workdir / "server.err", "wb"),  # noqa: SIM115
                              start_new_session=True)
    procs: list[subprocess.Popen[bytes]] = []
    api = Api(f"http://{HOST}:{http_port}", tokens)
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), 60)
        if not line.startswith(b"READY"):
            raise RuntimeError(f"the server did not start: {line!r} {(workdir / 'server.err').read_text()}")
        _, sip_host, sip_port = line.decode().split()
        remote = f"{sip_host}:{sip_port}"
        started = time.monotonic()
        agents = subprocess.Popen([sys.executable, __file__, "--agents", sip_host, sip_port, str(total)],
                                  stdout=subprocess.PIPE, stderr=open(workdir / "agents.err", "wb"),  # noqa: SIM115
                                  start_new_session=True)
        procs.append(agents)
        assert agents.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(agents.stdout.readline), 60 + total / 20)
        if not line.startswith(b"READY"):
            raise RuntimeError(f"the agents did not start: {(workdir / 'agents.err').read_text()[-2000:]}")
        await wait_agents(api, lambda a: sum(x["registered"] for x in a) == total, "agents registered", 60)
        print(f"{total} agents registered with digest in {time.monotonic() - started:.1f} s", flush=True)
        await asyncio.gather(*(api.box("change_status", agent_id=extension(i), status="ready")
                               for i in range(1, n + 1)))
        await asyncio.gather(*(api.box("change_status", agent_id=extension(i), status=AUX)
                               for i in range(2 * n + 1, total + 1)))
        customers_port = free_port(CUSTOMER_HOST)
        procs.append(sipp(workdir, "customers", remote, "-sf", str(SCENARIOS / "transfer_customer.xml"),
                          "-s", DID, "-i", CUSTOMER_HOST, "-p", str(customers_port), "-m", str(n),
                          "-r", str(args.setup_rate), "-l", str(n + 10), "-d", str(args.hold_ms),
                          "-buff_size", "4194304", "-timeout", f"{int(args.keep) + 30}s"))
        started = time.monotonic()
        await wait_agents(api, lambda a: sum(by_ext(a)[extension(i)]["state"] == "on_call"
                                             for i in range(1, n + 1)) == n, "calls up", 60 + n / args.setup_rate)
        print(f"{n} calls up in {time.monotonic() - started:.1f} s", flush=True)
        await api.fresh()
        await asyncio.gather(*(api.box("change_status", agent_id=extension(i), status="ready")
                               for i in range(n + 1, 2 * n + 1)))
        if probe is not None:
            await probe.before(url)  # before the fresh connections: it may wait longer than uvicorn's keep-alive
        await api.fresh()

        transfers, statuses = Latencies(), Latencies()
        interval = 1.0 / args.rate
        print(f"transfers: {n} requested at {args.rate:g}/s from now", flush=True)
        begin, begin_wall = time.perf_counter(), time.time()
        cpu_samples: list[tuple[float, float]] = []  # (seconds since begin, the server's CPU seconds since then)

        async def cpu_sampler(pid: int, cpu_begin: float) -> None:
            while True:
                await asyncio.sleep(0.1)
                cpu_samples.append((time.perf_counter() - begin, process_cpu(pid) - cpu_begin))

        sampler = asyncio.create_task(cpu_sampler(server.pid, process_cpu(server.pid)))
        tasks: list[asyncio.Task[Any]] = []
        status_tasks: list[asyncio.Task[Any]] = []

        async def status_stream() -> None:
            """change_status at --status-rate, round robin over the status agents (aux -> ready -> aux ...)."""
            k = 0
            while True:
                j, flip = 2 * n + 1 + k % m, (k // m) % 2
                status_tasks.append(asyncio.create_task(api.box(
                    "change_status", statuses, agent_id=extension(j), status=AUX if flip else "ready")))
                k += 1
                await asyncio.sleep(1.0 / args.status_rate)

        status_task = asyncio.create_task(status_stream())
        for i in range(1, n + 1):
            delay = begin + (i - 1) * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(api.box("transfer", transfers, agent_id=extension(i),
                                                     customer_phone=extension(n + i))))
        sent_in = time.perf_counter() - begin
        await asyncio.gather(*tasks)
        # a target is done when seen on the call (customers stay --hold-ms after their transfer, >= the poll)
        targets = {extension(n + i) for i in range(1, n + 1)}
        answered: set[str] = set()
        deadline = time.monotonic() + 60
        while len(answered) + len(transfers.errors) < n and time.monotonic() < deadline:
            answered |= {a["agent_id"] for a in await api.agents()
                         if a["agent_id"] in targets and a["state"] == "on_call"}
            await asyncio.sleep(0.25)
        done_in = time.perf_counter() - begin
        sampler.cancel()
        if probe is not None:
            await probe.after(url)
        status_task.cancel()
        await asyncio.gather(*status_tasks, return_exceptions=True)
        # the customers hang up hold_ms after their transfer: wait for SIPp to finish them all
        deadline = time.monotonic() + args.hold_ms / 1000 + 40
        customers = procs[-1]
        while customers.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if customers.poll() is None:
            print("the customers' SIPp has not finished: counting what it reported so far", flush=True)
        counts = sipp_counts(workdir / "customers.csv")
        if probe is not None:
            await probe.finish(url)
    finally:
        await api.close()
        for proc in procs:
            stop(proc)
        stop(server)
    served = json.loads(summary.read_text()) if summary.exists() else {}
    if served.get("last_completed"):  # the server's clock: the last TransferCompleted it published
        done_in = served["last_completed"] - begin_wall
    # the server's CPU from the first request to the last transfer completed (the first sample at or after it)
    server_cpu = next((cpu for at, cpu in cpu_samples if at >= done_in), cpu_samples[-1][1] if cpu_samples else 0.0)
    return {"calls": n, "rate": args.rate, "sent_in": sent_in, "done_in": done_in, "transfers": transfers,
            "statuses": statuses, "customers": counts, "server": served, "server_cpu": server_cpu}


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) of process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(result: dict[str, Any]) -> tuple[str, bool]:
    n = result["calls"]
    transfers: Latencies = result["transfers"]
    statuses: Latencies = result["statuses"]
    served = result["server"]
    completed = served.get("completed", 0)
    customers = result["customers"]
    lost = n - customers.get("SuccessfulCall(C)", 0)
    per_second = completed / result["done_in"] if result["done_in"] else 0.0
    ratio = transfers.pct(0.99) / statuses.pct(0.99) if statuses.ms else float("inf")
    print(f"transfers requested: {n} at {result['rate']:g}/s (sent in {result['sent_in']:.2f} s); "
          f"API errors {len(transfers.errors)}")
    print(f"completed transfers: {completed} of {n}, failed {served.get('failed', 0)} {served.get('failures', {})}")
    print(f"completed transfers/s: {per_second:,.1f} (target >= {TARGET_PER_SECOND:g})")
    cpu_us = result["server_cpu"] / n * 1e6 if n else 0.0
    print(f"server CPU per transfer: {cpu_us:,.0f} us (every thread, from the first request to the last transfer "
          f"completed, within 0.1 s; the change_status stream and the driver's agent polls included)")
    print(f"transfer API latency: p50 {transfers.pct(0.5):.1f} ms, p99 {transfers.pct(0.99):.1f} ms")
    print(f"change_status p99 (same run, {len(statuses.ms)} requests): {statuses.pct(0.99):.1f} ms")
    print(f"transfer p99 / change_status p99: {ratio:.2f} (target <= 5)")
    print(f"customers lost: {lost} (SIPp successful {customers.get('SuccessfulCall(C)', 0)}, failed "
          f"{customers.get('FailedCall(C)', 0)}; calls ended by {served.get('ended_by', {})})")
    for error in (transfers.errors + statuses.errors)[:5]:
        print(f"  error: {error}")
    ok = lost == 0 and completed == n and not transfers.errors and not statuses.errors
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    row = (f"| transfers (bench/transfers.py): {n:,} calls up, blind transfers to agents through the agentbox "
           f"endpoint requested at {result['rate']:g}/s (load average {load}); transfer API p50 "
           f"{transfers.pct(0.5):.1f} ms, p99 {transfers.pct(0.99):.1f} ms; {completed} completed; "
           f"{lost} customers lost; server CPU {cpu_us:,.0f} us per transfer "
           f"| {per_second:,.1f} transfers/s | change_status p99 {statuses.pct(0.99):.1f} ms (same run) "
           f"| p99 {ratio:.2f}x | >= {TARGET_PER_SECOND:g} transfers/s, p99 <= 5x, 0 lost")
    return row, ok


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--agents":
        agents_process(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args = with_quick(add_arguments(parser).parse_args())
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(measure(args, args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-transfers-") as tmp:
            result = asyncio.run(measure(args, Path(tmp)))
    row, ok = report(result)
    if args.record:
        command = f"`.venv/bin/python bench/transfers.py --calls {args.calls} --rate {args.rate:g}`"
        with open(ROOT / "bench" / "RESULTS.md", "a") as out:
            out.write(f"{row} | {command} | {time.strftime('%Y-%m-%d')} |\n")
    return 0 if ok else 1


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The run's settings (bench/event_log.py drives the same run with the same ones)."""
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=300.0, help="transfer requests per second")
    parser.add_argument("--setup-rate", type=float, default=200.0, help="customer calls per second at set-up")
    parser.add_argument("--status-agents", type=int, default=20)
    parser.add_argument("--status-rate", type=float, default=50.0)
    parser.add_argument("--hold-ms", type=int, default=3000, help="a customer stays this long after its transfer")
    parser.add_argument("--keep", type=float, default=600.0, help="seconds the agents' SIPp stays up at most")
    parser.add_argument("--quick", action="store_true", help="tiny mode: 20 calls at 20/s")
    parser.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    parser.add_argument("--workdir", type=Path, help="keep SIPp's and the server's files there")
    return parser


def with_quick(args: argparse.Namespace) -> argparse.Namespace:
    if args.quick:
        args.calls, args.rate, args.setup_rate, args.status_agents, args.hold_ms = 20, 20.0, 20.0, 4, 1500
    return args


if __name__ == "__main__":
    sys.exit(main())
