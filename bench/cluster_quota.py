"""What counting a token's daily quota in PostgreSQL costs a cluster node (docs/cluster.md, "Any node answers the
API"): requests/s and latency of one `callbridge serve --cluster` node on a real PostgreSQL for a token with a daily
quota (each request admitted costs one conditional upsert of `token_usage`, storage/token_usage.py) next to the
same requests of a token without one (the ceiling), in the same run.

    .venv/bin/python bench/cluster_quota.py                  # 6 alternating steps of 400 requests per token
    .venv/bin/python bench/cluster_quota.py --record         # ... and appends the row to bench/RESULTS.md
    .venv/bin/python bench/cluster_quota.py --requests 50 --steps 2   # a smoke run

The request is the native API's `GET /v2/agents/1001` (answered from the node's memory: what is measured is the
admission, not the verb), sent by one keep-alive client, one at a time (a closed loop), alternating the tokens step
by step so that other load on the machine falls on both. Every answer must be 200. The figure is the quota token's
rate, the ceiling the plain token's: the medians of their steps. The node, its PostgreSQL and the client share this
machine's cores: the load average is printed with the row.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "src", ROOT / "tests", ROOT / "tests" / "cluster"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import httpx  # noqa: E402
from cluster_nodes import Serve, loaded_database  # noqa: E402
from sqlalchemy import text  # noqa: E402

from callbridge.storage.database import make_engine  # noqa: E402
from pg import postgres_server  # noqa: E402

NODE, OP = "127.0.0.11", "0042"
QUOTA = 10_000_000  # never reached: every request is admitted and counted


def operation_doc() -> dict[str, object]:
    return {
        "operation": {"id": OP, "sip_domain": "a.test", "default_queue": "support"},
        "queues": [{"name": "support"}],
        "agents": [{"extension": "1001", "password": "secret-1001", "queues": ["support"]}],
        "tokens": [{"label": "plain", "concurrency_limit": 4},
                   {"label": "quota", "concurrency_limit": 4, "daily_quota": QUOTA}],
    }


async def step(client: httpx.AsyncClient, token: str, requests: int) -> tuple[float, list[float]]:
    """(requests/s, latencies in ms) of `requests` sequential requests."""
    latencies = []
    started = time.perf_counter()
    for _ in range(requests):
        sent = time.perf_counter()
        answer = await client.get("/v2/agents/1001", headers={"authorization": f"Bearer {token}"})
        latencies.append((time.perf_counter() - sent) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"unexpected answer {answer.status_code}: {answer.text}")
    return requests / (time.perf_counter() - started), latencies


async def measure(requests: int, steps: int) -> dict[str, object]:
    with postgres_server() as server, loaded_database(server, operation_doc()) as (url, [plain, quota]), \
            tempfile.TemporaryDirectory(prefix="callbridge-bench-quota-") as workdir:
        node = Serve("a", NODE, url, Path(workdir), lease_seconds=6.0, extra_args=("--log-level", "WARNING"))
        engine = make_engine(url)
        try:
            node.wait_ready()
            rates: dict[str, list[float]] = {"plain": [], "quota": []}
            lat: dict[str, list[float]] = {"plain": [], "quota": []}
            async with httpx.AsyncClient(base_url=node.http, timeout=10, trust_env=False) as client:
                for token in (plain, quota):  # warm-up, unmeasured
                    await step(client, token, max(20, requests // 10))
                for _ in range(steps):
                    for name, token in (("plain", plain), ("quota", quota)):
                        rate, latencies = await step(client, token, requests)
                        rates[name].append(rate)
                        lat[name].extend(latencies)
            with engine.connect() as conn:
                counted = conn.execute(text("SELECT used FROM token_usage")).scalars().all()
            expected = steps * requests + max(20, requests // 10)
            if counted != [expected]:
                raise SystemExit(f"token_usage holds {counted}, expected [{expected}]")
        finally:
            node.stop()
            engine.dispose()
    result: dict[str, object] = {}
    for name in ("plain", "quota"):
        ordered = sorted(lat[name])
        result[name] = (statistics.median(rates[name]), statistics.median(ordered),
                        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(measure(args.requests, args.steps))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    plain_rate, plain_p50, plain_p99 = result["plain"]  # type: ignore[misc]
    quota_rate, quota_p50, quota_p99 = result["quota"]  # type: ignore[misc]
    ratio = quota_rate / plain_rate
    row = (f"| cluster_quota (bench/cluster_quota.py): GET /v2/agents/1001 on one serve --cluster node on PostgreSQL, "
           f"one request at a time, {args.steps} alternating steps of {args.requests} per token; a token with a "
           f"daily quota (one upsert of token_usage per request) against one without; p50 {quota_p50:.2f} ms vs "
           f"{plain_p50:.2f} ms, p99 {quota_p99:.2f} ms vs {plain_p99:.2f} ms (load average {load}) "
           f"| {quota_rate:,.0f} req/s | {plain_rate:,.0f} req/s (no quota) | {ratio:.2f} | none (a cost, not a "
           f"target) | `.venv/bin/python bench/cluster_quota.py` | {datetime.date.today().isoformat()} |")
    print(f"quota token: {quota_rate:,.0f} req/s, p50 {quota_p50:.2f} ms, p99 {quota_p99:.2f} ms")
    print(f"plain token: {plain_rate:,.0f} req/s, p50 {plain_p50:.2f} ms, p99 {plain_p99:.2f} ms")
    print(f"ratio {ratio:.2f} (load average {load})")
    print(row)
    if args.record:
        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as results:
            results.write(row + "\n")


if __name__ == "__main__":
    main()
