"""Requests/s of the agentbox endpoint's `change_status` on callbridge, next to a bare Starlette route (the ceiling),
both on uvicorn in the same run.

    .venv/bin/python bench/agentbox_http.py                          # 3 interleaved repeats of 10 s, prints a row
    .venv/bin/python bench/agentbox_http.py --record                 # ... and appends it to bench/RESULTS.md
    .venv/bin/python bench/agentbox_http.py --duration 1 --quick     # a smoke run (tests/bench)

What is measured, per request: `POST /api/v2/agentbox.php?api=change_status&agent_id=…&status=…` with the
`wolkvox-token` and `wolkvox_server` headers and no body, the way Wolkvox documents its calls. The two targets:

- callbridge as `callbridge serve` runs it (`callbridge.cli.serve.run`: `bootstrap` wiring SQLite storage with its
  writer thread, the call-control service and the application, on uvicorn), in a process of its own. Every
  protection is on: token authentication, the per-token concurrency limit at its default (2), the dispatch, the
  parameter checks, the domain's rules (the agent must have a live SIP registration: each agent's phone, a
  `callbridge.phone` in this driver's process, registers with the node's registrar with digest before the run),
  and the write-through of every agent state change to the writer thread (`agent_state_history`);
- a bare Starlette route on the same path answering the same envelope bytes (`contract.render`), in a process
  of its own, on uvicorn with the options `callbridge.cli.serve.run` uses (loopback, one worker, `access_log=False`,
  `lifespan="on"`, the log level): the ceiling of the HTTP stack on this machine.

Load: `wrk` (one thread, `--connections` keep-alive connections, closed loop) with `bench/lua/...lua`. There is one
agent and one token per slot and four slots per connection, sent round robin: wrk's Lua cannot pin a token to a
connection, so a slot's next request is sent only after three other requests per connection, which keeps every
token at most at 1 request in flight (its limit is 2) and every agent at one state change at a time. Each slot
alternates `ready` and an auxiliary state, starting from the opposite of the agent's state read from `GET
/v2/agents` just before the run, so every request is a real state change written through. The run is checked:
no answer but 200, and at least as many `agent_state_history` rows written by the API as 200 answers (a slot with
two requests in flight would turn one of them into a no-op and show up here).

Runs are interleaved (callbridge, bare, callbridge, bare, ...) after an unmeasured warm-up of each, and paired: a
callbridge run with the bare run right after it. The figures are those of the pair with the median ratio (its two
rates and p99s), so that a burst of other load on the machine during one run does not pick the figure. The load
average is printed with the result: on a shared machine, compare runs made at similar load. The server's and wrk's
CPU use are printed per run: a server near 100% of one core with wrk well below it means the server, not the load
generator, is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the real-peer harness: tests/peers

from peers.ports import free_port  # noqa: E402

HOST = "127.0.0.1"
OPERATION = "0042"
DOMAIN = "0042.callbridge.bench"
AUX_ID = "2"  # the auxiliary state the agents alternate with `ready`
LUA = ROOT / "bench" / "lua" / "agentbox_change_status.lua"
SLOTS_PER_CONNECTION = 4
TARGET_RATIO = 0.55  # issue #12
HTTP_LOG_LEVEL = "WARNING"
START_TIMEOUT = 60.0  # seconds a server may take to print READY


# -- the servers (child processes) -------------------------------------------------------------------------------
def serve_callbridge(http_port: int, database_url: str) -> None:
    """`callbridge serve` on loopback: SIP on a free port (printed), HTTP on `http_port`, until SIGTERM."""
    from callbridge.bootstrap import Node
    from callbridge.cli.serve import run
    from callbridge.config import Settings

    settings = Settings(sip_host=HOST, sip_port=0, http_host=HOST, http_port=http_port, database_url=database_url,
                        node_id="bench-1", drain_seconds=0.0, log_level=HTTP_LOG_LEVEL)

    def ready(node: Node) -> None:
        host, port = node.sip_address
        print(f"READY {host} {port}", flush=True)

    asyncio.run(run(settings, ready=ready))


def bare_app(statuses: list[str]) -> Any:
    """One route: the path of the agentbox endpoint answering change_status's envelope, nothing checked."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from callbridge.http import contract

    def body(status: str) -> bytes:
        return contract.render(contract.envelope(200, contract.VERBS["change_status"].message(status=status)))

    bodies = {status: body(status) for status in statuses}
    headers = {"content-type": contract.CONTENT_TYPE}

    async def change_status(request: Request) -> Response:
        status = request.query_params.get("status", "")
        return Response(bodies.get(status) or body(status), status_code=200, media_type=None, headers=headers)

    return Starlette(routes=[Route(contract.ENDPOINT_PATH, change_status, methods=["POST"])])


