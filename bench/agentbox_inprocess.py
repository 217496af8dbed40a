"""CPU per agentbox `change_status` inside the application, next to the bare Starlette route of
bench/agentbox_http.py called the same way (the ceiling), in one process and one run: no sockets, no uvicorn.

    .venv/bin/python bench/agentbox_inprocess.py                   # 5 interleaved rounds of 20,000 requests each
    .venv/bin/python bench/agentbox_inprocess.py --quick           # a smoke run (tests/bench)

Why: bench/agentbox_http.py measures the whole HTTP path through uvicorn, whose rate on a machine shared with other
work follows the CPU the server is given (its pairs spread from 0.38 to 0.91 on one afternoon). Here the process's
own CPU time (`time.process_time`: the event loop and the storage writer thread) is divided by the requests, for
the application alone: what a change to callbridge's request path costs, with the HTTP server's share left out.

What runs: `bootstrap` as `callbridge serve` wires it (SQLite with its writer thread, the durable event log, the
call-control service, the application with its middleware), in this process, on loopback. The agents' phones
(`callbridge.phone`) register with the node's registrar with digest first, as in bench/agentbox_http.py. Each
request is an ASGI `http` call of the application with the query string, the `wolkvox-token` and `wolkvox_server`
headers and no body; each agent alternates `ready` and an auxiliary state, so every request is a real state change
written through. The ceiling is bench/agentbox_http.py's `bare_app` called with the same scopes. Rounds alternate
(callbridge, bare, callbridge, ...) after an unmeasured warm-up of each; the figures are the medians of the rounds.
Checked: every answer 200. No target is set: the ratio is the application's share of agentbox_http's ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import agentbox_http as ab

App = Callable[..., Awaitable[None]]  # an ASGI application


class Driver:
    """Sends change_status requests to an ASGI app, round robin over the agents; counts the non-200 answers."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.sent = 0
        self.refused = 0

    def scope(self, i: int, status: str) -> dict[str, Any]:
        from callbridge.http import contract

        query = f"api=change_status&agent_id={ab.extension(i)}&status={status}".encode()
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                "scheme": "http", "path": contract.ENDPOINT_PATH, "raw_path": contract.ENDPOINT_PATH.encode(),
                "query_string": query, "root_path": "", "client": (ab.HOST, 40000), "server": (ab.HOST, 80),
                "headers": [(b"host", ab.HOST.encode()), (b"wolkvox-token", self.tokens[i].encode()),
                            (b"wolkvox_server", ab.OPERATION.encode())],
                "state": {}}

    async def run(self, app: App, count: int) -> float:
        """CPU seconds of this process for `count` requests."""
        agents = len(self.tokens)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] != 200:
                self.refused += 1

        started = time.process_time()
        for _ in range(count):
            k = self.sent
            self.sent += 1
            # each agent alternates: the first pass sets aux (agents start ready), the next ready, ...
            status = ab.AUX_ID if (k // agents) % 2 == 0 else "ready"
            await app(self.scope(k % agents, status), receive, send)
            if k % 64 == 63:
                await asyncio.sleep(0)  # the loop's other work (the writer's commit reports) runs as in a server
        return time.process_time() - started


async def measure(args: argparse.Namespace, workdir: Path) -> tuple[list[float], list[float], int]:
    from callbridge.bootstrap import bootstrap
    from callbridge.config import Settings

    database_url, tokens = await asyncio.to_thread(ab.make_database, workdir, args.agents)
    settings = Settings(sip_host=ab.HOST, sip_port=0, http_host=ab.HOST, http_port=0, database_url=database_url,
                        node_id="bench-1", drain_seconds=0.0, log_level=ab.HTTP_LOG_LEVEL)
    node = await bootstrap(settings)
    agents = ab.Agents(tokens)
    try:
        await agents.register(node.sip_address)
        # the agents start ready (an API login), as in bench/agentbox_http.py
        driver, bare_driver = Driver(tokens), Driver(tokens)
        login = Driver(tokens)
        login.sent = len(tokens)  # odd pass: "ready"
        await login.run(node.app, len(tokens))
        if login.refused:
            raise RuntimeError(f"{login.refused} agents could not be made ready")
        bare = ab.bare_app(["ready", ab.AUX_ID])
        ours: list[float] = []
        ceiling: list[float] = []
        warmup = max(args.agents * 2, args.requests // 10)
        await driver.run(node.app, warmup)
        await bare_driver.run(bare, warmup)
        for _ in range(args.rounds):
            ours.append(await driver.run(node.app, args.requests) / args.requests)
            ceiling.append(await bare_driver.run(bare, args.requests) / args.requests)
        await asyncio.to_thread(node.storage.writer.flush, 30)
        written = await asyncio.to_thread(ab.api_rows, workdir / "callbridge.db")
        expected = driver.sent + len(tokens)  # every request a state change, the logins too
        if driver.refused or bare_driver.refused or written != expected:
            raise RuntimeError(f"invalid run: {driver.refused} callbridge and {bare_driver.refused} bare answers "
                               f"not 200; {written} state changes written for {expected} requests")
        return ours, ceiling, driver.sent
    finally:
        await agents.close()
        await node.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round and target")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds of each target, interleaved")
    parser.add_argument("--agents", type=int, default=16, help="agents (one token each), round robin")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 agents, 2 rounds of 400 requests")
    args = parser.parse_args()
    if args.quick:
        args.agents, args.rounds, args.requests = 4, 2, 400
    with tempfile.TemporaryDirectory(prefix="agentbox-inprocess-") as tmp:
        ours, ceiling, sent = asyncio.run(measure(args, Path(tmp)))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    mine, bare = statistics.median(ours) * 1e6, statistics.median(ceiling) * 1e6
    print("callbridge rounds (us CPU per request): " + ", ".join(f"{x * 1e6:.1f}" for x in ours))
    print("bare rounds (us CPU per request): " + ", ".join(f"{x * 1e6:.1f}" for x in ceiling))
    print(f"every answer 200, {sent:,} state changes written through; load average {load}")
    print(f"callbridge application: {mine:.1f} us CPU per change_status (median of {len(ours)} rounds)")
    print(f"bare Starlette route: {bare:.1f} us CPU per request (median of {len(ceiling)} rounds)")
    print(f"ratio: {bare / mine:.2f} (bare / callbridge; no target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