def serve_bare(http_port: int) -> None:
    import uvicorn

    # The options callbridge.cli.serve.run gives uvicorn.
    config = uvicorn.Config(bare_app(["ready", AUX_ID]), host=HOST, port=http_port, log_level=HTTP_LOG_LEVEL.lower(),
                            access_log=False, lifespan="on")
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped at start-up")
            await asyncio.sleep(0.01)
        print("READY", flush=True)
        await task

    asyncio.run(main())


# -- the driver --------------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """CPU seconds of the process, every thread."""
    return cpu_seconds_of(f"/proc/{pid}/stat")


def loop_cpu_seconds(pid: int) -> float:
    """CPU seconds of the process's main thread alone (the event loop: uvicorn, the application, the domain);
    the rest of `cpu_seconds` is the storage writer's thread and helpers. The main thread's id is the pid."""
    return cpu_seconds_of(f"/proc/{pid}/task/{pid}/stat")


def cpu_seconds_of(stat: str) -> float:
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A server child process started with this script's `--serve-...` flags; `ready` holds its READY line."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        self.port = free_port(HOST, udp=False)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self._proc = subprocess.Popen([sys.executable, __file__, *args, "--port", str(self.port)],
                                      stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
        assert self._proc.stdout is not None
        readable, _, _ = select.select([self._proc.stdout], [], [], START_TIMEOUT)
        line = self._proc.stdout.readline().split() if readable else ["(no READY line in time)"]
        if not line or line[0] != "READY":
            self.stop()
            raise RuntimeError(f"{name} did not start: {line!r}")
        self.ready = line[1:]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class Run:
    target: str
    result: dict[str, Any]  # the Lua script's WRK_RESULT
    server_cpu: float  # share of one core the server used
    wrk_cpu: float  # share of one core wrk used
    server_cpu_s: float = 0.0  # CPU seconds the server used over the run
    loop_cpu_s: float = 0.0  # ... of which its main thread (the event loop)

    @property
    def seconds(self) -> float:
        return float(self.result["duration_us"]) / 1e6

    @property
    def rate(self) -> float:
        return float(self.result["requests"]) / self.seconds

    @property
    def p99_ms(self) -> float:
        return float(self.result["p99_us"]) / 1000

    @property
    def server_us(self) -> float:
        """The server's CPU (every thread: the loop and the storage writer) per request, in microseconds: on a
        shared machine a steadier figure than the rate, which follows the CPU the server is given."""
        requests = int(self.result["requests"])
        return self.server_cpu_s / requests * 1e6 if requests else 0.0

    @property
    def loop_us(self) -> float:
        """The event loop's thread's share of `server_us`: the part of a request that waits for nothing else."""
        requests = int(self.result["requests"])
        return self.loop_cpu_s / requests * 1e6 if requests else 0.0

    @property
    def failures(self) -> int:
        r = self.result
        return int(r["non_2xx"] + r["read_errors"] + r["write_errors"] + r["connect_errors"] + r["timeouts"])

    def line(self) -> str:
        r = self.result
        return (f"  {self.target:10} {self.rate:8,.0f} req/s  p50 {r['p50_us'] / 1000:6.2f} ms  "
                f"p99 {self.p99_ms:6.2f} ms  {r['requests']:7,} requests  {self.failures} failed  "
                f"server {self.server_cpu * 100:4.0f}% cpu ({self.server_us:4.0f} us/request, "
                f"loop {self.loop_us:4.0f})  "
                f"wrk {self.wrk_cpu * 100:4.0f}% cpu")


def run_wrk(target: str, server: Server, slots_file: Path, duration: float, connections: int) -> Run:
    """One wrk run (blocking: call it from a thread so the phones' loop keeps running)."""
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--timeout", "10s",
               "-s", str(LUA), server.url, "--", str(slots_file), "1"]
    cpu_before, loop_before, started = cpu_seconds(server.pid), loop_cpu_seconds(server.pid), time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    server_cpu = cpu_seconds(server.pid) - cpu_before
    loop_cpu = loop_cpu_seconds(server.pid) - loop_before
    found = [line for line in output.splitlines() if line.startswith("WRK_RESULT ")]
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{output}")
    result = json.loads(found[-1].removeprefix("WRK_RESULT "))
    return Run(target, result, server_cpu / wall, (usage.ru_utime + usage.ru_stime) / wall, server_cpu, loop_cpu)


def make_database(directory: Path, agents: int) -> tuple[str, list[str]]:
    """A migrated SQLite database holding one operation, its agents and one token per agent; (url, tokens)."""
    from callbridge.storage.loader import load_into_fresh_database

    url = f"sqlite:///{directory / 'callbridge.db'}"
    doc = {
        "operation": {"id": OPERATION, "sip_domain": DOMAIN, "default_queue": "support"},
        "queues": [{"name": "support"}],
        "agents": [{"extension": extension(i), "password": password(i), "queues": ["support"]}
                   for i in range(agents)],
        "aux_states": [{"id": AUX_ID, "name": "Break"}],
        "tokens": [{"label": f"bench-{i}"} for i in range(agents)],  # the operation's default concurrency limit
    }
    return url, [plain for _, plain in load_into_fresh_database(url, doc).tokens]


def extension(i: int) -> str:
    return str(1001 + i)


def password(i: int) -> str:
    return f"secret-{extension(i)}"


def api_rows(database: Path) -> int:
    """`agent_state_history` rows the API wrote (reason `api`)."""
    with sqlite3.connect(database) as conn:
        (count,) = conn.execute("SELECT count(*) FROM agent_state_history WHERE reason = 'api'").fetchone()
    return int(count)


class Agents:
    """The agents' phones (registered once) and the tokens; reads and sets their states over HTTP."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.phones: list[Any] = []

    async def register(self, sip: tuple[str, int]) -> None:
        from callbridge.phone import Phone

        for i in range(len(self.tokens)):
            phone = await Phone.start(host=HOST, user=extension(i), domain=DOMAIN, password=password(i),
                                      name=f"agent-{extension(i)}")
            self.phones.append(phone)
            await phone.register(sip, expires=3600)

    async def states(self, url: str) -> dict[str, dict[str, Any]]:
        import httpx

        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.get("/v2/agents", headers={"authorization": f"Bearer {self.tokens[0]}"})
            response.raise_for_status()
            return {item["agent_id"]: item for item in response.json()["items"]}

    async def make_ready(self, url: str) -> None:
        import httpx

        async with httpx.AsyncClient(base_url=url) as client:
            for i, token in enumerate(self.tokens):
                response = await client.post(
                    "/api/v2/agentbox.php", params={"api": "change_status", "agent_id": extension(i),
                                                    "status": "ready"},
                    headers={"wolkvox-token": token, "wolkvox_server": OPERATION})
                if response.status_code != 200:
                    raise RuntimeError(f"agent {extension(i)} could not be made ready: {response.text}")

    async def write_slots(self, url: str, path: Path) -> None:
        """One slot a line, each starting with the status that changes its agent's current state."""
        states = await self.states(url)
        lines = []
        for i, token in enumerate(self.tokens):
            agent = states[extension(i)]
            if not agent["registered"]:
                raise RuntimeError(f"agent {extension(i)} is not registered")
            first, second = (AUX_ID, "ready") if agent["state"] == "ready" else ("ready", AUX_ID)
            lines.append(f"{OPERATION} {token} {extension(i)} {first} {second}\n")
        path.write_text("".join(lines))

    async def close(self) -> None:
        for phone in self.phones:
            await phone.close()


async def measure(args: argparse.Namespace, workdir: Path) -> tuple[list[Run], list[Run], int, int]:
    """The interleaved runs; (callbridge runs, bare runs, 200 answers of callbridge, rows the API wrote)."""
    connections = args.connections
    agents_count = connections * SLOTS_PER_CONNECTION
    database_url, tokens = await asyncio.to_thread(make_database, workdir, agents_count)
    agents = Agents(tokens)
    slots = workdir / "slots.txt"
    callbridge = await asyncio.to_thread(Server, "callbridge", "--serve-callbridge", database_url)
    bare: Server | None = None
    answered = 0
    try:
        bare = await asyncio.to_thread(Server, "bare", "--serve-bare")
        sip_host, sip_port = callbridge.ready
        await agents.register((sip_host, int(sip_port)))
        await agents.make_ready(callbridge.url)
        answered += agents_count
        print(f"{agents_count} agents registered and ready, one token each (concurrency limit 2); "
              f"wrk: 1 thread, {connections} connections, {args.duration:g} s per run")

        async def one(target: str, server: Server, duration: float) -> Run:
            nonlocal answered
            if target == "callbridge":
                await agents.write_slots(server.url, slots)
            run = await asyncio.to_thread(run_wrk, target, server, slots, duration, connections)
            if target == "callbridge":
                answered += int(run.result["requests"]) - int(run.result["non_2xx"])
                await asyncio.sleep(1.0)  # requests still in flight when wrk stopped are answered
            return run

        if args.warmup > 0:
            for target, server in (("callbridge", callbridge), ("bare", bare)):
                print("warm-up:", (await one(target, server, args.warmup)).line().strip())
        ours: list[Run] = []
        ceiling: list[Run] = []
        for _ in range(args.repeats):
            for target, server, runs in (("callbridge", callbridge, ours), ("bare", bare, ceiling)):
                run = await one(target, server, args.duration)
                runs.append(run)
                print(run.line(), flush=True)
    finally:
        if bare is not None:
            await asyncio.to_thread(bare.stop)
        await asyncio.to_thread(callbridge.stop)  # writes flushed before the process ends
        await agents.close()
    written = await asyncio.to_thread(api_rows, workdir / "callbridge.db")
    return ours, ceiling, answered, written


def median_us(runs: list[Run], loop: bool = False) -> float:
    """The (lower) median of the runs' server CPU per request, or of their loop thread's alone."""
    values = sorted(run.loop_us if loop else run.server_us for run in runs)
    return values[(len(values) - 1) // 2] if values else 0.0


def record(ours: Run, ceiling: Run, ratio: float, command: str) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    row = (f"| agentbox change_status (bench/agentbox_http.py; median of interleaved pairs, load average {load}) "
           f"| {ours.rate:,.0f} req/s (p99 {ours.p99_ms:.1f} ms; server CPU {ours.server_us:,.0f} us/request) "
           f"| {ceiling.rate:,.0f} req/s (bare Starlette, p99 {ceiling.p99_ms:.1f} ms; "
           f"{ceiling.server_us:,.0f} us/request) "
           f"| {ratio:.2f} "
           f"| ≥ {TARGET_RATIO} | {command} | {datetime.date.today().isoformat()} |\n")
    with open(ROOT / "bench" / "RESULTS.md", "a") as out:
        out.write(row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (whole seconds)")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs of each target, interleaved")
    parser.add_argument("--connections", type=int, default=16, help="wrk's keep-alive connections")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load on each first")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 connections, 1 repeat, no warm-up")
    parser.add_argument("--record", action="store_true", help="append the row to bench/RESULTS.md")
    parser.add_argument("--serve-callbridge", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_callbridge:
        serve_callbridge(args.port, args.serve_callbridge)
        return 0
    if args.serve_bare:
        serve_bare(args.port)
        return 0
    if args.quick:
        args.connections, args.repeats, args.warmup = 4, 1, 0.0
    if shutil.which("wrk") is None:
        print("wrk is not installed (scripts/setup --test installs it)", file=sys.stderr)
        return 2
    print(f"agentbox_http on {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="agentbox-bench-") as tmp:
        ours_runs, ceiling_runs, answered, written = asyncio.run(measure(args, Path(tmp)))
    pairs = sorted(zip(ours_runs, ceiling_runs, strict=True), key=lambda pair: pair[0].rate / pair[1].rate)
    ours, ceiling = pairs[(len(pairs) - 1) // 2]  # the median pair (the lower of the two middle ones)
    ratio = ours.rate / ceiling.rate if ceiling.rate else 0.0
    print("ratios of the pairs: " + ", ".join(f"{a.rate / b.rate:.2f}" for a, b in pairs)
          + f"; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    failed = sum(r.failures for r in ours_runs + ceiling_runs)
    # At most one request per connection and run can be written but not counted (in flight when wrk stopped); and
    # when such a request lands after the next run read the agents' states, that run's first request to the agent
    # repeats the state it already has: answered 200, nothing to write (a no-op change writes no history row).
    runs_of_ours = len(ours_runs) + (1 if args.warmup > 0 else 0)
    slack = args.connections * runs_of_ours
    writes_ok = answered - slack <= written <= answered + slack
    print(f"state changes written through: {written:,} rows for {answered:,} answers 200 "
          f"({'every answer a real state change' if writes_ok else 'MISMATCH'})")
    print(f"callbridge: {ours.rate:,.0f} req/s, p99 {ours.p99_ms:.2f} ms")
    print(f"bare Starlette: {ceiling.rate:,.0f} req/s, p99 {ceiling.p99_ms:.2f} ms")
    print(f"server CPU per request (median of the runs): callbridge {median_us(ours_runs):,.0f} us, "
          f"bare {median_us(ceiling_runs):,.0f} us; callbridge's event loop thread alone "
          f"{median_us(ours_runs, loop=True):,.0f} us")
    print(f"ratio: {ratio:.2f} (target >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    if failed or not writes_ok:
        print(f"INVALID RUN: {failed} failed requests" + ("" if writes_ok else ", writes do not match answers"))
        return 1
    if args.record:
        record(ours, ceiling, ratio, ".venv/bin/python bench/agentbox_http.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
